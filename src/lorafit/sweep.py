"""Sweeps: many `lorafit train` runs from one file, and a leaderboard of their results.

    lorafit sweep configs/sweeps/minilm_layer_ranges.yaml --parallel 2

A sweep file (every key optional except one of `grid` / `runs`):

    name: layer-ranges              # folder <dir>/<name>/ (default: the file's stem)
    dir: runs/sweeps                # parent folder (default runs/sweeps)
    base: ../agnews_roberta_latent.yaml   # config file, relative to this file, or a mapping
    overrides: {lora.layers: all}   # applied to the base for every trial (not swept)
    metric: eval_accuracy           # leaderboard order: eval_accuracy, eval_f1, eval_loss, test_accuracy
    grid:                           # the cartesian product of these values
      lora.layers: ["0-11", "6-11", "9-11", "10-11"]
      lora.r: [4, 8]
    runs:                           # override mappings, each crossed with the grid
      - name: two-sections          # optional; otherwise named from the overrides
        lora.sections: [{layers: "0-5", r: 4}, {layers: "6-11", r: 8}]

Each trial is named from its overrides (`layers9-11_r8`) and checked against the budget on a
weightless model first; a trial over budget is skipped with the reason. The rest run one at
a time or as N worker processes (`python -m lorafit train --config <folder>/<trial>.yaml`,
console output in `<folder>/<trial>.log`), each pinned to a GPU with `CUDA_VISIBLE_DEVICES`
when GPUs are given. The sweep folder holds the trials' run directories, `sweep_state.json`
(trial -> status and run directory, written atomically after every change) and
`leaderboard.csv` / `leaderboard.md`. Run the same command again after an interruption: a
trial whose run directory has `summary.json` (and the same config) is not redone; an
interrupted or failed trial continues in its run directory with `lorafit train --resume`
(from its newest checkpoint; from the start if it had none). Delete a trial's run directory
to start it afresh.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lorafit.config import Config, _omegaconf_message, config_to_dict, config_to_yaml
from lorafit.errors import UserError
from lorafit.leaderboard import METRICS, write_leaderboard
from lorafit.rundir import write_atomic, write_json

log = logging.getLogger("lorafit")

SWEEP_KEYS = ("name", "dir", "base", "overrides", "metric", "grid", "runs")
#: names a trial may not take: the sweep's own files (and train's `latest` link) use them
RESERVED = {"sweep", "sweep_state", "leaderboard", "latest"}
NAME_RE = re.compile(r"[A-Za-z0-9._+-]+")
POLL_S = 0.2
LOG_MARK = "==== lorafit sweep"  # starts each attempt's section of <trial>.log


@dataclass
class Trial:
    """One configuration of a sweep: its overrides, full config and trainable parameters."""

    name: str
    overrides: dict[str, Any]
    config: Config
    params: int
    skip: str | None = None  # why it does not run (over budget)


@dataclass
class SweepPlan:
    """A sweep file read and expanded: where it writes and the trials it holds."""

    source: Path
    name: str
    folder: Path
    metric: str
    keys: list[str]  # the swept keys, in file order (the leaderboard's settings columns)
    trials: list[Trial] = field(default_factory=list)


# ---------------------------------------------------------------- reading the sweep file


def read_sweep_file(path: str | Path) -> dict:
    """The sweep file as a plain mapping, with its top-level keys checked."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep file {path} not found; give an existing YAML file")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(
            f"{path}:{where} not valid YAML ({getattr(e, 'problem', e)}); fix the file"
        ) from None
    if not isinstance(spec, dict):
        raise UserError(f"{path}: a sweep file is a mapping with base:, grid: and/or runs:")
    unknown = [k for k in spec if k not in SWEEP_KEYS]
    if unknown:
        raise UserError(
            f"{path}: unknown key '{unknown[0]}'; a sweep file has {', '.join(SWEEP_KEYS)}"
        )
    if not spec.get("grid") and not spec.get("runs"):
        raise UserError(
            f"{path}: nothing to sweep; add grid: (key: [values]) or runs: (a list of overrides)"
        )
    if spec.get("metric", "eval_accuracy") not in METRICS:
        raise UserError(f"{path}: metric {spec['metric']!r} is not one of {', '.join(METRICS)}")
    return spec


