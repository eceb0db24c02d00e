"""A sweep's leaderboard: one row per trial, best first, as CSV (raw numbers) and Markdown.

    from lorafit.leaderboard import write_leaderboard
    write_leaderboard(plan, state)   # -> <sweep folder>/leaderboard.csv, leaderboard.md

`lorafit sweep` rewrites both after every finished trial. Validation values are those of the
best checkpoint's eval row (`summary.json: best_eval`), so they describe the model kept.
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
    "eval_loss": ("val_loss", False),
    "test_accuracy": ("test_accuracy", True),
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
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else str(value)


def leaderboard_rows(plan, state: dict) -> list[dict]:
    """One row per trial, best first by the sweep's metric; unfinished trials last."""
    rows = []
    for t in plan.trials:
        entry = state["trials"].get(t.name, {"status": "pending"})
        row = {"rank": "", "run": t.name, "status": entry["status"]}
        row.update({k: show_value(t.overrides[k]) if k in t.overrides else "" for k in plan.keys})
        row.update(
            trainable_params=t.params,
            val_accuracy=None,
            val_f1=None,
            val_loss=None,
            test_accuracy=None,
            wall_time_s=None,
            run_dir=entry.get("run_dir", ""),
            note=entry.get("reason", ""),
        )
        if entry["status"] == "done":
            row.update(_results(Path(entry["run_dir"])))
        rows.append(row)
    column, higher = METRICS[plan.metric]

    def order(row):
        value = row[column]
        missing = row["status"] != "done" or value is None
        return (missing, 0.0 if missing else (-value if higher else value), row["run"])

    rows.sort(key=order)
    for n, row in enumerate(r for r in rows if r["status"] == "done"):
        row["rank"] = n + 1
    return rows


def _results(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    best = summary.get("best_eval") or {}
    test = summary.get("test") or {}
    return {
        "trainable_params": summary["params"]["trainable"],
        "val_accuracy": best.get("eval_accuracy"),
        "val_f1": best.get("eval_f1"),
        "val_loss": best.get("eval_loss"),
        "test_accuracy": test.get("accuracy"),
        "wall_time_s": summary.get("wall_time_s"),
    }


def write_leaderboard(plan, state: dict) -> tuple[Path, Path]:
    """`leaderboard.csv` (raw numbers) and `leaderboard.md` (readable) in the sweep folder.

    `plan` is a `lorafit.sweep.SweepPlan`; `state` the sweep state (`trials`: name -> entry).
    """
    from lorafit.rundir import write_atomic

    rows = leaderboard_rows(plan, state)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    csv_path, md_path = plan.folder / "leaderboard.csv", plan.folder / "leaderboard.md"
    write_atomic(csv_path, buffer.getvalue())
    write_atomic(md_path, leaderboard_markdown(plan, rows))
    return csv_path, md_path


MD_COLUMNS = [
    ("trainable_params", "trainable params", "{:,}"),
    ("val_accuracy", "val accuracy", "{:.4f}"),
    ("val_f1", "val macro-F1", "{:.4f}"),
    ("val_loss", "val loss", "{:.4f}"),
    ("test_accuracy", "test accuracy", "{:.4f}"),
    ("wall_time_s", "wall time (s)", "{:.1f}"),
]


def leaderboard_markdown(plan, rows: list[dict]) -> str:
    """The leaderboard as a Markdown page: a counts line and one table."""
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
    others = len(rows) - sum(counts.values())
    column = METRICS[plan.metric][0].replace("_", " ").replace("val ", "validation ")
    head = ["rank", "run", "status", *plan.keys, *(h for _, h, _ in MD_COLUMNS), "note"]
    lines = [
        f"# Sweep `{plan.name}`",
        "",
        f"From `{plan.source}`; sorted by {column} ({'lower' if plan.metric == 'eval_loss' else 'higher'} is better). "
        f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed, {others} not finished.",
        "",
        "| " + " | ".join(head) + " |",
        "|"
        + "|".join(
            "---:" if h in ("rank",) or h in [c[1] for c in MD_COLUMNS] else "---" for h in head
        )
        + "|",
    ]
    for r in rows:
        cells = [str(r["rank"]), f"`{r['run']}`", r["status"], *(r[k] for k in plan.keys)]
        cells += ["" if r[k] is None else spec.format(r[k]) for k, _, spec in MD_COLUMNS]
        cells.append(r["note"])
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
