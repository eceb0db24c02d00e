"""Thread counts chosen for the machine as it is (lorafit/cores.py): the cores we may use, how busy
other processes keep them, the options and variables that override, and the governor that
follows the load while a run computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from lorafit import cores
from lorafit.cli import main
from lorafit.errors import UserError


@pytest.fixture(autouse=True)
def _keep_threads(monkeypatch):
    """These tests take the auto path: no thread variable; torch's count restored afterwards."""
    for name in cores.THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    cores._GOVERNOR = None


# ---------------------------------------------------------------- the cores we may use


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # docker --cpus 1.5 (cgroup v2)
        ({"cpu.max": "max 100000\n"}, None),  # no quota
        (
            {"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"},
            2.0,
        ),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cgroup_quota_in_cores(tmp_path, files, limit):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cores.cgroup_cpu_limit(str(tmp_path)) == limit


def test_usable_cores_are_the_affinity_capped_by_the_quota_rounded_up():
    assert cores.usable_cores([0, 1, 2, 3], quota=None) == 4
    assert cores.usable_cores([0, 1, 2, 3], quota=1.5) == 2
    assert cores.usable_cores([0, 1, 2, 3], quota=0.5) == 1
    assert cores.usable_cores([2, 5], quota=8.0) == 2
    assert cores.usable_cores() == min(len(os.sched_getaffinity(0)), cores.usable_cores(quota=1e9))


# ---------------------------------------------------------------- how busy they are

STAT = """cpu  900 0 300 5000 10 0 0 0 0 0
cpu0 100 5 50 1000 3 1 2 7 0 0
cpu1 400 0 100 2000 4 0 0 0 0 0
cpu2 0 0 0 3000 0 0 0 0 0 0
intr 12345
"""


def test_busy_seconds_count_every_non_idle_field_of_the_chosen_cpus_only():
    hz = os.sysconf("SC_CLK_TCK")
    # cpu0: user+nice+system+irq+softirq+steal = 100+5+50+1+2+7 (idle and iowait left out)
    assert cores._cpu_busy_seconds(STAT, [0]) == pytest.approx(165 / hz)
    assert cores._cpu_busy_seconds(STAT, [0, 1]) == pytest.approx((165 + 500) / hz)
    assert cores._cpu_busy_seconds(STAT, [2]) == 0
    assert cores._cpu_busy_seconds(STAT, [0, 7]) is None  # a CPU /proc/stat does not show


def test_others_busy_subtracts_this_process_own_time():
    before = cores.Snapshot(wall=10.0, busy_s=100.0, own_s=5.0)
    after = cores.Snapshot(wall=12.0, busy_s=103.0, own_s=6.0)  # 3 busy-seconds, 1 of them ours
    assert cores.others_busy(before, after) == pytest.approx(1.0)
    assert cores.others_busy(after, after) is None


@pytest.mark.parametrize(
    ("n", "busy", "threads"),
    [
        (2, 0.0, 2),
        (2, 0.4, 2),
        (2, 0.6, 1),
        (2, 1.0, 1),
        (2, 2.0, 1),
        (2, None, 2),
        (4, 1.0, 3),
        (8, 2.6, 5),
        (1, 0.9, 1),
    ],
)
def test_threads_are_the_free_cores_rounded(n, busy, threads):
    assert cores.threads_for(n, busy) == threads