def _variants(spec: dict, source: Path) -> list[tuple[str | None, dict]]:
    """(name or None, overrides) for every trial: each `runs` entry crossed with the grid."""
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict):
        raise UserError(f"{source}: grid: must map config keys to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{source}: grid: {key}: give a non-empty list of values, e.g. [4, 8]")
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    runs = spec.get("runs") or [{}]
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise UserError(f"{source}: runs: must be a list of mappings (config key: value)")
    variants = []
    for entry in runs:
        entry = dict(entry)
        label = entry.pop("name", None)
        if label is not None and not NAME_RE.fullmatch(str(label)):
            raise UserError(f"{source}: runs: name {label!r}: use letters, digits and . _ + - only")
        for point in points:
            name = "_".join(
                filter(None, [label and str(label), trial_name(point) if point else None])
            )
            variants.append((name or None, {**entry, **point}))
    return variants


def trial_name(overrides: dict[str, Any]) -> str:
    """A deterministic name from overrides: {lora.layers: 9-11, lora.r: 8} -> layers9-11_r8."""
    shorts = [key.rsplit(".", 1)[-1] for key in overrides]
    parts = [
        (short if shorts.count(short) == 1 else key) + _value_tag(value)
        for (key, value), short in zip(overrides.items(), shorts)
    ]
    name = "_".join(parts) or "base"
    if len(name) > 80:  # keep folder names short; the hash keeps them distinct
        name = name[:70] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return name


def _value_tag(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return re.sub(r"[^A-Za-z0-9.+-]+", "-", value).strip("-") or "empty"
    if isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value):
        return "+".join(_value_tag(v) for v in value)
    # sections and other structures: their count and a short hash of their content
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:6]
    return f"{len(value)}-{digest}" if isinstance(value, list) else digest


def _nested(overrides: dict[str, Any]) -> dict:
    """{'lora.r': 8} -> {'lora': {'r': 8}}, for OmegaConf.merge."""
    out: dict = {}
    for key, value in overrides.items():
        node = out
        *parents, last = str(key).split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _base_config(base: Any, common: Any, source: Path, overrides) -> Any:
    """The base config (schema + file or mapping + `overrides:` + command line), checked."""
    try:
        conf = OmegaConf.structured(Config)
        if isinstance(base, str):
            path = source.parent / base
            if not path.is_file():
                raise UserError(
                    f"{source}: base: {path} not found; give a config path relative to the sweep file"
                )
            conf = OmegaConf.merge(conf, OmegaConf.load(path))
        elif isinstance(base, dict):
            conf = OmegaConf.merge(conf, _nested(base))
        elif base is not None:
            raise UserError(f"{source}: base: give a config file path or a mapping of config keys")
        if common is not None and not isinstance(common, dict):
            raise UserError(f"{source}: overrides: give a mapping of config keys to values")
        conf = OmegaConf.merge(conf, _nested(common or {}))
        if overrides:
            conf = OmegaConf.merge(conf, OmegaConf.from_dotlist(list(overrides)))
        OmegaConf.to_object(conf)  # validate the base on its own: errors name 'base'
        return conf
    except OmegaConfBaseException as e:
        raise UserError(f"{source}: base: {_omegaconf_message(e)}") from None
    except ValueError as e:
        raise UserError(f"{source}: base: {e}") from None


def _trial_config(base, overrides: dict, name: str, folder: Path, source: Path) -> Config:
    """The trial's full config: named after the trial, in the sweep folder, no progress bar
    (its output goes to `<trial>.log`)."""
    try:
        extra = {"run": {"name": name, "dir": str(folder)}, "log": {"progress": False}}
        return OmegaConf.to_object(OmegaConf.merge(base, _nested(overrides), extra))
    except OmegaConfBaseException as e:
        raise UserError(f"{source}: trial {name}: {_omegaconf_message(e)}") from None
    except ValueError as e:
        raise UserError(f"{source}: trial {name}: {e}") from None


def _budget(cfg: Config) -> tuple[int, str | None]:
    """(trainable parameters, reason it is over budget or None), counted without weights."""
    from lorafit.params import check_budget, describe_model

    description = describe_model(cfg)
    try:
        check_budget(description)
        return description["params"]["trainable"], None
    except UserError as e:
        return description["params"]["trainable"], str(e)


