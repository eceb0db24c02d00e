"""How many threads torch computes with: the cores this process may use, and how busy they are.

Torch's default, one intra-op thread per core, is right on an idle machine and many times
slower when another process keeps one of those cores busy: the threads of each operation meet
at a barrier, and the one whose core is taken makes the others wait (measured on 2 cores:
2.8 samples/s against 72-82 with one thread; README "Threads"). So lorafit decides:

1. `OMP_NUM_THREADS` / `MKL_NUM_THREADS` set by the user: torch already follows them; lorafit
   keeps its hands off (they win over everything, as users expect of them);
2. `--threads N` / `train.threads: N`: N threads, fixed;
3. `auto` (the default): the cores it may use (CPU affinity, capped by a cgroup CPU quota),
   less the cores other processes keep busy, measured from /proc/stat over the time lorafit
   has been running (its own CPU time subtracted) - at least one. While it computes it looks
   again every `RECHECK_S` seconds (`ThreadGovernor.tick`) and follows the machine: a job
   started beside a long training run takes its cores back, and gets them again when it ends.
   Every choice and change is one log line.

The thread count moves floating-point sums in the last bits, so a run is bit-for-bit
repeatable with a fixed `--threads`, not under `auto` on a machine whose load changes.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

log = logging.getLogger("lorafit")

#: the environment variables that fix torch's thread count (read by torch at start-up)
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: how often a long computation looks at the machine again, in seconds
RECHECK_S = 20.0
#: a measurement shorter than this is noise: `measure_busy` waits for the rest
MIN_WINDOW_S = 0.4
#: a measurement older than this says little about now: taken again
MAX_WINDOW_S = 60.0


# ---------------------------------------------------------------- the cores we may use


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in cores (`docker --cpus 1.5` -> 1.5), or None."""
    text = _read(f"{root}/cpu.max")  # cgroup v2: "max 100000" or "150000 100000"
    if text is not None:
        quota, _, period = text.strip().partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    v1_quota, v1_period = (
        _read(f"{root}/cpu/cpu.cfs_quota_us"),
        _read(f"{root}/cpu/cpu.cfs_period_us"),
    )  # v1
    if v1_quota is not None and v1_period is not None and int(v1_quota) > 0:
        return int(v1_quota) / int(v1_period)
    return None


def allowed_cpus() -> list[int] | None:
    """The CPUs this process may run on (its affinity), or None where the OS cannot say."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def usable_cores(cpus: list[int] | None = None, quota: float | None = None) -> int:
    """Cores this process may compute on: its affinity, capped by its cgroup quota (rounded up)."""
    cpus = allowed_cpus() if cpus is None else cpus
    n = len(cpus) if cpus else (os.cpu_count() or 1)
    quota = cgroup_cpu_limit() if quota is None else quota
    if quota:
        n = min(n, max(1, math.ceil(quota - 1e-9)))
    return max(1, n)


# ---------------------------------------------------------------- how busy they are


@dataclass(frozen=True)
class Snapshot:
    """Busy time of some CPUs and of this process, at one moment."""

    wall: float  # time.monotonic()
    busy_s: float  # seconds the CPUs spent on anything but idle/iowait, summed over them
    own_s: float  # this process's CPU time (all its threads)


def _cpu_busy_seconds(stat: str, cpus: list[int]) -> float | None:
    """Summed non-idle seconds of `cpus` from /proc/stat (user nice system idle iowait irq
    softirq steal ...; steal counts as busy: a hypervisor gave the core to someone else)."""
    wanted = {f"cpu{i}" for i in cpus}
    ticks, seen = 0, 0
    for line in stat.splitlines():
        name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        fields = [int(x) for x in rest.split()]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        ticks += user + nice + system + irq + softirq + steal
        seen += 1
    if seen != len(wanted):
        return None  # a CPU missing from /proc/stat (another namespace's view): cannot measure
    return ticks / os.sysconf("SC_CLK_TCK")


def snapshot(cpus: list[int] | None = None, stat_path: str = "/proc/stat") -> Snapshot | None:
    """Busy seconds of `cpus` (default: the ones this process may use) and of this process."""
    cpus = allowed_cpus() if cpus is None else cpus
    text = _read(stat_path)
    if not cpus or text is None:
        return None
    busy = _cpu_busy_seconds(text, cpus)
    if busy is None:
        return None
    return Snapshot(time.monotonic(), busy, time.process_time())


def others_busy(before: Snapshot, after: Snapshot) -> float | None:
    """Cores' worth of work other processes did on our CPUs between two snapshots."""
    wall = after.wall - before.wall
    if wall <= 0:
        return None
    others = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
    return max(0.0, others / wall)


