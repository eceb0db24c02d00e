"""Read a run directory back, and regenerate its readable `training_log.txt`.

    from lorafit.runlog import write_training_log
    write_training_log("runs/agnews-r8-20261122-101500")   # -> RUN_DIR/training_log.txt

Everything here works from the files `lorafit train` leaves behind (docs/get-started/run-directory.md):
`config.yaml`, `metrics.jsonl`, `summary.json`, `model_description.json` and
`evaluations/*.json`. A run without `summary.json` was interrupted (or is still running);
the log says so and takes what it can from `metrics.jsonl`. The readers below are shared
with `lorafit.plots` and `lorafit.report`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

from omegaconf import OmegaConf

from lorafit.errors import UserError
from lorafit.rundir import write_atomic


class MetricsFormatError(UserError, ValueError):
    """A `metrics.jsonl` line that is not a JSON object with `kind` and `step`."""


# ---------------------------------------------------------------------------------------------
# Readers


def check_run_dir(run_dir: str | Path) -> Path:
    """Return `run_dir` as a Path, or raise `UserError` if it is not a folder."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"{path}: no such run directory; give a folder made by `lorafit train`")
    return path


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of `RUN_DIR/metrics.jsonl` in file order (`[]` if the file is missing).

    Raises:
        MetricsFormatError: (a `ValueError`) naming the file and line of a malformed row.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MetricsFormatError(
                    f"{path}: line {n} is not valid JSON ({e.msg}); fix or delete that line"
                ) from None
            if not isinstance(row, dict) or "kind" not in row or "step" not in row:
                raise MetricsFormatError(
                    f"{path}: line {n} is not a metrics row (a JSON object with 'kind' and 'step')"
                )
            rows.append(row)
    return rows


def read_json(path: str | Path) -> dict | None:
    """A JSON file as a dict, `None` if it does not exist; `UserError` if it is malformed."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def read_config(run_dir: str | Path) -> dict:
    """`RUN_DIR/config.yaml` as a nested dict (`{}` if the file is missing)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return {}
    try:
        return cast(dict, OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {})
    except Exception as e:  # OmegaConf raises yaml and its own errors
        raise UserError(f"{path}: cannot read the YAML ({str(e).splitlines()[0]})") from None


def read_evaluations(run_dir: str | Path) -> dict[str, dict]:
    """`{file stem: evaluation dict}` for `RUN_DIR/evaluations/*.json`, sorted by name."""
    folder = Path(run_dir) / "evaluations"
    if not folder.is_dir():
        return {}
    # read_json's None is for a missing file; these were just listed
    return {p.stem: cast(dict, read_json(p)) for p in sorted(folder.glob("*.json"))}


def config_value(config: dict, dotted: str, default=None):
    """`config_value(cfg, "lora.r")` -> `cfg["lora"]["r"]`, or `default` if any key is absent."""
    node = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def run_label(run_dir: str | Path, summary: dict | None = None) -> str:
    """The run's name from `summary.json`, else the directory name."""
    if summary and summary.get("run_name"):
        return str(summary["run_name"])
    return Path(run_dir).resolve().name


def rows_of(rows: list[dict], kind: str) -> list[dict]:
    """The rows of one `kind` ("train", "eval" or "test")."""
    return [r for r in rows if r.get("kind") == kind]


def best_eval_row(rows: list[dict], summary: dict | None, metric: str = "eval_accuracy"):
    """The eval row of the best step: from `summary.json`, else `is_best`, else by `metric`."""
    if summary and summary.get("best_eval"):
        return summary["best_eval"]
    evals = [r for r in rows_of(rows, "eval") if r.get(metric) is not None]
    if summary and summary.get("best_step") is not None:
        at_step = [r for r in evals if r["step"] == summary["best_step"]]
        if at_step:
            return at_step[-1]
    flagged = [r for r in evals if r.get("is_best")]
    if flagged:
        return flagged[-1]
    if not evals:
        return None
    pick = min if metric.endswith("loss") else max
    return pick(evals, key=lambda r: r[metric])