def load_sweep(path: str | Path, overrides=()) -> SweepPlan:
    """Read a sweep file and expand it into trials, each with its config and budget check.

    `overrides` (`key=value` strings) apply to the base of every trial. Raises `UserError`
    naming the file and trial for unknown keys, bad values or duplicate trial names.
    """
    source = Path(path)
    spec = read_sweep_file(source)
    name = str(spec.get("name") or source.stem)
    if not NAME_RE.fullmatch(name):
        raise UserError(f"{source}: name {name!r}: use letters, digits and . _ + - only")
    folder = Path(spec.get("dir") or "runs/sweeps") / name
    base = _base_config(spec.get("base"), spec.get("overrides"), source, overrides)
    variants = _variants(spec, source)
    keys = list(dict.fromkeys(k for _, o in variants for k in o))
    plan = SweepPlan(source, name, folder, spec.get("metric", "eval_accuracy"), keys)
    seen: set[str] = set()
    for label, trial_overrides in variants:
        tname = label or trial_name(trial_overrides)
        if tname in seen or tname in RESERVED:
            raise UserError(
                f"{source}: two trials are named {tname!r} (or it is reserved); give runs: entries distinct name: values"
            )
        seen.add(tname)
        cfg = _trial_config(base, trial_overrides, tname, folder, source)
        params, skip = _budget(cfg)
        plan.trials.append(Trial(tname, trial_overrides, cfg, params, skip))
    return plan


# ---------------------------------------------------------------- state and resuming


def _run_dirs(folder: Path, name: str) -> list[Path]:
    """The run directories `lorafit train` made for trial `name`, oldest first."""
    pattern = re.compile(re.escape(name) + r"-\d{8}-\d{6}(?:-(\d+))?")
    found = [p for p in folder.glob(f"{name}-*") if p.is_dir() and pattern.fullmatch(p.name)]
    return sorted(
        found,
        key=lambda p: (
            p.name[len(name) + 1 : len(name) + 16],
            int(pattern.fullmatch(p.name)[1] or 1),
        ),
    )


def _same_config(run_dir: Path, cfg: Config) -> bool:
    """Whether a finished run used this trial's config (run.dir aside: it may be relative)."""
    try:
        done = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    except (OSError, OmegaConfBaseException):
        return False
    want = config_to_dict(cfg)
    for d in (done, want):
        d.get("run", {}).pop("dir", None)
    return done == want


def _finished_run(plan: SweepPlan, trial: Trial, entry: dict | None) -> Path | None:
    """The trial's finished run directory (summary.json present, same config), if any."""
    recorded = [Path(entry["run_dir"])] if entry and entry.get("run_dir") else []
    stale = None
    for run_dir in recorded + _run_dirs(plan.folder, trial.name)[::-1]:
        if (run_dir / "summary.json").is_file():
            if _same_config(run_dir, trial.config):
                return run_dir
            stale = run_dir
    if stale is not None:
        log.info(
            "trial %s: finished run %s used a different config; running it again", trial.name, stale
        )
    return None


def _train_can_resume() -> bool:
    """Whether this lorafit's `train` takes `resume=` (then `lorafit train --resume` exists)."""
    import inspect

    from lorafit.train import train

    return "resume" in inspect.signature(train).parameters


def _resumable(plan: SweepPlan, trial: Trial, entry: dict) -> Path | None:
    """The trial's newest unfinished run directory with this config, to continue it."""
    if not _train_can_resume():
        return None
    recorded = [Path(entry["run_dir"])] if entry.get("run_dir") else []
    for run_dir in recorded + _run_dirs(plan.folder, trial.name)[::-1]:
        if (
            run_dir.is_dir()
            and not (run_dir / "summary.json").exists()
            and _same_config(run_dir, trial.config)
        ):
            return run_dir
    return None


def _settle(plan: SweepPlan, old: dict) -> tuple[dict, list[Trial]]:
    """The state at the start of a (re)run, and the trials still to run."""
    state = {"sweep": str(plan.source), "name": plan.name, "metric": plan.metric, "trials": {}}
    pending = []
    for t in plan.trials:
        before = old.get("trials", {}).get(t.name) or {}
        entry = {"status": "pending", "params": t.params, "overrides": t.overrides}
        if t.skip:
            entry.update(status="skipped", reason=t.skip)
        else:
            done = _finished_run(plan, t, before)
            if done is not None:
                entry.update({k: before[k] for k in ("started_at", "finished_at") if k in before})
                entry.update(status="done", run_dir=str(done))
            else:
                resume = _resumable(plan, t, before)
                if resume is not None:
                    entry.update(run_dir=str(resume), resume_from=str(resume))
                pending.append(t)
        state["trials"][t.name] = entry
    return state, pending


def _read_state(folder: Path) -> dict:
    path = folder / "sweep_state.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserError(
            f"{path}: not valid JSON; delete it to start the sweep's bookkeeping afresh (run directories are kept)"
        ) from None