def threads_for(cores: int, busy: float | None) -> int:
    """Threads to use on `cores` cores when others keep `busy` of them busy: the free cores,
    rounded to the nearest whole core (half a core of background noise keeps all of them), at
    least one."""
    if busy is None:
        return cores
    return max(1, min(cores, math.floor(cores - busy + 0.5)))


_START: Snapshot | None = None


def mark_start() -> None:
    """Start measuring the machine's load now: called as a command starts (the CLI, a
    `lorafit.<function>` call), so that by the time it needs a thread count it has been
    importing and reading for a second or more, a window long enough to measure without waiting."""
    global _START
    _START = snapshot()


def measure_busy(cpus: list[int] | None = None, since: Snapshot | None = None) -> float | None:
    """Cores other processes keep busy on `cpus` since `since` (default: `mark_start`), or None
    when that cannot be measured here or the window is still too short to mean anything (a
    `ThreadGovernor` then measures again as soon as it is long enough: nobody waits)."""
    since = since if since is not None else _START
    now = snapshot(cpus)
    if since is None or now is None or not MIN_WINDOW_S <= now.wall - since.wall <= MAX_WINDOW_S:
        return None
    return others_busy(since, now)


# ---------------------------------------------------------------- the choice


@dataclass
class ThreadChoice:
    threads: int
    reason: str  # one line for the log
    auto: bool  # follow the machine while computing (`ThreadGovernor`)
    cores: int
    measured: bool = True  # False: auto, but the load is not known yet (first look soon)


def choose_threads(requested: int | str | None = None) -> ThreadChoice:
    """The thread count for this process (see the module docstring for the order of rules)."""
    cores = usable_cores()
    for name in THREAD_ENV:
        if os.environ.get(name, "").strip():
            n = _positive(os.environ[name], name) or cores
            return ThreadChoice(n, f"{n} ({name}={os.environ[name].strip()})", False, cores)
    asked = _positive(requested, "--threads / train.threads")
    if asked:
        return ThreadChoice(asked, f"{asked} (asked for; {cores} usable cores)", False, cores)
    cpus, quota = allowed_cpus(), cgroup_cpu_limit()
    # under a quota below the CPUs we may run on, /proc/stat counts other containers' work too
    measurable = snapshot(cpus) is not None and not (quota and cpus and quota < len(cpus))
    busy = measure_busy(cpus) if measurable else None
    n = threads_for(cores, busy)
    if not measurable:
        return ThreadChoice(
            n, f"{n} ({cores} usable cores; their load is not measurable here)", False, cores
        )
    if busy is None:  # started a moment ago: the governor looks as soon as it can tell
        return ThreadChoice(
            n, f"{n} ({cores} usable cores; their load is measured as it runs)", True, cores, False
        )
    return ThreadChoice(
        n, f"{n} of {cores} usable cores (other processes keep {busy:.1f} busy)", True, cores
    )


def _positive(value, where: str) -> int | None:
    """A thread count from an option or variable: a positive integer, or None for auto/0/empty."""
    if value is None or str(value).strip().lower() in ("", "auto", "0"):
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        n = -1
    if n < 1:
        from lorafit.errors import UserError

        raise UserError(
            f"{where}: {value!r} is not a thread count; give a positive integer or auto"
        )
    return n


