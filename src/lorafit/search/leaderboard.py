"""A sweep's leaderboard, read from its Optuna study: one row per trial, best first.

    from lorafit.search.leaderboard import write_leaderboard
    write_leaderboard(plan, study)   # -> <sweep folder>/leaderboard.csv, leaderboard.md

`lorafit sweep` rewrites both after every finished trial. Validation values are those of the
best checkpoint's eval row (`summary.json: best_eval`), so they describe the model kept.
Statuses: done, pruned (stopped by the pruner; the note says at which step), skipped (over
budget: counted, never trained), failed, interrupted, running, pending (a grid point not
started). A trial retried after a failure or an interruption keeps one row, its last attempt's.
`lorafit report RUN_DIR... --leaderboard leaderboard.csv` shows the CSV as a sortable table.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

#: leaderboard metric -> (leaderboard column, higher is better)
METRICS = {
    "eval_accuracy": ("val_accuracy", True),
    "eval_f1": ("val_f1", True),
    "eval_mcc": ("val_mcc", True),
    "eval_precision": ("val_precision", True),
    "eval_recall": ("val_recall", True),
    "eval_loss": ("val_loss", False),
    "test_accuracy": ("test_accuracy", True),
    # task: regression
    "eval_pearson": ("val_pearson", True),
    "eval_spearman": ("val_spearman", True),
    "test_pearson": ("test_pearson", True),
    # task: multi_label
    "eval_macro_f1": ("val_macro_f1", True),
    "eval_micro_f1": ("val_micro_f1", True),
    "test_macro_f1": ("test_macro_f1", True),
}
#: the sweep metrics of a multi-label run
MULTILABEL_METRICS = ("eval_macro_f1", "eval_micro_f1", "test_macro_f1")
#: the sweep metrics of a regression (a regression's trials select by them; see TASK_METRICS)
REGRESSION_METRICS = ("eval_pearson", "eval_spearman", "test_pearson")
#: which attempt of a trial the leaderboard shows: the most advanced state wins
_PREFERENCE = {
    "done": 0,
    "pruned": 1,
    "skipped": 2,
    "running": 3,
    "waiting": 4,
    "interrupted": 5,
    "failed": 6,
}


def show_value(value: Any) -> str:
    """A setting as leaderboard text; LoRA sections as `0-5 r2 a4 d0.05; 6-11 r8 ...`."""
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, dict) and "layers" in v for v in value)
    ):
        return "; ".join(
            f"{s['layers']}"
            + "".join(f" {k[0]}{s[k]}" for k in ("r", "alpha", "dropout") if k in s)
            for s in value
        )
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else str(value)


def trial_status(trial) -> str | None:
    """A study trial as a leaderboard status (None, not shown: a duplicate grid point, or a
    trial started when `n_trials` were already finished or under way)."""
    from optuna.trial import TrialState

    attrs = trial.user_attrs
    if trial.state == TrialState.COMPLETE:
        return "done"
    if trial.state == TrialState.PRUNED:
        if attrs.get("duplicate") or attrs.get("surplus"):
            return None
        return "skipped" if attrs.get("infeasible") else "pruned"
    if trial.state == TrialState.FAIL:
        return "interrupted" if attrs.get("interrupted") else "failed"
    return {TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}.get(trial.state)


def _latest_attempts(trials) -> dict[str, Any]:
    """name -> the attempt to show (most advanced state, then the newest)."""
    best: dict[str, tuple] = {}
    for t in trials:
        name, status = t.user_attrs.get("name"), trial_status(t)
        if name is None or status is None:
            continue
        rank = (_PREFERENCE[status], -t.number)
        if name not in best or rank < best[name][0]:
            best[name] = (rank, t, status)
    return {name: (t, status) for name, (_, t, status) in best.items()}


def leaderboard_rows(plan, trials) -> list[dict]:
    """One row per trial name, best first by the sweep's metric; unfinished trials last.

    `trials` are the study's `FrozenTrial`s; a grid's points not yet sampled are `pending`
    (or `skipped` when over budget).
    """
    shown = _latest_attempts(trials)
    rows = []
    for name, (t, status) in shown.items():
        rows.append(_row(plan, name, status, t.user_attrs.get("overrides") or {}, t))
    for g in plan.trials:  # grid points the study has not reached yet
        if g.name not in shown:
            row = _row(plan, g.name, "skipped" if g.skip else "pending", g.overrides, None)
            row.update(trainable_params=g.params, note=g.skip or g.error or "")
            rows.append(row)
    column, higher = METRICS[plan.metric]

    def order(row):
        value = row[column]
        missing = row["status"] not in ("done", "pruned") or value is None
        key = 0.0 if missing else (-value if higher else value)
        return (missing, row["status"] != "done", key, row["run"])

    rows.sort(key=order)
    for n, row in enumerate(r for r in rows if r["status"] == "done"):
        row["rank"] = n + 1
    return rows


def _row(plan, name: str, status: str, overrides: dict, trial) -> dict:
    attrs = trial.user_attrs if trial is not None else {}
    row: dict[str, Any] = {"rank": "", "run": name, "status": status}
    row.update({k: show_value(overrides[k]) if k in overrides else "" for k in plan.keys})
    row.update(
        trainable_params=attrs.get("trainable_params"),
        val_accuracy=None,
        val_f1=None,
        val_mcc=None,
        val_precision=None,
        val_recall=None,
        val_loss=None,
        test_accuracy=None,
        val_pearson=None,
        val_spearman=None,
        test_pearson=None,
        val_macro_f1=None,
        val_micro_f1=None,
        test_macro_f1=None,
        wall_time_s=None,
        run_dir=attrs.get("run_dir", ""),
        note=attrs.get("infeasible") or attrs.get("reason", ""),
        trial=trial.number if trial is not None else "",
    )
    run_dir = Path(row["run_dir"]) if row["run_dir"] else None
    if run_dir is not None and (run_dir / "summary.json").is_file():
        row.update(_results(run_dir))
    if status == "pruned" and trial.intermediate_values:
        step = max(trial.intermediate_values)
        row["note"] = f"pruned at step {step} ({trial.intermediate_values[step]:.4f})"
    return row


def _results(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    best = summary.get("best_eval") or {}
    test = summary.get("test") or {}
    return {
        "trainable_params": summary["params"]["trainable"],
        "val_accuracy": best.get("eval_accuracy"),
        "val_f1": best.get("eval_f1"),
        "val_mcc": best.get("eval_mcc"),
        "val_precision": best.get("eval_precision"),
        "val_recall": best.get("eval_recall"),
        "val_loss": best.get("eval_loss"),
        "test_accuracy": test.get("accuracy"),
        "val_pearson": best.get("eval_pearson"),
        "val_spearman": best.get("eval_spearman"),
        "test_pearson": test.get("pearson"),
        "val_macro_f1": best.get("eval_macro_f1"),
        "val_micro_f1": best.get("eval_micro_f1"),
        "test_macro_f1": test.get("macro_f1") if best.get("eval_macro_f1") is not None else None,
        "wall_time_s": summary.get("wall_time_s"),
    }


def metric_value(run_dir: Path, metric: str) -> float | None:
    """The sweep metric of a finished run (the objective value of its trial)."""
    return _results(Path(run_dir))[METRICS[metric][0]]


def selection_metric(metric: str) -> str:
    """The eval row key a trial keeps its best checkpoint by (its train.metric) and reports
    to the pruner: the sweep's metric, or eval_accuracy for test_accuracy (known at the end
    only; a regression's test_pearson: eval_pearson)."""
    return {
        "test_accuracy": "eval_accuracy",
        "test_pearson": "eval_pearson",
        "test_macro_f1": "eval_macro_f1",
    }.get(metric, metric)


