"""A sweep run as an Optuna study: sampling, storage, workers and retries are Optuna's.

    lorafit sweep configs/sweeps/minilm_search.yaml --parallel 2
    lorafit sweep configs/sweeps/minilm_search.yaml --worker    # on another machine / GPU

What stays ours: each sampled configuration is counted on the weightless model first (the
budget check of `lorafit train` and `lorafit plan`); one over budget is recorded as a pruned
trial with the user attribute `infeasible` and never gets a run directory (TPE and GP also
see its excess as a violated constraint, and learn to avoid it). The rest train in this
process with `lorafit.train.train(cfg, on_eval=...)`: every evaluation is reported to the
trial and the pruner may stop it. Each trial trains into `<folder>/<trial>-<time>/`; a trial
retried after a failure or an interruption continues its run directory (`train --resume`)
and a finished one is read back, not redone.

The study lives in `<folder>/study.db` (SQLite) unless `storage:` names an RDB URL or a
journal file; `<folder>/study.json` says where, for `lorafit report` and the dashboard.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lorafit import hooks
from lorafit.config import Config, config_to_dict
from lorafit.errors import UserError
from lorafit.search.leaderboard import (
    metric_value,
    selection_metric,
    trial_status,
    write_leaderboard,
)
from lorafit.search.samplers import make_pruner, make_sampler, open_storage, storage_url
from lorafit.search.space import SweepPlan, check_budget, sample, trial_config

if TYPE_CHECKING:
    from collections import Counter

log = logging.getLogger("lorafit")

WORKER_ENV = "LORAFIT_SWEEP_WORKER"  # the worker's index: its sampler seed is seed + index


class TrialFailed(Exception):
    """Training of a trial failed; the reason is in the trial's user attribute `reason`."""


def open_study(plan: SweepPlan, seed: int | None = None):
    """The sweep's study (created on first use; every worker loads the same one)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage_url(plan).startswith("sqlite:///"):
        plan.folder.mkdir(parents=True, exist_ok=True)
    try:
        study = optuna.create_study(
            storage=open_storage(plan),
            study_name=plan.name,
            load_if_exists=True,
            sampler=make_sampler(plan, seed),
            pruner=make_pruner(plan),
            direction=plan.direction,
        )
    except ValueError as e:
        raise UserError(f"{plan.source}: study {plan.name}: {e}") from None
    if study.direction.name.lower() != plan.direction:
        raise UserError(
            f"{plan.source}: metric {plan.metric} is {plan.direction}d, but study {plan.name} in "
            f"{storage_url(plan)} was created to {study.direction.name.lower()}; use another name:"
        )
    return study


# ---------------------------------------------------------------- one trial


def _run_dirs(folder: Path, name: str) -> list[Path]:
    """The run directories `lorafit train` made for trial `name`, oldest first."""
    pattern = re.compile(re.escape(name) + r"-\d{8}-\d{6}(?:-(\d+))?")
    found = [p for p in folder.glob(f"{name}-*") if p.is_dir() and pattern.fullmatch(p.name)]

    def order(p: Path) -> tuple[str, int]:
        match = pattern.fullmatch(p.name)
        assert match is not None  # found holds only names that match
        return (p.name[len(name) + 1 : len(name) + 16], int(match[1] or 1))

    return sorted(found, key=order)


def _same_config(run_dir: Path, cfg: Config) -> bool:
    """Whether a run used this trial's config (run.dir aside: it may be relative)."""
    import yaml

    try:
        done = cast(dict, OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")))
    except (OSError, OmegaConfBaseException, yaml.YAMLError):  # unreadable: not this config
        return False
    want = config_to_dict(cfg)
    for d in (done, want):
        d.get("run", {}).pop("dir", None)
    return done == want


def earlier_run(plan: SweepPlan, name: str, cfg: Config) -> Path | None:
    """The trial's newest run directory with this config (finished or not), to reuse."""
    for run_dir in _run_dirs(plan.folder, name)[::-1]:
        if _same_config(run_dir, cfg):
            return run_dir
    return None


def _duplicate(study, trial, name: str) -> bool:
    """Whether an earlier live or finished attempt has this name (a grid point sampled twice).

    Only earlier trials (lower numbers) count: two workers that draw the same point at the
    same moment see each other running, and the earlier one must go on, or neither would.
    """
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False):
        if t.number < trial.number and t.user_attrs.get("name") == name:
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING) or (
                t.state == TrialState.PRUNED and trial_status(t) is not None
            ):
                return True
    return False


