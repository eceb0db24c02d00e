"""One static HTML report comparing runs: settings, results, curves, confusion matrices.

    from lorafit.report import write_report
    write_report(sorted(Path("runs").glob("*")), "report.html", leaderboard="sweep.csv")

The file stands alone: images are base64 PNG data URIs, CSS and the sorting script are
inline, and nothing is fetched from the network, so it can be mailed or archived as is. Every
value read from a run is passed through `html.escape`. Click a column header to sort.
"""

from __future__ import annotations

import base64
import csv
import html
from datetime import datetime
from pathlib import Path

from lorafit.errors import UserError
from lorafit.plots import (
    figure_png,
    plot_confusion,
    plot_curves_overlay,
    plot_scatter,
    plot_score_vs_time,
    score_point,
    series,
)
from lorafit.rundir import write_atomic
from lorafit.runlog import (
    best_eval_row,
    check_run_dir,
    config_value,
    final_test_metrics,
    format_duration,
    param_counts,
    read_config,
    read_evaluations,
    read_json,
    read_metrics,
    run_label,
    task_of,
)

#: Overlaid curves in the report: (metrics.jsonl key, section caption).
OVERLAYS = [
    ("eval_accuracy", "Validation accuracy"),
    ("eval_pearson", "Validation Pearson"),
    ("eval_macro_f1", "Validation macro-F1 (multi-label)"),
    ("train_loss", "Train loss"),
]


class OutputExistsError(UserError, FileExistsError):
    """The report file exists and `overwrite` was not given."""