def write_leaderboard(plan, trials) -> tuple[Path, Path]:
    """`leaderboard.csv` (raw numbers) and `leaderboard.md` (readable) in the sweep folder."""
    from lorafit.rundir import write_atomic

    rows = leaderboard_rows(plan, trials)
    fields = [
        "rank",
        "run",
        "status",
        *plan.keys,
        *(k for k, _, _ in md_columns(plan)),
        "run_dir",
        "note",
        "trial",
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if row[k] is None else row[k]) for k in fields} for row in rows)
    csv_path, md_path = plan.folder / "leaderboard.csv", plan.folder / "leaderboard.md"
    write_atomic(csv_path, buffer.getvalue())
    write_atomic(md_path, leaderboard_markdown(plan, rows))
    return csv_path, md_path


MD_COLUMNS = [
    ("trainable_params", "trainable params", "{:,}"),
    ("val_accuracy", "val accuracy", "{:.4f}"),
    ("val_f1", "val macro-F1", "{:.4f}"),
    ("val_mcc", "val MCC", "{:.4f}"),
    ("val_loss", "val loss", "{:.4f}"),
    ("test_accuracy", "test accuracy", "{:.4f}"),
    ("wall_time_s", "wall time (s)", "{:.1f}"),
]
#: a regression sweep's columns (its metric is one of REGRESSION_METRICS)
REGRESSION_MD_COLUMNS = [
    ("trainable_params", "trainable params", "{:,}"),
    ("val_pearson", "val Pearson", "{:.4f}"),
    ("val_spearman", "val Spearman", "{:.4f}"),
    ("val_loss", "val loss (MSE)", "{:.4f}"),
    ("test_pearson", "test Pearson", "{:.4f}"),
    ("wall_time_s", "wall time (s)", "{:.1f}"),
]