#: final_test_metrics' keys -> (the key in a metrics dict, the key in a test row)
_TEST_KEYS = {
    "loss": ("loss", "test_loss"),
    "accuracy": ("accuracy", "test_accuracy"),
    "f1": ("macro_f1", "test_f1"),
    "pearson": ("pearson", "test_pearson"),
    "spearman": ("spearman", "test_spearman"),
    "macro_f1": ("macro_f1", "test_macro_f1"),
    "micro_f1": ("micro_f1", "test_micro_f1"),
}


def final_test_metrics(rows: list[dict], summary: dict | None) -> dict | None:
    """`{loss, accuracy, f1, pearson, spearman, macro_f1, micro_f1}` of the test evaluation
    (summary first, then the test row); a figure the task does not have is None."""
    test = (summary or {}).get("test")
    if test:
        return {k: test.get(full, test.get(row)) for k, (full, row) in _TEST_KEYS.items()}
    tests = rows_of(rows, "test")
    if not tests:
        return None
    return {k: tests[-1].get(row) for k, (_, row) in _TEST_KEYS.items()}


def task_of(summary: dict | None, config: dict | None) -> str:
    """classification or regression: the run's `task` (runs made before it: classification)."""
    return (summary or {}).get("task") or config_value(config or {}, "task", "classification")


def param_counts(run_dir: str | Path, summary: dict | None) -> dict | None:
    """`{total, trainable, frozen, trainable_pct}` from summary.json or model_description.json."""
    if summary and summary.get("params"):
        return summary["params"]
    description = read_json(Path(run_dir) / "model_description.json")
    return (description or {}).get("params")