def write_report(
    run_dirs: list[str | Path],
    output: str | Path = "report.html",
    leaderboard: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a self-contained HTML report of `run_dirs` to `output`.

    Args:
        run_dirs: run directories (finished or interrupted); duplicates are dropped.
        output: the HTML file to write.
        leaderboard: optional sweep leaderboard CSV, shown as a second sortable table; with
            the sweep's `study.json` beside it, also the metric by trial and the parameter
            importances of its Optuna study.
        overwrite: replace `output` if it exists.

    Returns:
        The path of the written report.

    Raises:
        OutputExistsError: (a `FileExistsError`) if `output` exists and `overwrite` is False.
        UserError: no runs given, a path is not a run directory, or the leaderboard is missing.
    """
    out = Path(output)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; pass --overwrite to replace it")
    runs = collect_runs(run_dirs)
    board = read_leaderboard(leaderboard) if leaderboard is not None else None
    study = _read_study(leaderboard) if leaderboard is not None else None
    page = render_report(runs, board, leaderboard, study)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, page)
    return out


def collect_runs(run_dirs: list[str | Path]) -> list[dict]:
    """Everything the report shows about each run, read from its directory."""
    # resolve() also folds `runs/latest` (a symlink to a run) into the run it points at
    paths = list(dict.fromkeys(Path(d).resolve() for d in run_dirs))
    if not paths:
        raise UserError("report: no run directories given; e.g. `lorafit report runs/*`")
    for path in paths:
        check_run_dir(path)
        if not (path / "config.yaml").is_file() and not (path / "metrics.jsonl").is_file():
            raise UserError(f"{path}: not a run directory (no config.yaml or metrics.jsonl)")
    runs = [_collect_run(path) for path in paths]
    labels = [run["label"] for run in runs]
    for run in runs:  # same rule as the overlay legend: a shared name gives way to the folder
        if labels.count(run["label"]) > 1:
            run["label"] = run["dir"].name
    return runs


def _collect_run(path: Path) -> dict:
    summary, rows, config = read_json(path / "summary.json"), read_metrics(path), read_config(path)
    metric = (summary or {}).get("metric") or config_value(config, "train.metric", "eval_accuracy")
    return {
        "dir": path,
        "label": run_label(path, summary),
        "finished": summary is not None,
        "config": config,
        "summary": summary or {},
        "rows": rows,
        "best": best_eval_row(rows, summary, metric),
        "test": final_test_metrics(rows, summary),
        "params": param_counts(path, summary) or {},
        "evaluations": read_evaluations(path),
    }


def read_leaderboard(path: str | Path) -> list[dict]:
    """The rows of a sweep leaderboard CSV as dicts (header = keys)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--leaderboard {path}: file not found")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# Table cells: (shown text, sort key); numbers sort as numbers, blanks sort last.


def _cell(value, spec: str = "") -> tuple[str, str]:
    if value is None or value == "" or value == []:
        return "-", ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _text(value), _text(value).lower()
    return format(value, spec), repr(float(value))


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return "default" if value is None else str(value)


def _layers(config: dict) -> str:
    layers = _text(config_value(config, "lora.layers", "all"))
    sections = config_value(config, "lora.sections") or []
    return f"{layers} + {len(sections)} sections" if sections else layers


def _get(run: dict, key: str):
    return config_value(run["config"], key)


def _cfg(key: str, spec: str = ""):
    return lambda run: _cell(config_value(run["config"], key), spec)


def _best(key: str, spec: str):
    return lambda run: _cell((run["best"] or {}).get(key), spec)


def _model(run: dict) -> tuple[str, str]:
    return _cell(run["summary"].get("model_name") or config_value(run["config"], "model.name"))


#: The runs table: (header, sort type, cell function of a collected run).
RUN_COLUMNS = [
    ("run", "text", lambda run: (run["label"], run["label"].lower())),
    ("model", "text", _model),
    ("r", "num", _cfg("lora.r", "d")),
    ("alpha", "num", _cfg("lora.alpha", "g")),
    ("dropout", "num", _cfg("lora.dropout", "g")),
    ("layers", "text", lambda run: (_layers(run["config"]), _layers(run["config"]).lower())),
    ("target modules", "text", lambda run: _cell(_text(_get(run, "lora.target_modules")))),
    ("lr", "num", _cfg("train.lr", ".1e")),
    ("optimizer", "text", _cfg("train.optimizer")),
    ("trainable", "num", lambda run: _cell(run["params"].get("trainable"), ",d")),
    ("total", "num", lambda run: _cell(run["params"].get("total"), ",d")),
    ("best val acc", "num", _best("eval_accuracy", ".2%")),
    ("best val F1", "num", _best("eval_f1", ".2%")),
    ("best val MCC", "num", _best("eval_mcc", ".4f")),
    ("best step", "num", _best("step", "d")),
    ("test acc", "num", lambda run: _cell((run["test"] or {}).get("accuracy"), ".2%")),
    ("wall time", "num", lambda run: _wall_time(run)),
]
#: shown only when a regression run is in the report (task: regression)
REGRESSION_COLUMNS = [
    ("best val Pearson", "num", _best("eval_pearson", ".4f")),
    ("best val Spearman", "num", _best("eval_spearman", ".4f")),
    ("test Pearson", "num", lambda run: _cell((run["test"] or {}).get("pearson"), ".4f")),
]


#: shown only when a multi-label run is in the report (task: multi_label)
MULTILABEL_COLUMNS = [
    ("best val macro-F1 (labels)", "num", _best("eval_macro_f1", ".2%")),
    ("best val micro-F1 (labels)", "num", _best("eval_micro_f1", ".2%")),
    (
        "test macro-F1 (labels)",
        "num",
        lambda run: _cell(
            (run["test"] or {}).get("macro_f1")
            if task_of(run["summary"], run["config"]) == "multi_label"
            else None,
            ".2%",
        ),
    ),
]


def run_columns(runs: list[dict]) -> list:
    """The runs table's columns: a regression's correlations and a multi-label run's F1s join
    when one of the runs is one."""
    tasks = {task_of(run["summary"], run["config"]) for run in runs}
    extra = (REGRESSION_COLUMNS if "regression" in tasks else []) + (
        MULTILABEL_COLUMNS if "multi_label" in tasks else []
    )
    if not extra:
        return RUN_COLUMNS
    at = [name for name, _, _ in RUN_COLUMNS].index("wall time")
    return RUN_COLUMNS[:at] + extra + RUN_COLUMNS[at:]


def _wall_time(run: dict) -> tuple[str, str]:
    if run["finished"]:
        seconds = run["summary"].get("wall_time_s")
        return (format_duration(seconds), "" if seconds is None else repr(float(seconds)))
    return "unfinished", ""


# ---------------------------------------------------------------------------------------------
# HTML


def render_report(runs: list[dict], board: list[dict] | None, board_path=None, study=None) -> str:
    """The whole HTML page as a string."""
    stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    body = [
        f"<h1>lorafit report: {len(runs)} run{'s' if len(runs) != 1 else ''}</h1>",
        f'<p class="meta">generated {_e(stamp)}. Click a column header to sort.</p>',
        "<h2>Runs</h2>",
        _runs_table(runs),
        _curves_section(runs),
        _time_section(runs),
        _confusion_section(runs),
    ]
    if board is not None:
        body.append(_leaderboard_section(board, board_path))
    if study is not None:
        body.append(_study_section(study))
    return PAGE.format(css=CSS, script=SCRIPT, body="\n".join(body))


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: list[tuple[str, str]], rows: list[list[tuple[str, str]]], css_id: str) -> str:
    head = "".join(
        f'<th data-type="{kind}" title="sort by {_e(name)}">{_e(name)}</th>'
        for name, kind in headers
    )
    body = "\n".join(
        "<tr>"
        + "".join(f'<td data-sort="{_e(key)}">{_e(text)}</td>' for text, key in row)
        + "</tr>"
        for row in rows
    )
    return (
        f'<div class="scroll"><table class="sortable" id="{css_id}">'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>"
    )


