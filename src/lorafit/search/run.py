"""`lorafit sweep`: plan a sweep file, run its study here or in N worker processes, leaderboard."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lorafit.errors import UserError
from lorafit.rundir import write_atomic, write_json
from lorafit.search.leaderboard import write_leaderboard
from lorafit.search.samplers import storage_url
from lorafit.search.space import SweepPlan, load_sweep
from lorafit.search.study import WORKER_ENV, open_study, retry_failed, run_local_workers, run_worker

log = logging.getLogger("lorafit")


def sweep(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    parallel: int | None = None,
    gpus: str | list[str] | None = None,
    dry_run: bool = False,
    worker: bool = False,
) -> dict:
    """Run a sweep file's study until it has its trials, then write the leaderboard.

    Args:
        path: the sweep YAML file (grid, runs and/or `search:` spaces).
        overrides: `key=value` strings applied to the base config of every trial.
        parallel: local worker processes (default: one per GPU given, else 1: in this process).
        gpus: GPU ids ("0,1" or ["0", "1"]); worker i sees GPU i mod len(gpus) only.
        dry_run: only plan: the grid's trials (parameters, budget) or the search space.
        worker: join the study as one more worker (another machine or GPU); no retries queued.

    Returns:
        `{"folder", "plan", "study", "leaderboard_csv", "leaderboard_md",
        "status": {trial: status}}`.

    Raises:
        UserError: A bad sweep file (before anything runs), or trials that failed (after
            the leaderboard is written; running the sweep again retries them).
    """
    import os

    gpus = _parse_gpus(gpus)
    parallel = parallel if parallel is not None else max(1, len(gpus or []))
    if parallel < 1:
        raise UserError(f"--parallel {parallel}: give 1 or more worker processes")
    plan = load_sweep(path, overrides)
    result = {"folder": plan.folder, "plan": plan}
    if dry_run:
        result["status"] = {
            t.name: "would fail" if t.error else "skipped" if t.skip else "would run"
            for t in plan.trials
        }
        return result
    plan.folder.mkdir(parents=True, exist_ok=True)
    if worker:
        from lorafit.cores import pin_worker

        pin_worker()  # a local worker started by --parallel: its own share of the cores
        slot = os.environ.get(WORKER_ENV)
        run_worker(plan, plan.seed + int(slot) if slot else None)
        return _finish(plan, result, raise_failed=False)
    write_atomic(plan.folder / "sweep.yaml", Path(path).read_bytes())
    study = open_study(plan, plan.seed)
    write_json(plan.folder / "study.json", study_info(plan))
    queued = retry_failed(study)
    log.info(
        "sweep %s: sampler %s, pruner %s, study %s (%d trials so far%s)",
        plan.name,
        plan.sampler,
        plan.pruner,
        storage_url(plan),
        len(study.trials) - len(queued),
        f"; retrying {', '.join(queued)}" if queued else "",
    )
    for t in plan.trials:
        if t.skip:
            log.info("trial %s: over budget: %s", t.name, t.skip)
    if parallel == 1 and not gpus:
        run_worker(plan, plan.seed)
    else:
        run_local_workers(plan, path, list(overrides), parallel, gpus)
    return _finish(plan, result, raise_failed=True)


def study_info(plan: SweepPlan) -> dict:
    """`study.json`: where the study lives, for `lorafit report` and optuna-dashboard."""
    return {
        "study_name": plan.name,
        "storage": storage_url(plan),
        "metric": plan.metric,
        "direction": plan.direction,
        "sampler": plan.sampler,
        "pruner": plan.pruner,
        "source": str(plan.source),
    }


def _finish(plan: SweepPlan, result: dict, raise_failed: bool) -> dict:
    from lorafit.search.leaderboard import leaderboard_rows

    study = open_study(plan)
    trials = study.get_trials(deepcopy=False)
    csv_path, md_path = write_leaderboard(plan, trials)
    rows = leaderboard_rows(plan, trials)
    result.update(
        study=study,
        leaderboard_csv=csv_path,
        leaderboard_md=md_path,
        status={r["run"]: r["status"] for r in rows},
    )
    failed = [r["run"] for r in rows if r["status"] in ("failed", "interrupted")]
    if failed and raise_failed:
        raise UserError(
            f"sweep {plan.name}: {len(failed)} of {len(rows)} trials failed ({', '.join(failed)}); "
            f"see the note in {plan.folder}/leaderboard.md (and the trial's train.log), fix the cause and run the sweep again (finished trials are kept)"
        )
    return result


def _parse_gpus(gpus) -> list[str] | None:
    if gpus is None or gpus == "":
        return None
    items = gpus.split(",") if isinstance(gpus, str) else [str(g) for g in gpus]
    items = [g.strip() for g in items]
    if not all(g.isdigit() for g in items):
        raise UserError(f"--gpus {gpus}: give GPU ids separated by commas, e.g. --gpus 0,1")
    return items


def plan_text(plan: SweepPlan, status: dict[str, str]) -> str:
    """The dry-run text: the grid's trials with their parameters, or the search space."""
    lines = [
        f"sweep {plan.name} -> {plan.folder} (sampler {plan.sampler}, pruner {plan.pruner}, "
        f"{plan.direction} {plan.metric})",
        "",
    ]
    if plan.trials:
        width = max(len(t.name) for t in plan.trials)
        lines.append(f"{'trial':<{width}}  {'trainable':>10}  status")
        for t in plan.trials:
            count = "-" if t.params is None else f"{t.params:,}"
            lines.append(
                f"{t.name:<{width}}  {count:>10}  {status[t.name]}"
                + (f": {t.skip or t.error}" if t.skip or t.error else "")
            )
        return "\n".join(lines)
    for s in plan.spaces.values():
        if s.kind == "choice":
            what = "choice of " + ", ".join(json.dumps(c) for c in s.choices)
        else:
            what = (
                f"{s.kind} in [{s.low}, {s.high}]"
                + (" (log)" if s.log else "")
                + (f" step {s.step}" if s.step else "")
            )
        lines.append(f"{s.key}: {what}")
    limit = [
        f"{plan.n_trials} trials" if plan.n_trials else "",
        f"{plan.timeout} s" if plan.timeout else "",
    ]
    lines += [
        "",
        "until " + " or ".join(x for x in limit if x) + "; every sampled config is "
        "counted against the budget before it trains",
    ]
    return "\n".join(lines)