def test_a_busy_process_on_our_cores_is_measured():
    """A real CPU-bound process beside us: /proc/stat, our own time subtracted, says ~1 core."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    burner = subprocess.Popen(
        [sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"]
    )
    try:
        time.sleep(0.5)  # started and pinned
        before = cores.snapshot()
        sum(i * i for i in range(2_000_000))  # we compute too: our own time must not count
        time.sleep(0.6)
        busy = cores.others_busy(before, cores.snapshot())
    finally:
        burner.kill()
        burner.wait()
    assert 0.6 <= busy <= len(os.sched_getaffinity(0)) + 0.2


def test_the_window_starts_at_mark_start_and_is_never_waited_for(monkeypatch):
    cores.mark_start()
    t0 = time.monotonic()
    assert cores.measure_busy() is None  # a moment after the start: too short to mean anything
    assert time.monotonic() - t0 < 0.1  # ... and nobody waited for it
    time.sleep(cores.MIN_WINDOW_S)
    assert cores.measure_busy() is not None
    monkeypatch.setattr(cores, "MAX_WINDOW_S", 0.1)
    assert cores.measure_busy() is None  # too old to say anything about now


# ---------------------------------------------------------------- the choice


def test_thread_variables_win_over_everything(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    choice = cores.choose_threads(1)
    assert (choice.threads, choice.auto) == (3, False) and "OMP_NUM_THREADS=3" in choice.reason
    before = torch.get_num_threads()
    cores.use_threads(1)
    assert torch.get_num_threads() == before  # torch already follows the variable: left alone


def test_a_fixed_count_is_used_as_given():
    choice = cores.choose_threads("1")
    assert (choice.threads, choice.auto) == (1, False)
    cores.use_threads(1)
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("bad", ["-1", "two", "1.5"])
def test_a_bad_thread_count_is_one_line(bad):
    with pytest.raises(UserError, match="not a thread count"):
        cores.choose_threads(bad)


def test_each_rule_gives_its_whole_choice(monkeypatch):
    """Every field of the choice, rule by rule: the count, the logged reason, whether the
    governor follows the machine, the usable cores, and whether the load was measured yet."""
    n = cores.usable_cores()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cores.choose_threads(1) == cores.ThreadChoice(3, "3 (OMP_NUM_THREADS=3)", False, n, True)
    monkeypatch.setenv("OMP_NUM_THREADS", "0")  # 0: the variable is set but asks for nothing
    assert cores.choose_threads(1) == cores.ThreadChoice(
        n, f"{n} (OMP_NUM_THREADS=0)", False, n, True
    )
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("MKL_NUM_THREADS", "x")
    with pytest.raises(UserError, match="^MKL_NUM_THREADS: 'x' is not a thread count"):
        cores.choose_threads(1)
    monkeypatch.delenv("MKL_NUM_THREADS")
    with pytest.raises(UserError, match="^--threads / train.threads: '-2' is not a thread count"):
        cores.choose_threads("-2")
    assert cores.choose_threads(1) == cores.ThreadChoice(
        1, f"1 (asked for; {n} usable cores)", False, n, True
    )
    cores.mark_start()  # a moment ago: auto, the governor takes its first look soon
    want = cores.ThreadChoice(
        n, f"{n} ({n} usable cores; their load is measured as it runs)", True, n, False
    )
    assert cores.choose_threads(None) == want


def test_auto_without_a_measurable_load_takes_the_usable_cores(monkeypatch):
    monkeypatch.setattr(cores, "snapshot", lambda *a, **k: None)  # not Linux: no /proc/stat
    n = cores.usable_cores()
    want = cores.ThreadChoice(
        n, f"{n} ({n} usable cores; their load is not measurable here)", False, n, True
    )
    assert cores.choose_threads("auto") == want


@pytest.mark.parametrize(("quota", "measurable"), [(2.0, False), (4.0, True)])
def test_a_quota_below_the_visible_cpus_makes_the_load_unmeasurable(monkeypatch, quota, measurable):
    """Under a quota smaller than the CPUs we see, /proc/stat also counts other containers."""
    monkeypatch.setattr(cores, "cgroup_cpu_limit", lambda *a, **k: quota)
    monkeypatch.setattr(
        cores, "snapshot", lambda cpus=None, **k: cores.Snapshot(time.monotonic(), 0.0, 0.0)
    )
    monkeypatch.setattr(cores, "allowed_cpus", lambda: [0, 1, 2, 3])
    # others keep a whole core busy: counted only where it can be measured
    monkeypatch.setattr(cores, "measure_busy", lambda cpus=None, since=None: 1.0)
    choice = cores.choose_threads(None)
    n = int(quota)
    assert (choice.threads, choice.cores, choice.auto) == (n - measurable, n, measurable)
    assert ("not measurable" in choice.reason) is not measurable


def test_auto_counts_a_busy_core_out():
    n = cores.usable_cores()
    cpu = sorted(os.sched_getaffinity(0))[0]
    burners = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass",
            ]
        )
        for _ in range(2)  # two on one core: that core is busy even if the scheduler is generous
    ]
    try:
        time.sleep(0.3)
        cores.mark_start()
        time.sleep(0.6)
        choice = cores.choose_threads(None)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert choice.auto and choice.measured
    assert choice.threads <= max(1, n - 1), choice.reason
    busy = float(choice.reason.split("other processes keep ")[1].split()[0])
    assert busy >= 0.6, choice.reason


def test_the_governor_follows_the_load_and_records_each_change(monkeypatch, caplog):
    """Snapshots are fed in: others busy 0, then 1.8 cores, then 0 again (on 2 cores)."""
    own = [0.0]
    # (wall, busy seconds of all our CPUs); this process adds 0.2 s of its own each second
    feed = iter([(0.0, 0.0), (1.0, 0.5), (2.0, 2.5), (3.0, 4.5), (4.0, 4.7)])

    def fake_snapshot(cpus=None, stat_path="/proc/stat"):
        wall, busy = next(feed)
        own[0] += 0.2 if wall else 0.0
        return cores.Snapshot(wall, busy, own[0])

    monkeypatch.setattr(cores, "snapshot", fake_snapshot)
    choice = cores.ThreadChoice(2, "2 of 2", auto=True, cores=2)
    governor = cores.ThreadGovernor(choice, every=0.0)
    caplog.set_level("INFO", logger="lorafit")
    # others: 0.5-0.2 = 0.3 -> 2 threads; 2.0-0.2 = 1.8 -> 1; 1.8 -> 1; 0.2-0.2 = 0 -> 2
    # (the fed walls are small, so against the real clock every tick is due)
    seen = [governor.tick() for _ in range(4)]
    assert seen == [2, 1, 1, 2]
    assert torch.get_num_threads() == 2
    assert [t for _, t in governor.changes] == [1, 2]
    assert sum("threads: 2 -> 1" in r.message for r in caplog.records) == 1
    record = governor.record()
    assert record["threads"] == 2 and len(record["threads_changes"]) == 2


def test_a_fixed_count_is_never_moved_by_the_governor(monkeypatch):
    monkeypatch.setattr(
        cores, "snapshot", lambda *a, **k: pytest.fail("a fixed count looked at the machine")
    )
    governor = cores.ThreadGovernor(
        cores.ThreadChoice(1, "1 (asked for)", auto=False, cores=2), every=0.0
    )
    assert [governor.tick() for _ in range(3)] == [1, 1, 1]


# ---------------------------------------------------------------- several workers on one machine


@pytest.mark.parametrize(
    ("cpus", "parallel", "shares"),
    [
        ([0, 1], 2, [[0], [1]]),
        ([0, 1, 2, 3, 4], 2, [[0, 1, 2], [3, 4]]),
        ([4, 5, 6, 7], 3, [[4, 5], [6], [7]]),
        ([0, 1], 1, [[0, 1]]),
        ([0, 1], 3, [None, None, None]),  # more workers than cores: each one's auto sees the others
    ],
)
def test_parallel_workers_split_the_cores(cpus, parallel, shares):
    assert [cores.share_of_cpus(slot, parallel, cpus) for slot in range(parallel)] == shares


def test_sweep_workers_get_their_share_and_pin_themselves(monkeypatch):
    from lorafit.search.study import _worker_env

    mine = sorted(os.sched_getaffinity(0))
    env = _worker_env(len(mine) - 1, len(mine), None)
    assert env[cores.CPUS_ENV] == str(mine[-1]) and "OMP_NUM_THREADS" not in env
    monkeypatch.setenv(cores.CPUS_ENV, env[cores.CPUS_ENV])
    try:
        cores.pin_worker()
        assert os.sched_getaffinity(0) == {mine[-1]}
        assert cores.choose_threads(None).cores == 1
    finally:
        os.sched_setaffinity(0, set(mine))


# ---------------------------------------------------------------- the commands


def test_training_logs_and_records_its_threads(tiny_overrides, tmp_path):
    assert main(["train", *tiny_overrides, "train.max_steps=2", "--threads", "1"]) == 0
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["threads"] == 1 and "asked for" in summary["threads_reason"]
    assert "threads for training: 1 (asked for" in (run / "train.log").read_text()
    assert "threads: 1" in (run / "config.yaml").read_text()

    # a resume may change the thread count, and nothing else
    with pytest.raises(UserError, match="only --threads may change"):
        from lorafit.train import train

        train(None, ["train.lr=1"], resume=run)
    assert main(["train", "--resume", str(run), "--threads", "2"]) == 0  # finished: returns at once


def test_training_under_auto_measures_the_machine(tiny_overrides, tmp_path):
    assert main(["train", *tiny_overrides, "train.max_steps=2"]) == 0
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    summary = json.loads((run / "summary.json").read_text())
    assert 1 <= summary["threads"] <= cores.usable_cores()
    assert "usable cores" in summary["threads_reason"]
    assert "threads for training:" in (run / "train.log").read_text()


def test_predict_takes_threads(tiny_overrides, tmp_path, small_csv, caplog):
    assert main(["train", *tiny_overrides, "train.max_steps=2"]) == 0
    caplog.set_level("INFO", logger="lorafit")
    out = tmp_path / "out.csv"
    assert (
        main(
            [
                "predict",
                str(tmp_path / "runs" / "latest"),
                "--input",
                str(small_csv),
                "--output",
                str(out),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert torch.get_num_threads() == 1
    assert any("threads for prediction: 1 (asked for" in r.message for r in caplog.records)
    assert (
        main(
            [
                "predict",
                str(tmp_path / "runs" / "latest"),
                "--input",
                str(small_csv),
                "--output",
                str(out),
                "--overwrite",
                "--threads",
                "x",
            ]
        )
        == 2
    )


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_train_threads_must_be_auto_or_positive(value):
    from lorafit.config import load_config

    with pytest.raises(UserError, match="train.threads"):
        load_config(None, [f"train.threads={value}"])


# ---------------------------------------------------------------- survivors of the mutation run
# (docs/project/mutation.md): each test pins a decision the tests above left open, without depending on
# how many CPUs the machine running it has (the run used `taskset -c 0`).


def test_pin_worker_pins_to_its_share_or_says_in_one_line_why_not(monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(cores.os, "sched_setaffinity", lambda pid, cpus: calls.append((pid, cpus)))
    monkeypatch.delenv(cores.CPUS_ENV, raising=False)
    cores.pin_worker()  # not a sweep worker: nothing to do, nothing said
    monkeypatch.setenv(cores.CPUS_ENV, " ")
    cores.pin_worker()
    assert calls == [] and not caplog.records
    monkeypatch.setenv(cores.CPUS_ENV, "0,3")
    cores.pin_worker()
    assert calls == [(0, {0, 3})]  # this process (pid 0), both CPUs
    caplog.set_level("WARNING", logger="lorafit")
    monkeypatch.setenv(cores.CPUS_ENV, "0,x")
    cores.pin_worker()
    assert calls == [(0, {0, 3})]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "LORAFIT_WORKER_CPUS=0,x: could not pin this worker to those CPUs "
            "(invalid literal for int() with base 10: 'x'); it shares all of them",
        )
    ]

    def refuse(pid, cpus):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(cores.os, "sched_setaffinity", refuse)
    monkeypatch.setenv(cores.CPUS_ENV, "99")
    cores.pin_worker()
    assert caplog.records[-1].getMessage() == (
        "LORAFIT_WORKER_CPUS=99: could not pin this worker to those CPUs ([Errno 22] Invalid argument); it shares all of them"
    )


def test_use_threads_sets_logs_and_installs_its_governor(monkeypatch, caplog):
    import torch as torch_module

    set_to = []
    monkeypatch.setattr(torch_module, "set_num_threads", set_to.append)
    caplog.set_level("INFO", logger="lorafit")
    n = cores.usable_cores()
    governor = cores.use_threads(1, "prediction")
    assert set_to == [1] and governor is cores._GOVERNOR
    assert governor.choice == cores.ThreadChoice(
        1, f"1 (asked for; {n} usable cores)", False, n, True
    )
    assert [r.getMessage() for r in caplog.records] == [
        f"threads for prediction: 1 (asked for; {n} usable cores)"
    ]
    # auto just after the command started: the governor's first look is at mark_start's snapshot
    cores.mark_start()
    governor = cores.use_threads(None, "training")
    assert governor._last is cores._START and governor._wait == cores.MIN_WINDOW_S


def test_tick_reaches_the_active_governor_only(monkeypatch):
    cores._GOVERNOR = None
    cores.tick()  # no governor: nothing to do

    class Counting:
        ticks = 0

        def tick(self):
            self.ticks += 1

    cores._GOVERNOR = counting = Counting()
    cores.tick()
    cores.tick()
    assert counting.ticks == 2


def test_usable_cores_without_an_affinity_fall_back_to_the_cpu_count(monkeypatch):
    monkeypatch.setattr(cores, "cgroup_cpu_limit", lambda *a: None)
    monkeypatch.setattr(cores, "allowed_cpus", lambda: None)
    monkeypatch.setattr(cores.os, "cpu_count", lambda: 3)
    assert cores.usable_cores() == 3
    monkeypatch.setattr(cores.os, "cpu_count", lambda: None)  # unknown: one
    assert cores.usable_cores() == 1
    assert cores.usable_cores(cpus=[4, 5]) == 2


def test_allowed_cpus_are_this_process_affinity(monkeypatch):
    monkeypatch.setattr(
        cores.os, "sched_getaffinity", lambda pid: {3, 1} if pid == 0 else {0, 1, 2, 3, 4, 5}
    )
    assert cores.allowed_cpus() == [1, 3]


def test_files_that_are_not_ascii_are_not_understood(tmp_path):
    (tmp_path / "cpu.max").write_bytes("150000 100000 \xe9\n".encode())
    assert cores._read(str(tmp_path / "cpu.max")) is None
    assert cores.cgroup_cpu_limit(str(tmp_path)) is None


@pytest.mark.parametrize("quota", ["0", "1"])
def test_cgroup_v1_quotas_in_microseconds(tmp_path, quota):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(quota + "\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cores.cgroup_cpu_limit(str(tmp_path)) == (None if quota == "0" else 1e-5)


@pytest.mark.parametrize("value", [None, "", "  ", "auto", "AUTO", "0", 0])
def test_empty_auto_and_zero_ask_for_nothing(value):
    assert cores._positive(value, "x") is None


def test_snapshot_reads_the_given_cpus_of_the_given_stat(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    # cpu1's line as an old kernel writes it: user nice system idle, nothing after
    stat.write_text("cpu  9 9 9 9 9 9 9 9\ncpu0 100 0 50 1000 0 0 0 0\ncpu1 30 0 20 500\n")
    monkeypatch.setattr(cores, "allowed_cpus", lambda: pytest.fail("the given CPUs were not used"))
    tick = os.sysconf("SC_CLK_TCK")
    assert cores.snapshot([1], str(stat)).busy_s == 50 / tick
    assert cores.snapshot([0, 1], str(stat)).busy_s == 200 / tick
    assert cores.snapshot([], str(stat)) is None  # no CPUs: nothing to measure
    assert cores.snapshot([0], str(tmp_path / "missing")) is None


def test_measure_busy_uses_the_given_start_and_cpus(monkeypatch):
    seen = []

    def fake(cpus=None, stat_path="/proc/stat"):
        seen.append(cpus)
        return cores.Snapshot(10.0, 7.0, 1.0)

    monkeypatch.setattr(cores, "snapshot", fake)
    monkeypatch.setattr(cores, "_START", None)
    assert cores.measure_busy([1]) is None  # never marked: no window
    since = cores.Snapshot(8.0, 3.0, 0.0)  # 2 s before: 4 busy s, 1 of them ours -> 1.5 cores
    assert cores.measure_busy([1], since=since) == 1.5
    assert seen == [[1], [1]]


def test_the_governor_looks_early_only_when_the_command_just_started(monkeypatch):
    taken = cores.Snapshot(time.monotonic(), 0.0, 0.0)
    monkeypatch.setattr(cores, "snapshot", lambda *a, **k: taken)
    auto = cores.ThreadChoice(2, "2", auto=True, cores=2, measured=False)
    just = cores.Snapshot(time.monotonic() - 1.0, 0.0, 0.0)  # the command started 1 s ago
    early = cores.ThreadGovernor(auto, every=20.0, since=just)
    assert (early._last, early._wait) == (just, cores.MIN_WINDOW_S)
    for since, choice in [
        (None, auto),  # nothing to start from
        (cores.Snapshot(time.monotonic() - 100.0, 0.0, 0.0), auto),  # too long ago to mean anything
        (just, cores.ThreadChoice(2, "2", auto=True, cores=2, measured=True)),  # measured already
    ]:
        late = cores.ThreadGovernor(choice, every=20.0, since=since)
        assert (late._last, late._wait) == (taken, 20.0)


def test_the_governor_waits_its_interval_and_records_when_it_changed(monkeypatch, caplog):
    now = cores.Snapshot(time.monotonic(), 0.0, 0.0)
    monkeypatch.setattr(cores, "snapshot", lambda *a, **k: now)
    choice = cores.ThreadChoice(2, "2 of 2", auto=True, cores=2)
    waiting = cores.ThreadGovernor(choice, every=1000.0)
    monkeypatch.setattr(
        cores, "snapshot", lambda *a, **k: pytest.fail("looked before its interval")
    )
    assert waiting.tick() == 2  # not due: no look at the machine

    own = [0.0]
    feed = iter([(0.25, 0.0), (1.25, 0.5), (2.25, 2.5), (3.25, 4.5), (4.25, 4.7)])

    def fake_snapshot(cpus=None, stat_path="/proc/stat"):
        wall, busy = next(feed)
        own[0] += 0.2 if wall > 0.25 else 0.0
        return cores.Snapshot(wall, busy, own[0])

    monkeypatch.setattr(cores, "snapshot", fake_snapshot)
    governor = cores.ThreadGovernor(choice, every=0.0)
    governor._start = 0.5
    caplog.set_level("INFO", logger="lorafit")
    assert [governor.tick() for _ in range(4)] == [2, 1, 1, 2]
    assert governor.changes == [(1.8, 1), (3.8, 2)]  # seconds since the governor started
    assert [r.getMessage() for r in caplog.records] == [
        "threads: 2 -> 1 (other processes now keep 1.8 of 2 cores busy)",
        "threads: 1 -> 2 (other processes now keep 0.0 of 2 cores busy)",
    ]
    assert governor.record() == {
        "threads": 2,
        "threads_reason": "2 of 2",
        "threads_changes": [(1.8, 1), (3.8, 2)],
    }


def test_defaults_the_callers_rely_on(monkeypatch, caplog):
    read = []
    monkeypatch.setattr(cores, "_read", lambda path: read.append(path))
    assert cores.cgroup_cpu_limit() is None
    assert read[0] == "/sys/fs/cgroup/cpu.max"  # the cgroup v2 mount
    caplog.set_level("INFO", logger="lorafit")
    cores.use_threads(1)
    assert caplog.records[-1].getMessage().startswith("threads for computing: 1 (asked for;")