def _surplus(plan: SweepPlan, study, trial) -> bool:
    """Whether the earlier trials already make `n_trials` (finished, pruned or running).

    Workers that finish at the same moment each see one trial missing and each start one;
    only earlier trials (lower numbers) count, so the first of them goes on and the others
    are surplus. Retries of failed trials are not counted twice: a failure does not count.
    """
    if plan.sampler == "grid" or plan.n_trials is None:
        return False
    earlier = [trial_status(t) for t in study.get_trials(deepcopy=False) if t.number < trial.number]
    return sum(status in ("done", "pruned", "running") for status in earlier) >= plan.n_trials


def objective(plan: SweepPlan, trial) -> float:
    """Sample, count against the budget, train (or resume, or read back), return the metric."""
    import optuna

    from lorafit.train import train

    if _surplus(plan, trial.study, trial):  # before sampling: the sampler learns nothing from it
        trial.set_user_attr("surplus", True)
        raise optuna.TrialPruned(f"{plan.n_trials} trials are finished or under way")
    name, overrides = sample(plan, trial)
    trial.set_user_attr("name", name)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr("overrides", json.loads(json.dumps(overrides)))
    hooks.reached("trial-start")  # tests only (LORAFIT_TEST_HOOKS): no-op otherwise
    if plan.sampler == "grid" and _duplicate(trial.study, trial, name):
        trial.set_user_attr("duplicate", True)
        raise optuna.TrialPruned(f"{name}: already run by another worker")
    try:
        cfg = trial_config(plan, overrides, name)
        params, over = check_budget(cfg)
    except UserError as e:
        trial.set_user_attr("reason", str(e))
        raise TrialFailed(str(e)) from None
    trial.set_user_attr("trainable_params", params)
    if over:
        trial.set_user_attr("infeasible", over)
        trial.set_user_attr("budget_excess", params - cfg.budget)
        log.info("trial %s: skipped: %s", name, over)
        raise optuna.TrialPruned(over)
    previous = earlier_run(plan, name, cfg)
    eval_key = selection_metric(plan.metric)  # also the trial's train.metric (trial_config)
    pruned = []

    def on_eval(step: int, values: dict) -> bool:
        trial.report(values[eval_key], step)
        if trial.should_prune():
            pruned.append(step)
            return True
        return False

    log.info(
        "trial %s (#%d): %s",
        name,
        trial.number,
        "resuming " + str(previous) if previous else "training",
    )
    try:
        if previous is not None:
            trial.set_user_attr("run_dir", str(previous))
            run_dir = train(resume=previous, on_eval=on_eval)
        else:
            run_dir = train(cfg, on_eval=on_eval)
    except KeyboardInterrupt:
        trial.set_user_attr("interrupted", True)
        _record_run_dir(trial, plan, name)
        raise
    except Exception as e:  # noqa: BLE001 - any training error fails this trial, not the study
        reason = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        trial.set_user_attr("reason", (reason.splitlines() or [""])[0][:300])
        _record_run_dir(trial, plan, name)
        log.info("trial %s: failed (%s)", name, trial.user_attrs.get("reason", e))
        raise TrialFailed(str(e)) from None
    trial.set_user_attr("run_dir", str(run_dir))
    value = metric_value(run_dir, plan.metric)
    if pruned:
        log.info("trial %s: pruned at step %d", name, pruned[0])
        raise optuna.TrialPruned(f"pruned at step {pruned[0]}")
    log.info("trial %s: done, %s %s", name, plan.metric, value)
    if value is None:
        trial.set_user_attr("reason", f"{run_dir}/summary.json has no {plan.metric}")
        raise TrialFailed(trial.user_attrs["reason"])
    return value