def _runs_table(runs: list[dict]) -> str:
    columns = run_columns(runs)
    headers = [(name, kind) for name, kind, _ in columns]
    rows = [[cell(run) for _, _, cell in columns] for run in runs]
    table = _table(headers, rows, "runs")
    folders = "".join(
        f"<li><b>{_e(r['label'])}</b>: <code>{_e(r['dir'])}</code></li>" for r in runs
    )
    return f"{table}\n<details><summary>run directories</summary><ul>{folders}</ul></details>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _curves_section(runs: list[dict]) -> str:
    figures = []
    for metric, caption in OVERLAYS:
        if any(series(run["rows"], metric)[0] for run in runs):
            fig = plot_curves_overlay([run["dir"] for run in runs], metric)
            figures.append(_figure(figure_png(fig), f"{caption} of every run", caption))
    shown = (
        f'<div class="grid">{"".join(figures)}</div>'
        if figures
        else ('<p class="empty">No metrics rows yet.</p>')
    )
    return f"<h2>Learning curves</h2>\n{shown}"


def _time_section(runs: list[dict]) -> str:
    """Each finished run's score (held-out test, else best validation) against its wall time:
    what a 2-core machine pays for a point of accuracy."""
    found = (score_point(r["dir"], r["label"], r["summary"], r["rows"], r["config"]) for r in runs)
    points = [p for p in found if p is not None]
    fig = plot_score_vs_time(points)
    if fig is None:
        return ""
    caption = f"{points[0]['score_name']} against wall minutes (filled: test split; hollow: best validation)"
    return f"<h2>Score against wall time</h2>\n{_figure(figure_png(fig), caption, caption)}"


def _confusion_section(runs: list[dict]) -> str:
    figures: list[str] = []
    tables: list[str] = []
    missing: list[str] = []
    for run in runs:
        for stem, evaluation in run["evaluations"].items():
            caption = f"{run['label']}: {stem}"
            fig = (
                plot_confusion(evaluation, caption)
                if evaluation.get("task") != "regression"
                else plot_scatter(evaluation, caption)
            )
            if fig is not None:
                figures.append(_figure(figure_png(fig), f"confusion matrix of {caption}", caption))
            if evaluation.get("per_class"):
                tables.append(_per_class_table(evaluation["per_class"], caption, len(tables)))
        if not run["evaluations"]:
            missing.append(run["label"])
    parts = [
        "<h2>Confusion matrices, per-class figures and regression scatters</h2>",
        f'<div class="grid">{"".join(figures)}</div>',
        *tables,
    ]
    if missing:
        names = ", ".join(_e(m) for m in missing)
        parts.append(f'<p class="empty">No evaluations (evaluations/*.json) in: {names}.</p>')
    return "\n".join(parts)


def _per_class_table(per_class: dict, caption: str, number: int) -> str:
    """Precision, recall, F1 and support of each class of one evaluation (the run's names)."""
    headers = [
        ("class", "text"),
        ("precision", "num"),
        ("recall", "num"),
        ("F1", "num"),
        ("support", "num"),
    ]
    rows = [
        [(name, name)]
        + [(f"{c[k]:.4f}", str(c[k])) for k in ("precision", "recall", "f1")]
        + [(f"{c['support']:,}", str(c["support"]))]
        for name, c in per_class.items()
    ]
    return f"<h3>{_e(caption)}</h3>\n{_table(headers, rows, f'per-class-{number}')}"


def _figure(png: bytes, alt: str, caption: str) -> str:
    return f"<figure>{_img(png, alt)}<figcaption>{_e(caption)}</figcaption></figure>"


def _leaderboard_section(board: list[dict], path) -> str:
    title = f'<h2>Sweep leaderboard</h2>\n<p class="meta"><code>{_e(path)}</code></p>'
    if not board:
        return f'{title}\n<p class="empty">The leaderboard has no rows.</p>'
    columns = list(board[0])
    kinds = [("num" if all(_is_number(row.get(c)) for row in board) else "text") for c in columns]
    rows = [[_csv_cell(row.get(c)) for c in columns] for row in board]
    return f"{title}\n{_table(list(zip(columns, kinds)), rows, 'leaderboard')}"


