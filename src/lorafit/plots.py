"""Plots of a run directory: learning curves, schedule, throughput, confusion matrices.

    from lorafit.plots import write_plots
    write_plots("runs/agnews-r8-20261122-101500")   # -> [RUN_DIR/plots/loss.png, ...]

Works only from the run directory (docs/get-started/run-directory.md): curves come from `metrics.jsonl`,
the best step from `summary.json` (or the `is_best` rows), and one confusion matrix plus one
per-class bar chart from each `evaluations/*.json`. A plot whose data is missing (no eval rows
yet, no evaluations folder) is skipped, so this also works on a run that is still training.

We draw on `matplotlib.figure.Figure` and render with the Agg canvas: no pyplot, no global
backend switch, no window, safe in a notebook and on a headless server.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from lorafit.rundir import write_atomic
from lorafit.runlog import (
    best_eval_row,
    check_run_dir,
    config_value,
    final_test_metrics,
    read_config,
    read_evaluations,
    read_json,
    read_metrics,
    rows_of,
    run_label,
    task_of,
)

FIGSIZE = (8, 4.5)
DPI = 120
#: Few points get markers, so a run with one eval row still shows a dot rather than nothing.
MARKER_MAX_POINTS = 40
COLORS = {"train": "tab:blue", "eval": "tab:orange", "f1": "tab:green", "best": "tab:red"}
METRIC_LABELS = {
    "eval_accuracy": "validation accuracy",
    "eval_f1": "validation macro-F1",
    "eval_loss": "validation loss",
    "train_loss": "train loss",
    "eval_pearson": "validation Pearson",
    "eval_spearman": "validation Spearman",
    "eval_macro_f1": "validation macro-F1 (labels)",
    "eval_micro_f1": "validation micro-F1 (labels)",
    "eval_mcc": "validation MCC",
}
#: scores in [-1, 1], drawn as numbers: a percentage of a correlation means nothing
CORRELATIONS = ("eval_pearson", "eval_spearman", "eval_mcc")
#: per task, the two validation scores drawn against step: (eval row key, name, key of the test
#: figures, shown as a percentage)
SCORES = {
    "classification": [
        ("eval_accuracy", "accuracy", "accuracy", True),
        ("eval_f1", "macro-F1", "f1", True),
    ],
    "regression": [
        ("eval_pearson", "Pearson", "pearson", False),
        ("eval_spearman", "Spearman", "spearman", False),
    ],
    "multi_label": [
        ("eval_macro_f1", "macro-F1", "macro_f1", True),
        ("eval_micro_f1", "micro-F1", "micro_f1", True),
    ],
}
#: the plot of the two scores against step, per task
SCORES_PLOT = {
    "classification": "accuracy.png",
    "regression": "correlation.png",
    "multi_label": "f1.png",
}
#: the loss's name on an axis, per task
LOSS_NAMES = {
    "classification": "cross-entropy",
    "regression": "MSE",
    "multi_label": "binary cross-entropy",
}


# ---------------------------------------------------------------------------------------------
# Public API


def write_plots(run_dir: str | Path) -> list[Path]:
    """Write every plot the run's data allows into `RUN_DIR/plots/`.

    Args:
        run_dir: a run directory (finished, interrupted or still training).

    Returns:
        The paths of the PNG files written, in a fixed order; plots without data are skipped.

    Raises:
        UserError: if `run_dir` is not a folder or a JSON file in it is malformed.
        MetricsFormatError: (a `ValueError`) naming the file and line of a malformed row.
    """
    run = check_run_dir(run_dir)
    rows = read_metrics(run)
    summary = read_json(run / "summary.json")
    label = run_label(run, summary)
    metric = (summary or {}).get("metric") or config_value(read_config(run), "train.metric")
    best = best_eval_row(rows, summary, metric or "eval_accuracy")
    task = task_of(summary, read_config(run))
    figures = {
        "learning_curve.png": plot_learning_curve(rows, label, task),
        "loss.png": plot_loss(rows, label, task),
        SCORES_PLOT[task]: plot_accuracy(
            rows, label, best, final_test_metrics(rows, summary), task
        ),
        "lr.png": plot_lr(rows, label),
        "throughput.png": plot_throughput(rows, label),
    }
    for stem, evaluation in read_evaluations(run).items():
        if evaluation.get("task") == "regression":
            figures[f"scatter_{stem}.png"] = plot_scatter(evaluation, f"{label}: {stem}")
            continue
        figures[f"confusion_{stem}.png"] = plot_confusion(evaluation, f"{label}: {stem}")
        figures[f"per_class_{stem}.png"] = plot_per_class(evaluation, f"{label}: {stem}")
    written = []
    for name, fig in figures.items():
        if fig is not None:
            (run / "plots").mkdir(exist_ok=True)
            write_atomic(run / "plots" / name, figure_png(fig))
            written.append(run / "plots" / name)
    return written


def plot_curves_overlay(run_dirs: list[str | Path], metric: str = "eval_accuracy") -> Figure:
    """One `metric` curve per run on shared axes, labelled by run name (for the report).

    Args:
        run_dirs: run directories; runs without rows holding `metric` are left out.
        metric: a metrics.jsonl key such as `eval_accuracy`, `eval_f1` or `train_loss`.

    Returns:
        The figure (a note in the middle when no run has the metric yet).
    """
    fig, ax = _new_figure()
    labels = _unique_labels(run_dirs)
    drawn = 0
    for run_dir, label in zip(run_dirs, labels):
        steps, values = series(read_metrics(run_dir), metric)
        if steps:
            ax.plot(steps, values, label=label, **_line_style(steps))
            drawn += 1
    name = METRIC_LABELS.get(metric, metric)
    correlation = metric in CORRELATIONS
    unit = "cross-entropy" if metric.endswith("loss") else "correlation" if correlation else "%"
    _decorate(
        ax,
        f"{name.capitalize()} by run",
        "optimizer step",
        f"{name} ({unit})",
        None if correlation else metric,
    )
    if drawn:
        ax.legend(loc="best", fontsize=10, title="run", title_fontsize=10)
    else:
        _note(ax, f"no rows with {metric} yet")
    return fig


def figure_png(fig: Figure) -> bytes:
    """The figure rendered as PNG bytes (Agg canvas, `DPI` dots per inch)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Steps and values of the rows that hold a non-null `key`, in step order."""
    pairs = sorted((r["step"], r[key]) for r in rows if r.get(key) is not None)
    return [s for s, _ in pairs], [v for _, v in pairs]


# ---------------------------------------------------------------------------------------------
# Curves from metrics.jsonl (each returns None when it has nothing to draw)


def plot_learning_curve(
    rows: list[dict], label: str, task: str = "classification"
) -> Figure | None:
    """Train loss (left axis) and validation accuracy (a regression: Pearson; right axis) against step."""
    key, name, _, percent = SCORES[task][0]
    loss_steps, loss = series(rows_of(rows, "train"), "train_loss")
    acc_steps, acc = series(rows_of(rows, "eval"), key)
    if not loss_steps and not acc_steps:
        return None
    fig, ax = _new_figure()
    lines = _draw(ax, loss_steps, loss, COLORS["train"], "train loss")
    # The score goes on a second y axis only when there is a loss on the first one.
    acc_ax = ax.twinx() if loss_steps and acc_steps else ax
    lines += _draw(acc_ax, acc_steps, acc, COLORS["eval"], f"validation {name}", markersize=6)
    ylabel = f"train loss ({LOSS_NAMES[task]})" if loss_steps else ""
    _decorate(ax, f"Learning curve: {label}", "optimizer step", ylabel)
    if acc_steps:
        acc_ax.set_ylabel(f"validation {name}" + (" (%)" if percent else ""))
        if percent:
            acc_ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    # Below the axes: with two y axes no corner is reliably free of lines.
    ax.legend(handles=lines, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=9)
    return fig


def plot_loss(rows: list[dict], label: str, task: str = "classification") -> Figure | None:
    """Train loss and validation loss against step."""
    train_steps, train = series(rows_of(rows, "train"), "train_loss")
    eval_steps, evals = series(rows_of(rows, "eval"), "eval_loss")
    if not train_steps and not eval_steps:
        return None
    fig, ax = _new_figure()
    _draw(ax, train_steps, train, COLORS["train"], "train")
    _draw(ax, eval_steps, evals, COLORS["eval"], "validation", markersize=6)
    _decorate(
        ax,
        f"Loss: {label}",
        "optimizer step",
        "mean squared error" if task == "regression" else f"{LOSS_NAMES[task]} loss (nats)",
    )
    ax.legend(loc="upper right", fontsize=9)
    return fig


def plot_accuracy(
    rows: list[dict],
    label: str,
    best: dict | None,
    test: dict | None = None,
    task: str = "classification",
):
    """Validation accuracy and macro-F1 (a regression: Pearson and Spearman) against step, the
    best step (and test score) marked."""
    (key, name, test_key, percent), (key2, name2, _, _) = SCORES[task]
    show = (lambda v: f"{v:.2%}") if percent else (lambda v: f"{v:.4f}")
    acc_steps, acc = series(rows_of(rows, "eval"), key)
    f1_steps, f1 = series(rows_of(rows, "eval"), key2)
    if not acc_steps and not f1_steps:
        return None
    fig, ax = _new_figure()
    _draw(ax, acc_steps, acc, COLORS["eval"], name, markersize=6)
    _draw(ax, f1_steps, f1, COLORS["f1"], name2, markersize=6)
    if best is not None and best.get(key) is not None:
        step, value = best["step"], best[key]
        ax.axvline(step, color=COLORS["best"], linestyle="--", linewidth=1)
        best_label = f"best: step {step}, {name} {show(value)}"
        ax.plot([step], [value], "*", color=COLORS["best"], ms=14, zorder=5, label=best_label)
    if test and test.get(test_key) is not None:
        test_label = f"test {name} {show(test[test_key])}"
        ax.axhline(test[test_key], color="0.4", linestyle=":", linewidth=1.2, label=test_label)
    title = f"Validation {name} and {name2}: {label}"
    _decorate(
        ax,
        title,
        "optimizer step",
        "score (%)" if percent else "correlation",
        key if percent else None,
    )
    ax.margins(y=0.1)
    ax.legend(loc="lower right", fontsize=9)
    return fig


def plot_lr(rows: list[dict], label: str) -> Figure | None:
    """The learning rate schedule against step."""
    steps, lr = series(rows_of(rows, "train"), "lr")
    if not steps:
        return None
    fig, ax = _new_figure()
    _draw(ax, steps, lr, "tab:purple", "learning rate")
    _decorate(ax, f"Learning rate: {label}", "optimizer step", "learning rate (per step)")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.set_ylim(bottom=0)
    return fig


def plot_throughput(rows: list[dict], label: str) -> Figure | None:
    """Samples/s (top panel) and non-padding tokens/s (bottom panel) against step."""
    panels = [
        ("samples_per_s", "samples/s", "tab:blue"),
        ("tokens_per_s", "tokens/s\n(non-padding)", "tab:brown"),
    ]
    data = [series(rows_of(rows, "train"), key) for key, _, _ in panels]
    if not any(steps for steps, _ in data):
        return None
    # Two panels, not two y axes: tokens/s is nearly proportional to samples/s, so on twin
    # axes the two lines would lie on top of each other.
    fig = Figure(figsize=FIGSIZE, layout="tight")
    axes = fig.subplots(2, 1, sharex=True)
    for ax, (steps, values), (key, ylabel, color) in zip(axes, data, panels):
        _draw(ax, steps, values, color, ylabel)
        _decorate(ax, "", "", ylabel)
        ax.set_ylim(bottom=0, top=max(values, default=1.0) * 1.15)
        if not steps:
            _note(ax, f"no {key} rows")
    axes[0].set_title(f"Training throughput: {label}", fontsize=12)
    axes[1].set_xlabel("optimizer step")
    return fig


# ---------------------------------------------------------------------------------------------
# Evaluation plots


def plot_confusion(evaluation: dict, title: str) -> Figure | None:
    """Counts in each cell, colour = share of the true class (rows sum to 100%)."""
    matrix, names = evaluation.get("confusion_matrix"), evaluation.get("label_names")
    if not matrix or not names or len(matrix) != len(names):
        return None
    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(names)
    fig = Figure(figsize=(max(6.5, 0.7 * n + 3.5), max(5.5, 0.6 * n + 2.5)), layout="tight")
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fontsize = max(6, 11 - n // 3)
    for i in range(n):
        for j in range(n):
            color = "white" if shares[i, j] > 0.55 else "black"
            ax.text(
                j,
                i,
                f"{int(counts[i, j]):,}\n{shares[i, j]:.1%}",
                ha="center",
                va="center",
                color=color,
                fontsize=fontsize,
            )
    ax.set_xticks(range(n), names, rotation=30 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = evaluation.get("accuracy")
    subtitle = f"{int(counts.sum()):,} rows" + (f", accuracy {accuracy:.2%}" if accuracy else "")
    ax.set_title(f"Confusion matrix: {title}\n{subtitle}", fontsize=11)
    fig.colorbar(image, ax=ax, format=PercentFormatter(xmax=1), label="share of the true class")
    return fig


def plot_scatter(evaluation: dict, title: str) -> Figure | None:
    """A regression's predicted values against the true ones, the diagonal y = x drawn."""
    points = evaluation.get("points")
    if not points or not points.get("true"):
        return None
    true, pred = (
        np.asarray(points["true"], dtype=float),
        np.asarray(points["predicted"], dtype=float),
    )
    fig = Figure(figsize=(6.5, 6), layout="tight")
    ax = fig.add_subplot()
    ax.scatter(true, pred, s=8, alpha=0.35, color="tab:blue", edgecolors="none")
    low, high = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot(
        [low, high], [low, high], color="0.3", linestyle="--", linewidth=1, label="predicted = true"
    )
    name = (evaluation.get("label_names") or ["value"])[0]
    ax.set_xlabel(f"true {name}")
    ax.set_ylabel(f"predicted {name}")
    shown = (
        f"{len(true):,} of {evaluation.get('rows', len(true)):,} rows"
        if len(true) < evaluation.get("rows", 0)
        else f"{len(true):,} rows"
    )
    ax.set_title(
        f"Predicted against true: {title}\n{shown}, Pearson {evaluation.get('pearson', 0):.4f}, "
        f"Spearman {evaluation.get('spearman', 0):.4f}",
        fontsize=11,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    return fig


def plot_per_class(evaluation: dict, title: str) -> Figure | None:
    """Per-class precision and recall as grouped bars, support in the tick labels."""
    per_class = evaluation.get("per_class")
    if not per_class:
        return None
    names = list(evaluation.get("label_names") or per_class)
    names = [n for n in names if n in per_class]
    x = np.arange(len(names))
    fig, ax = _new_figure()
    for offset, key, color in ((-0.2, "precision", "tab:blue"), (0.2, "recall", "tab:orange")):
        values = [per_class[n].get(key) or 0.0 for n in names]
        bars = ax.bar(x + offset, values, width=0.4, label=key, color=color)
        ax.bar_label(bars, labels=[f"{v:.1%}" for v in values], fontsize=8, padding=2)
    ticks = [f"{n}\n(n={per_class[n].get('support', 0):,})" for n in names]
    ax.set_xticks(x, ticks)
    _decorate(
        ax,
        f"Per-class precision and recall: {title}",
        "true class (support)",
        "score (%)",
        "precision",
        step_axis=False,
    )
    ax.set_ylim(0, 1.22)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.grid(axis="x", visible=False)
    ax.legend(loc="upper center", ncol=2, fontsize=9)
    return fig


def score_points(run_dirs: list[str | Path]) -> list[dict]:
    """Each finished run's headline score and wall time, for `plot_score_vs_time`.

    The score is the run's first score of its task (`SCORES`: accuracy, Pearson, macro-F1) on
    its test split when it has one (a holdout nothing tuned on), else its best validation
    figure (`held_out` False). Runs without `summary.json` or a wall time are left out.
    """
    points = []
    for run_dir, label in zip(run_dirs, _unique_labels(run_dirs)):
        summary = read_json(Path(run_dir) / "summary.json")
        point = (
            score_point(run_dir, label, summary, read_metrics(run_dir), read_config(run_dir))
            if summary
            else None
        )
        if point is not None:
            points.append(point)
    return points


def score_point(
    run_dir: str | Path, label: str, summary: dict | None, rows: list[dict], config: dict
) -> dict | None:
    """One run's point of `score_points` from what was read of it (None: unfinished, no wall
    time or no score); `lorafit report` passes what it has collected already."""
    if not summary or summary.get("wall_time_s") is None:
        return None
    task = task_of(summary, config)
    eval_key, name, test_key, percent = SCORES[task][0]
    test = final_test_metrics(rows, summary) or {}
    best = best_eval_row(rows, summary, summary.get("metric") or eval_key) or {}
    held_out = test.get(test_key) is not None
    score = test.get(test_key) if held_out else best.get(eval_key)
    if score is None:
        return None
    return {
        "dir": Path(run_dir),
        "label": label,
        "task": task,
        "score": float(score),
        "score_name": name,
        "percent": percent,
        "held_out": held_out,
        # the whole command's time: the loop and what came before it (the activation cache's
        # build above all); runs made before setup_time_s was recorded count the loop only
        "minutes": (float(summary["wall_time_s"]) + float(summary.get("setup_time_s") or 0)) / 60,
        "model": summary.get("model_name") or config_value(config, "model.name") or "?",
    }


def plot_score_vs_time(points: list[dict], title: str = "Score against wall time") -> Figure | None:
    """Each run's score against its wall minutes (`score_points`), one colour per model, each
    point named; filled markers for a held-out test score, hollow for a validation one. One
    task's runs (the most common task's, when several are given); None without points."""
    if not points:
        return None
    tasks = [p["task"] for p in points]
    task = max(dict.fromkeys(tasks), key=tasks.count)
    points = [p for p in points if p["task"] == task]
    fig, ax = _new_figure()
    models = list(dict.fromkeys(p["model"] for p in points))
    colors = {m: f"C{i % 10}" for i, m in enumerate(models)}
    for model in models:
        for held_out in (True, False):
            chosen = [p for p in points if p["model"] == model and p["held_out"] == held_out]
            if not chosen:
                continue
            ax.scatter(
                [p["minutes"] for p in chosen],
                [p["score"] for p in chosen],
                s=36,
                zorder=3,
                color=colors[model] if held_out else "none",
                edgecolors=colors[model],
                label=f"{Path(model).name} ({'test' if held_out else 'validation'})",
            )
    for p in points:
        ax.annotate(
            p["label"],
            (p["minutes"], p["score"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
            color="0.25",
        )
    first = points[0]
    unit = "" if first["percent"] else " (correlation)"
    _decorate(
        ax,
        title,
        "wall time (minutes)",
        f"{first['score_name']}{unit}",
        "eval_accuracy" if first["percent"] else None,
        step_axis=False,
    )
    ax.set_xlim(left=0, right=max(p["minutes"] for p in points) * 1.15 + 0.1)
    ax.legend(loc="best", fontsize=8, title="model (split scored)", title_fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------
# Helpers


def _new_figure():
    fig = Figure(figsize=FIGSIZE, layout="tight")
    return fig, fig.add_subplot()


def _line_style(steps: list, markersize: float = 4) -> dict:
    """Markers on sparse series (and always on a single point), plain lines on dense ones."""
    if len(steps) <= MARKER_MAX_POINTS:
        return {"marker": "o", "markersize": markersize, "linewidth": 1.6}
    return {"linewidth": 1.4}


def _draw(ax, steps: list, values: list, color: str, label: str, markersize: float = 4) -> list:
    """Plot one series (nothing, and no legend entry, when it is empty); return its lines."""
    if not steps:
        return []
    return ax.plot(steps, values, color=color, label=label, **_line_style(steps, markersize))


def _decorate(
    ax, title: str, xlabel: str, ylabel: str = "", metric: str | None = None, step_axis=True
) -> None:
    """Title, labels, grid; percent ticks for scores; whole steps from 0 on an x step axis."""
    ax.set_title(title, fontsize=12)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if step_axis:
        # Call this after plotting: it fixes the x range.
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(left=0, right=max(1.0, ax.get_xlim()[1]))
    if metric and not metric.endswith("loss"):
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _unique_labels(run_dirs: list[str | Path]) -> list[str]:
    """Run names, falling back to the directory name where two runs share a name."""
    labels = [run_label(d, read_json(Path(d) / "summary.json")) for d in run_dirs]
    return [
        label if labels.count(label) == 1 else Path(d).resolve().name
        for d, label in zip(run_dirs, labels)
    ]