def _record_run_dir(trial, plan: SweepPlan, name: str) -> None:
    dirs = _run_dirs(plan.folder, name)
    if dirs and "run_dir" not in trial.user_attrs:
        trial.set_user_attr("run_dir", str(dirs[-1]))


# ---------------------------------------------------------------- when to stop, retries


def _counts(study) -> Counter[str | None]:
    from collections import Counter

    return Counter(trial_status(t) for t in study.get_trials(deepcopy=False))


def study_done(plan: SweepPlan, study) -> bool:
    """Enough trials: the grid is covered, or n_trials are finished or under way."""
    c = _counts(study)
    if c["waiting"]:
        return False
    if plan.sampler == "grid":
        started = {t.user_attrs.get("name") for t in study.get_trials(deepcopy=False)}
        return len(study.trials) >= plan.grid_size and all(t.name in started for t in plan.trials)
    if plan.n_trials is None:
        return False
    if c["skipped"] >= 10 * plan.n_trials + 20:
        log.info("sweep %s: stopping, %d sampled configs were over budget", plan.name, c["skipped"])
        return True
    return c["done"] + c["pruned"] + c["running"] >= plan.n_trials


def retry_failed(study) -> list[str]:
    """Queue again every failed or interrupted trial that has no later attempt (same params)."""
    trials = study.get_trials(deepcopy=False)
    later: dict[Any, list] = {}
    for t in trials:
        later.setdefault(t.user_attrs.get("name"), []).append(t)
    queued = []
    for t in trials:
        name = t.user_attrs.get("name")
        if trial_status(t) not in ("failed", "interrupted") or name is None:
            continue
        if any(o.number > t.number for o in later[name]):
            continue
        attrs = {"name": name, "retry_of": t.user_attrs.get("retry_of", t.number)}
        study.enqueue_trial(t.params, user_attrs=attrs, skip_if_exists=False)
        queued.append(name)
    return queued


def run_worker(plan: SweepPlan, seed: int | None) -> None:
    """Join the study and run trials until it has enough (or `timeout` seconds passed)."""
    import optuna

    study = open_study(plan, seed)

    def after_trial(study, trial):
        write_leaderboard(plan, study.get_trials(deepcopy=False))
        if study_done(plan, study):
            study.stop()

    if study_done(plan, study):
        log.info("sweep %s: nothing left to run in %s", plan.name, storage_url(plan))
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(
            lambda trial: objective(plan, trial),
            timeout=plan.timeout,
            catch=(TrialFailed,),
            callbacks=[after_trial],
            gc_after_trial=True,
        )


# ---------------------------------------------------------------- several local workers


def _worker_env(slot: int, parallel: int, gpus: list[str] | None) -> dict:
    from lorafit.cores import CPUS_ENV, share_of_cpus

    env = dict(os.environ)
    # N processes on one machine: each gets its own block of the cores and chooses its threads
    # within it (cores.py); with more workers than cores each one's auto threads see the others
    share = share_of_cpus(slot, parallel)
    if share:
        env[CPUS_ENV] = ",".join(map(str, share))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env[WORKER_ENV] = str(slot)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    return env


def run_local_workers(plan: SweepPlan, path, overrides, parallel: int, gpus) -> None:
    """N `lorafit sweep FILE --worker` processes on this machine, each logging to worker-<i>.log."""
    cmd = [sys.executable, "-m", "lorafit", "sweep", str(path), *overrides, "--worker"]
    procs = []
    try:
        for slot in range(parallel):
            out = open(plan.folder / f"worker-{slot}.log", "a", encoding="utf-8")
            procs.append(
                (
                    subprocess.Popen(
                        cmd,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=_worker_env(slot, parallel, gpus),
                    ),
                    out,
                )
            )
            gpu = f" on GPU {gpus[slot % len(gpus)]}" if gpus else ""
            log.info("worker %d started%s (log %s)", slot, gpu, out.name)
        for proc, out in procs:
            proc.wait()
            out.close()
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too (same process group); one that was started elsewhere
        # or ignores it gets its own SIGINT after a few seconds, then is killed after a minute
        deadline = time.time() + 5
        for proc, _ in procs:
            if proc.poll() is None:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGINT)
        for proc, out in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out.close()
        raise