_GOVERNOR: ThreadGovernor | None = None


def use_threads(requested: int | str | None = None, what: str = "computing") -> ThreadGovernor:
    """Choose and set torch's thread count for this process, log it, and make the governor that
    keeps it suited to the machine the active one (`tick()` in the loops of long computations)."""
    import torch

    global _GOVERNOR
    choice = choose_threads(requested)
    if not any(os.environ.get(n, "").strip() for n in THREAD_ENV):
        torch.set_num_threads(choice.threads)
    log.info("threads for %s: %s", what, choice.reason)
    _GOVERNOR = ThreadGovernor(choice, since=_START)
    return _GOVERNOR


def tick() -> None:
    """Once per batch in a long computation: lets the active governor follow the machine."""
    if _GOVERNOR is not None:
        _GOVERNOR.tick()


class ThreadGovernor:
    """Looks at the machine every `RECHECK_S` seconds of a computation and, under `auto`, moves
    torch's thread count to the cores other processes leave free. `tick()` costs a clock read."""

    def __init__(
        self, choice: ThreadChoice, every: float = RECHECK_S, since: Snapshot | None = None
    ):
        self.choice = choice
        self.threads = choice.threads
        self.every = every
        self.changes: list[tuple[float, int]] = []  # (seconds since start, threads)
        self._start = time.monotonic()
        self._last = None
        if choice.auto:
            # not measured yet (the command started a moment ago): first look after MIN_WINDOW_S
            early = (
                since is not None
                and not choice.measured
                and time.monotonic() - since.wall <= MAX_WINDOW_S
            )
            self._last = since if early else snapshot()
            self._wait = MIN_WINDOW_S if early else every

    def tick(self) -> int:
        """The thread count to compute with now (changed, and logged, when the load changed)."""
        if self._last is None or time.monotonic() - self._last.wall < self._wait:
            return self.threads
        self._wait = self.every
        now = snapshot()
        if now is None:
            return self.threads
        busy, self._last = others_busy(self._last, now), now
        wanted = threads_for(self.choice.cores, busy)
        if wanted != self.threads:
            import torch

            torch.set_num_threads(wanted)
            log.info(
                "threads: %d -> %d (other processes now keep %.1f of %d cores busy)",
                self.threads,
                wanted,
                busy,
                self.choice.cores,
            )
            self.threads = wanted
            self.changes.append((round(now.wall - self._start, 1), wanted))
        return self.threads

    def record(self) -> dict:
        """For summary.json: how the run computed (a fixed count reproduces it bit for bit)."""
        return {
            "threads": self.choice.threads,
            "threads_reason": self.choice.reason,
            "threads_changes": self.changes,
        }


# ---------------------------------------------------------------- several workers on one machine

#: a local worker's share of the CPUs ("0,1"): it pins itself there before computing
CPUS_ENV = "LORAFIT_WORKER_CPUS"


def share_of_cpus(slot: int, parallel: int, cpus: list[int] | None = None) -> list[int] | None:
    """Worker `slot`'s share of the CPUs when `parallel` workers split them (contiguous blocks,
    sizes differing by at most one), or None when there are fewer CPUs than workers (then each
    worker's `auto` threads see the others' load)."""
    cpus = allowed_cpus() if cpus is None else cpus
    if not cpus or parallel > len(cpus):
        return None
    size, extra = divmod(len(cpus), parallel)
    start = slot * size + min(slot, extra)
    return cpus[start : start + size + (slot < extra)]


def pin_worker() -> None:
    """Keep this process on the CPUs its coordinator gave it (`CPUS_ENV`), if any: called by a
    local worker before it computes, so its `auto` threads count only its own cores."""
    cpus = os.environ.get(CPUS_ENV, "").strip()
    if cpus:
        try:
            os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
        except (AttributeError, OSError, ValueError) as e:
            log.warning(
                "%s=%s: could not pin this worker to those CPUs (%s); it shares all of them",
                CPUS_ENV,
                cpus,
                e,
            )