def _save(plan: SweepPlan, state: dict) -> None:
    write_json(plan.folder / "sweep_state.json", state)
    write_leaderboard(plan, state)


# ---------------------------------------------------------------- running trials


@dataclass
class Worker:
    """A running `lorafit train` subprocess and what is needed to book its result."""

    trial: Trial
    proc: subprocess.Popen
    log_file: Any
    before: set[str]
    resume_dir: Path | None = None


def _worker_env(slot: int, parallel: int, gpus: list[str] | None) -> dict:
    env = dict(os.environ)
    # N processes on one machine: split the cores between them unless the user chose
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallel)))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    return env


def _start(plan: SweepPlan, trial: Trial, slot: int, parallel: int, gpus, state: dict) -> Worker:
    config_path = plan.folder / f"{trial.name}.yaml"
    write_atomic(config_path, config_to_yaml(trial.config))
    entry = state["trials"][trial.name]
    resume_dir = Path(entry.pop("resume_from")) if entry.get("resume_from") else None
    cmd = [sys.executable, "-m", "lorafit", "train"]
    cmd += ["--resume", str(resume_dir)] if resume_dir else ["--config", str(config_path)]
    log_path = plan.folder / f"{trial.name}.log"
    log_file = open(log_path, "a", encoding="utf-8")  # earlier attempts stay above
    log_file.write(f"{LOG_MARK} {_now()}: {' '.join(cmd)}\n")
    log_file.flush()
    before = {p.name for p in _run_dirs(plan.folder, trial.name)}
    proc = subprocess.Popen(
        cmd, stdout=log_file, stderr=subprocess.STDOUT, env=_worker_env(slot, parallel, gpus)
    )
    entry.update(
        status="running", log=str(log_path), pid=proc.pid, started_at=_now(), command=" ".join(cmd)
    )
    gpu = f" on GPU {gpus[slot % len(gpus)]}" if gpus else ""
    how = f"resuming {resume_dir}" if resume_dir else "started"
    log.info("trial %s: %s%s (log %s)", trial.name, how, gpu, log_path)
    return Worker(trial, proc, log_file, before, resume_dir)


def _book(plan: SweepPlan, worker: Worker, state: dict) -> None:
    """Record a finished worker: done (with its run directory) or failed (with the reason)."""
    worker.log_file.close()
    entry = state["trials"][worker.trial.name]
    entry.pop("pid", None)
    new = [p for p in _run_dirs(plan.folder, worker.trial.name) if p.name not in worker.before]
    run_dir = worker.resume_dir or (new[-1] if new else None)
    entry.update(finished_at=_now(), returncode=worker.proc.returncode)
    if run_dir is not None:
        entry["run_dir"] = str(run_dir)
    if worker.proc.returncode == 0 and run_dir is not None and (run_dir / "summary.json").is_file():
        entry.update(status="done")
        entry.pop("reason", None)
        summary = json.loads((run_dir / "summary.json").read_text())
        log.info(
            "trial %s: done, %s %.4f", worker.trial.name, summary["metric"], summary["best_value"]
        )
    else:
        entry.update(status="failed", reason=_last_error(Path(entry["log"])))
        log.info("trial %s: failed (%s)", worker.trial.name, entry["reason"])


def _last_error(log_path: Path) -> str:
    """The last error line of the latest attempt in a trial's log (else its last line)."""
    text = log_path.read_text(encoding="utf-8", errors="replace").split(LOG_MARK)[-1]
    lines = [x.strip() for x in text.splitlines()[1:] if x.strip()]
    errors = [
        x
        for x in lines
        if x.startswith("lorafit: error:") or re.match(r"\w+(Error|Exception)\b", x)
    ]
    return (errors or lines or ["no output"])[-1][:300]


def _stop(plan: SweepPlan, worker: Worker, state: dict) -> None:
    """Interrupted: end the worker, keep its partial run directory, mark it to run again."""
    if worker.proc.poll() is None:
        worker.proc.terminate()
        try:
            worker.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()
    worker.log_file.close()
    entry = state["trials"][worker.trial.name]
    entry.pop("pid", None)
    entry.update(status="interrupted", finished_at=_now())
    new = [p for p in _run_dirs(plan.folder, worker.trial.name) if p.name not in worker.before]
    if worker.resume_dir or new:
        entry["run_dir"] = str(worker.resume_dir or new[-1])