#: a multi-label sweep's columns (its metric is one of MULTILABEL_METRICS)
MULTILABEL_MD_COLUMNS = [
    ("trainable_params", "trainable params", "{:,}"),
    ("val_macro_f1", "val macro-F1", "{:.4f}"),
    ("val_micro_f1", "val micro-F1", "{:.4f}"),
    ("val_loss", "val loss", "{:.4f}"),
    ("test_macro_f1", "test macro-F1", "{:.4f}"),
    ("wall_time_s", "wall time (s)", "{:.1f}"),
]


def md_columns(plan) -> list:
    """The leaderboard's result columns: a classification's, a regression's or a multi-label sweep's."""
    if plan.metric in REGRESSION_METRICS:
        return REGRESSION_MD_COLUMNS
    return MULTILABEL_MD_COLUMNS if plan.metric in MULTILABEL_METRICS else MD_COLUMNS


def leaderboard_markdown(plan, rows: list[dict]) -> str:
    """The leaderboard as a Markdown page: a counts line and one table."""
    counts = {
        s: sum(r["status"] == s for r in rows) for s in ("done", "pruned", "skipped", "failed")
    }
    others = len(rows) - sum(counts.values())
    column = METRICS[plan.metric][0].replace("_", " ").replace("val ", "validation ")
    columns = md_columns(plan)
    head = ["rank", "run", "status", *plan.keys, *(h for _, h, _ in columns), "note"]
    lines = [
        f"# Sweep `{plan.name}`",
        "",
        f"From `{plan.source}` (sampler {plan.sampler}, pruner {plan.pruner}); sorted by {column} "
        f"({'lower' if plan.metric == 'eval_loss' else 'higher'} is better). "
        f"{counts['done']} done, {counts['pruned']} pruned, {counts['skipped']} skipped, "
        f"{counts['failed']} failed, {others} not finished.",
        "",
        "| " + " | ".join(head) + " |",
        "|"
        + "|".join(
            "---:" if h in ("rank",) or h in [c[1] for c in columns] else "---" for h in head
        )
        + "|",
    ]
    for r in rows:
        cells = [str(r["rank"]), f"`{r['run']}`", r["status"], *(r[k] for k in plan.keys)]
        cells += ["" if r[k] is None else spec.format(r[k]) for k, _, spec in columns]
        cells.append(r["note"])
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