def format_duration(seconds: float | None) -> str:
    """`754.2` -> `"12m 34s"`; `None` -> `"-"`."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    h, m, s = s // 3600, s % 3600 // 60, s % 60
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s" if m else f"{s}s"


# ---------------------------------------------------------------------------------------------
# training_log.txt


def write_training_log(run_dir: str | Path) -> Path:
    """Regenerate `RUN_DIR/training_log.txt` from config.yaml, metrics.jsonl and summary.json.

    Args:
        run_dir: a run directory made by `lorafit train` (finished or interrupted).

    Returns:
        The path of the written log.

    Raises:
        UserError: if `run_dir` is not a folder or one of its JSON files is malformed.
        MetricsFormatError: (a `ValueError`) for a malformed `metrics.jsonl` line.
    """
    run = check_run_dir(run_dir)
    rows = read_metrics(run)
    summary = read_json(run / "summary.json")
    config = read_config(run)
    parts = [
        _header(run, config, summary),
        _section("Configuration", _config_lines(config)),
        _section("Parameters", _param_lines(param_counts(run, summary))),
        _section("Progress", progress_table(rows, task_of(summary, config))),
        _section("Final results", _result_lines(run, rows, summary, config)),
    ]
    path = run / "training_log.txt"
    write_atomic(path, "\n\n".join(parts) + "\n")
    return path


def _section(title: str, lines: list[str]) -> str:
    return "\n".join([title, "-" * len(title), *lines])


def _header(run: Path, config: dict, summary: dict | None) -> str:
    s = summary or {}
    title = f"lorafit training log: {run_label(run, summary)}"
    finished = s.get("finished_at") or (
        "not finished: summary.json is missing (the run was interrupted or is still running)"
    )
    precision = f" (mixed precision: {s['mixed_precision']})" if s.get("mixed_precision") else ""
    fields = [
        ("run directory", str(run)),
        ("model", s.get("model_name") or config_value(config, "model.name", "-")),
        ("started", s.get("started_at") or "-"),
        ("finished", finished),
        ("device", f"{s.get('device') or '-'}{precision}"),
        ("seed", s.get("seed", config_value(config, "train.seed", "-"))),
        ("git commit", s.get("git_commit") or "-"),
        ("command", s.get("command") or "-"),
    ]
    return "\n".join([title, "=" * len(title), *(f"{k:<14} {v}" for k, v in fields)])


def flatten_config(config: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested dicts (and lists of dicts) as `(dotted.key, value)` pairs in file order."""
    pairs: list[tuple[str, object]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            pairs += flatten_config(value, name + ".")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                pairs += flatten_config(item, f"{name}[{i}].")
        else:
            pairs.append((name, value))
    return pairs


def _config_lines(config: dict) -> list[str]:
    if not config:
        return ["(config.yaml is missing)"]
    return [f"{key}: {_show(value)}" for key, value in flatten_config(config)]


def _show(value) -> str:
    """Strings bare, everything else as JSON (null, true, [query, value] ...)."""
    return value if isinstance(value, str) else json.dumps(value)


def _param_lines(params: dict | None) -> list[str]:
    if not params:
        return ["(not recorded: no summary.json or model_description.json)"]
    lines = [f"{k:<16} {params[k]:>14,}" for k in ("total", "trainable", "frozen") if k in params]
    if params.get("trainable_pct") is not None:
        lines.append(f"{'trainable share':<16} {params['trainable_pct']:>14.4f} %")
    return lines


def _num(key: str, spec: str):
    """A cell formatter: `row[key]` with format `spec`, blank when absent."""

    def cell(row: dict) -> str:
        value = row.get(key)
        return "" if value is None else format(value, spec)

    return cell


def _loss(row: dict) -> str:
    value = row.get("eval_loss", row.get("test_loss"))
    return "" if value is None else f"{value:.4f}"


def _score(name: str):
    def cell(row: dict) -> str:
        value = row.get(f"eval_{name}", row.get(f"test_{name}"))
        return "" if value is None else f"{value:.4f}"

    return cell


#: (header, width, formatter) of the progress table; eval and test rows share the score columns.
PROGRESS_COLUMNS = [
    ("step", 7, _num("step", "d")),
    ("epoch", 7, _num("epoch", ".2f")),
    ("time_s", 9, _num("time_s", ".1f")),
    ("kind", 6, lambda r: str(r.get("kind", ""))),
    ("lr", 10, _num("lr", ".3e")),
    ("train_loss", 11, _num("train_loss", ".4f")),
    ("loss", 8, _loss),
    ("accuracy", 9, _score("accuracy")),
    ("macro_f1", 9, _score("f1")),
    ("samples/s", 10, _num("samples_per_s", ".1f")),
    ("tokens/s", 10, _num("tokens_per_s", ".0f")),
    ("best", 5, lambda r: "*" if r.get("is_best") else ""),
]

_KIND_ORDER = {"train": 0, "eval": 1, "test": 2}


def _task_columns(scores: list) -> list:
    """The progress table with `scores` where a classification has accuracy and macro-F1."""
    out = []
    for column in PROGRESS_COLUMNS:
        if column[0] == "accuracy":
            out += scores
        elif column[0] != "macro_f1":
            out.append(column)
    return out


#: the progress table of a regression (Pearson, Spearman) and of a multi-label run (its F1s)
REGRESSION_COLUMNS = _task_columns(
    [("pearson", 9, _score("pearson")), ("spearman", 9, _score("spearman"))]
)
MULTILABEL_COLUMNS = _task_columns(
    [("macro_f1", 9, _score("macro_f1")), ("micro_f1", 9, _score("micro_f1"))]
)


def progress_table(rows: list[dict], task: str = "classification") -> list[str]:
    """Train, eval and test rows in step order as fixed-width text lines."""
    if not rows:
        return ["(no rows in metrics.jsonl yet)"]
    columns = {"regression": REGRESSION_COLUMNS, "multi_label": MULTILABEL_COLUMNS}.get(
        task, PROGRESS_COLUMNS
    )
    ordered = sorted(rows, key=lambda r: (r["step"], _KIND_ORDER.get(r["kind"], 3)))
    header = "".join(f"{name:>{width}}" for name, width, _ in columns)
    lines = [header, "-" * len(header)]
    for row in ordered:
        cells = "".join(f"{fmt(row):>{width}}" for _, width, fmt in columns)
        lines.append(cells.rstrip())
    return lines


def _metrics_line(
    label: str,
    loss,
    accuracy,
    f1,
    task: str = "classification",
    pearson=None,
    spearman=None,
    micro=None,
) -> str:
    def show(x):
        return "-" if x is None else f"{x:.4f}"

    if task == "multi_label":  # f1: the macro-F1 over the labels
        return f"{label:<14} loss {show(loss)}   macro-F1 {show(f1)}   micro-F1 {show(micro)}"
    if task == "regression":
        return f"{label:<14} MSE {show(loss)}   Pearson {show(pearson)}   Spearman {show(spearman)}"
    return f"{label:<14} loss {show(loss)}   accuracy {show(accuracy)}   macro-F1 {show(f1)}"


def _result_lines(run: Path, rows: list[dict], summary: dict | None, config: dict) -> list[str]:
    metric = (summary or {}).get("metric") or config_value(config, "train.metric", "eval_accuracy")
    lines = []
    if summary is None:
        last = max((r["step"] for r in rows), default=None)
        source = f"up to step {last}" if last is not None else "which has no rows yet"
        lines += [
            "summary.json is missing: the run did not finish (interrupted or still running).",
            f"The results below come from metrics.jsonl, {source}.",
            "",
        ]
    task = task_of(summary, config)
    lines += _best_lines(rows, summary, metric, task)
    test = final_test_metrics(rows, summary)
    if test:
        lines.append(
            _metrics_line(
                "test",
                test["loss"],
                test["accuracy"],
                test["f1"],
                task,
                test["pearson"],
                test["spearman"],
                test["micro_f1"],
            )
        )
    for stem, ev in read_evaluations(run).items():
        line = _metrics_line(
            "evaluation",
            ev.get("loss"),
            ev.get("accuracy"),
            ev.get("macro_f1"),
            task,
            ev.get("pearson"),
            ev.get("spearman"),
            ev.get("micro_f1"),
        )
        lines.append(f"{line}   (evaluations/{stem}.json, {ev.get('rows', '?')} rows)")
    if summary is not None:
        wall = summary.get("wall_time_s")
        seconds = f" ({wall:.1f} s)" if wall is not None else ""
        lines.append(f"{'stopped early':<14} {'yes' if summary.get('stopped_early') else 'no'}")
        lines.append(f"{'wall time':<14} {format_duration(wall)}{seconds}")
    elif rows:
        elapsed = max((r.get("time_s") or 0.0) for r in rows)
        lines.append(f"{'elapsed':<14} {format_duration(elapsed)} at the last row")
    return lines


def _best_lines(
    rows: list[dict], summary: dict | None, metric: str, task: str = "classification"
) -> list[str]:
    best = best_eval_row(rows, summary, metric)
    lines = [f"{'metric':<14} {metric}"]
    if best is None:
        return [*lines, f"{'best':<14} no evaluation yet"]
    value = (summary or {}).get("best_value", best.get(metric))
    final = (summary or {}).get("final_step")
    shown = "-" if value is None else f"{value:.4f}"
    of = f" (of {final})" if final is not None else ""
    loss, acc, f1 = (
        best.get("eval_loss"),
        best.get("eval_accuracy"),
        best.get("eval_f1", best.get("eval_macro_f1")),
    )
    return [
        *lines,
        f"{'best':<14} {shown} at step {best['step']}{of}",
        _metrics_line(
            "validation",
            loss,
            acc,
            f1,
            task,
            best.get("eval_pearson"),
            best.get("eval_spearman"),
            best.get("eval_micro_f1"),
        ),
    ]