def _run_pending(plan: SweepPlan, pending: list[Trial], state: dict, parallel: int, gpus) -> None:
    """Keep up to `parallel` workers busy until every pending trial has run."""
    queue, running = list(pending), {}
    try:
        while queue or running:
            for slot in range(parallel):
                if slot not in running and queue:
                    running[slot] = _start(plan, queue.pop(0), slot, parallel, gpus, state)
                    _save(plan, state)
            for slot, worker in list(running.items()):
                if worker.proc.poll() is not None:
                    _book(plan, worker, state)
                    del running[slot]
                    _save(plan, state)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        for worker in running.values():
            _stop(plan, worker, state)
        _save(plan, state)
        log.info("sweep %s interrupted; run the same command again to continue", plan.name)
        raise


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def sweep(
    path: str | Path,
    overrides=(),
    *,
    parallel: int | None = None,
    gpus: str | list[str] | None = None,
    dry_run: bool = False,
) -> dict:
    """Run every trial of a sweep file that is not finished yet, then write the leaderboard.

    Args:
        path: the sweep YAML file.
        overrides: `key=value` strings applied to the base config of every trial.
        parallel: worker processes at once (default: one per GPU given, else 1).
        gpus: GPU ids ("0,1" or ["0", "1"]); worker i sees GPU i mod len(gpus) only.
        dry_run: only plan: names, parameter counts, budget and status; writes nothing.

    Returns:
        `{"folder", "leaderboard_csv", "leaderboard_md", "status": {trial: status},
        "ran": [trials run this time], "plan": SweepPlan}`.

    Raises:
        UserError: a bad sweep file (before anything runs), or trials that failed (after the
        leaderboard is written; running the sweep again retries them).
    """
    gpus = _parse_gpus(gpus)
    parallel = parallel if parallel is not None else max(1, len(gpus or []))
    if parallel < 1:
        raise UserError(f"--parallel {parallel}: give 1 or more worker processes")
    plan = load_sweep(path, overrides)
    state, pending = _settle(plan, _read_state(plan.folder))
    result = {"folder": plan.folder, "plan": plan, "ran": [t.name for t in pending]}
    if dry_run:
        result["ran"] = []
        result["status"] = {n: e["status"] for n, e in state["trials"].items()}
        return result
    plan.folder.mkdir(parents=True, exist_ok=True)
    write_atomic(plan.folder / "sweep.yaml", plan.source.read_bytes())
    _announce(plan, pending)
    _save(plan, state)
    _run_pending(plan, pending, state, parallel, gpus)
    csv_path, md_path = write_leaderboard(plan, state)
    result.update(
        leaderboard_csv=csv_path,
        leaderboard_md=md_path,
        status={n: e["status"] for n, e in state["trials"].items()},
    )
    failed = [n for n, e in state["trials"].items() if e["status"] == "failed"]
    if failed:
        raise UserError(
            f"sweep {plan.name}: {len(failed)} of {len(plan.trials)} trials failed ({', '.join(failed)}); "
            f"see {plan.folder}/<trial>.log, fix the cause and run the sweep again (finished trials are kept)"
        )
    return result


def _announce(plan: SweepPlan, pending: list[Trial]) -> None:
    skipped = [t for t in plan.trials if t.skip]
    done = len(plan.trials) - len(pending) - len(skipped)
    log.info(
        "sweep %s: %d trials, %d to run, %d skipped (over budget), %d already done",
        *(plan.name, len(plan.trials), len(pending), len(skipped), done),
    )
    for t in skipped:
        log.info("trial %s: skipped: %s", t.name, t.skip)


def _parse_gpus(gpus) -> list[str] | None:
    if gpus is None or gpus == "":
        return None
    items = gpus.split(",") if isinstance(gpus, str) else [str(g) for g in gpus]
    items = [g.strip() for g in items]
    if not all(g.isdigit() for g in items):
        raise UserError(f"--gpus {gpus}: give GPU ids separated by commas, e.g. --gpus 0,1")
    return items


def plan_text(plan: SweepPlan, status: dict[str, str]) -> str:
    """The dry-run table: trial, trainable parameters, what the sweep would do."""
    width = max(len(t.name) for t in plan.trials)
    lines = [f"sweep {plan.name} -> {plan.folder}", ""]
    lines.append(f"{'trial':<{width}}  {'trainable':>10}  status")
    for t in plan.trials:
        what = {"pending": "would run", "done": "done (kept)"}.get(status[t.name], status[t.name])
        lines.append(
            f"{t.name:<{width}}  {t.params:>10,}  {what}" + (f": {t.skip}" if t.skip else "")
        )
    return "\n".join(lines)