def _read_study(leaderboard):
    from lorafit.search.plots import read_study

    return read_study(leaderboard)


def _study_section(study: dict) -> str:
    """The sweep's study: the metric by trial and the parameter importances."""
    from lorafit.search.plots import plot_importances, plot_metric_by_trial

    info = study["info"]
    metric = info["metric"]
    parts = [
        "<h2>Search</h2>",
        f'<p class="meta">study <code>{_e(info["study_name"])}</code> in <code>{_e(info["storage"])}</code>; '
        f"sampler {_e(info['sampler'])}, pruner {_e(info['pruner'])}, {len(study['trials'])} trials. "
        f"Interactive: <code>optuna-dashboard {_e(info['storage'])}</code></p>",
    ]
    fig = plot_metric_by_trial(study["trials"], metric, info["direction"])
    figures = [_figure(figure_png(fig), f"{metric} by trial", f"{metric} by trial")]
    if study["importances"]:
        fig = plot_importances(study["importances"])
        figures.append(_figure(figure_png(fig), "parameter importances", "parameter importances"))
    parts.append(f'<div class="grid">{"".join(figures)}</div>')
    if not study["importances"]:
        parts.append(f'<p class="empty">{_e(study["why"])}.</p>')
    return "\n".join(parts)


def _is_number(text) -> bool:
    try:
        float(text)
        return True
    except (TypeError, ValueError):
        return text in ("", None)


def _csv_cell(text) -> tuple[str, str]:
    """(shown, sort key); numbers with more than 4 decimals are shown rounded to 4."""
    text = "" if text is None else text
    try:
        value = float(text)
        decimals = text.partition(".")[2]
        shown = f"{round(value, 4)}" if len(decimals) > 4 and decimals.isdigit() else text
        return shown, repr(value)
    except ValueError:
        return (text or "-"), text.lower()


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lorafit report</title>
<style>{css}</style>
</head>
<body>
{body}
<script>{script}</script>
</body>
</html>
"""

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 20px;
       color: #1d232b; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.meta, .empty { color: #57606a; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table { font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 7px; }
td.num { white-space: nowrap; }
#runs td:first-child { max-width: 15em; overflow-wrap: anywhere; font-weight: 600; }
th { background: #f0f3f6; cursor: pointer; user-select: none; position: sticky; top: 0; }
th:hover { background: #e2e8ee; }
th[data-type="num"], td.num { text-align: right; }
th.asc::after { content: " \\25B2"; font-size: 10px; }
th.desc::after { content: " \\25BC"; font-size: 10px; }
tbody tr:nth-child(even) { background: #f8fafb; }
tbody tr:hover { background: #eef5ff; }
figure { margin: 8px 0; display: inline-block; }
figure img { max-width: 100%; height: auto; border: 1px solid #e5e9ee; }
figcaption { color: #57606a; font-size: 12px; }
.grid { display: flex; flex-wrap: wrap; gap: 16px; }
.grid figure { flex: 1 1 520px; max-width: 760px; }
code { font-size: 12px; }
"""

# Sorting: numbers compare as numbers, blank cells go last in both directions. The load handler
# records on <body> whether every image decoded (data-images-ok), for the browser test.
SCRIPT = """
(function () {
  function sortTable(th) {
    var table = th.closest("table"), body = table.tBodies[0];
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.dataset.type === "num";
    var dir = th.classList.contains("asc") ? -1 : 1;
    th.parentNode.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
    th.classList.add(dir === 1 ? "asc" : "desc");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[index].dataset.sort, y = b.cells[index].dataset.sort;
      if (x === "" || y === "") { return (x === "") - (y === ""); }
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return dir * c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable th").forEach(function (th) {
    th.addEventListener("click", function () { sortTable(th); });
  });
  document.querySelectorAll('table.sortable th[data-type="num"]').forEach(function (th) {
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    th.closest("table").querySelectorAll("tbody tr").forEach(function (tr) {
      tr.cells[index].classList.add("num");
    });
  });
  window.addEventListener("load", function () {
    var images = Array.prototype.slice.call(document.images);
    var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
    var rows = document.querySelectorAll("#runs tbody tr");
    var shown = Array.prototype.filter.call(rows, function (r) { return r.offsetHeight > 0; });
    document.body.dataset.imagesOk = String(ok.length === images.length);
    document.body.dataset.imagesLoaded = ok.length + "/" + images.length;
    document.body.dataset.visibleRows = String(shown.length);
  });
})();
"""
