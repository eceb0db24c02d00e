"""lorafit.plots: the PNGs a run directory yields, skipping what has no data yet."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from lorafit.errors import UserError
from lorafit.plots import DPI, FIGSIZE, plot_curves_overlay, write_plots

from .rundir_factory import TEST_STEM, make_run_dir, write_metrics

CURVES = ["learning_curve.png", "loss.png", "accuracy.png", "lr.png", "throughput.png"]
EVALUATION_PLOTS = [f"confusion_{TEST_STEM}.png", f"per_class_{TEST_STEM}.png"]


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _check_png(path, min_size=(400, 300)):
    """A real, non-blank PNG of at least `min_size` pixels; returns (width, height)."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert width >= min_size[0] and height >= min_size[1], (path, image.size)
    assert pixels.std() > 5, f"{path} looks blank"
    return width, height


@pytest.fixture
def run(tmp_path):
    return make_run_dir(tmp_path, "agnews-r8")


def test_write_plots_writes_every_plot_as_a_readable_png(run):
    written = write_plots(run)
    assert [p.name for p in written] == CURVES + EVALUATION_PLOTS
    assert all(p.parent == run / "plots" for p in written)
    for path in written:
        _check_png(path)
    expected = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
    for name in CURVES:
        assert _check_png(run / "plots" / name) == expected


def test_write_plots_again_replaces_the_files(tmp_path):
    run = make_run_dir(tmp_path, "twice", evaluation=False)
    first = write_plots(run)
    assert write_plots(run) == first
    assert sorted(p.name for p in (run / "plots").iterdir()) == sorted(p.name for p in first)


def test_no_eval_rows_and_no_evaluations_skip_those_plots(tmp_path):
    run = make_run_dir(tmp_path, "early", summary=False, evaluation=False)
    write_metrics(run, [r for r in _rows(run) if r["kind"] == "train"][:5])
    names = [p.name for p in write_plots(run)]
    assert names == ["learning_curve.png", "loss.png", "lr.png", "throughput.png"]
    assert not (run / "plots" / "accuracy.png").exists()


@pytest.mark.parametrize("kind", ["train", "eval"])
def test_a_run_with_a_single_row_still_plots(tmp_path, kind):
    run = make_run_dir(tmp_path, "one", summary=False, evaluation=False)
    write_metrics(run, [next(r for r in _rows(run) if r["kind"] == kind)])
    written = write_plots(run)
    assert "learning_curve.png" in [p.name for p in written]
    for path in written:
        _check_png(path)


def test_no_metrics_file_leaves_only_the_evaluation_plots(tmp_path):
    run = make_run_dir(tmp_path, "evaluated-only", summary=False)
    (run / "metrics.jsonl").unlink()
    assert [p.name for p in write_plots(run)] == EVALUATION_PLOTS


def test_an_empty_run_writes_nothing(tmp_path):
    run = make_run_dir(tmp_path, "empty", summary=False, evaluation=False)
    write_metrics(run, [])
    assert write_plots(run) == []
    assert not (run / "plots").exists()


def test_evaluation_without_confusion_matrix_keeps_the_per_class_plot(run):
    path = run / "evaluations" / f"{TEST_STEM}.json"
    evaluation = json.loads(path.read_text())
    del evaluation["confusion_matrix"]
    path.write_text(json.dumps(evaluation))
    names = [p.name for p in write_plots(run)]
    assert f"per_class_{TEST_STEM}.png" in names
    assert f"confusion_{TEST_STEM}.png" not in names


@pytest.mark.parametrize("bad", ['{"kind": "train", "step": 3', "[1, 2]", '{"step": 3}'])
def test_malformed_metrics_line_names_the_file_and_line(run, bad):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[2] = bad
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl: line 3 "):
        write_plots(run)


def test_not_a_run_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such run directory"):
        write_plots(tmp_path / "missing")


def test_overlay_draws_one_labelled_curve_per_run(tmp_path):
    runs = [make_run_dir(tmp_path, name, seed=i) for i, name in enumerate(["r4", "r8", "r16"])]
    fig = plot_curves_overlay(runs, "eval_accuracy")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["r4", "r8", "r16"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["r4", "r8", "r16"]
    steps = [r["step"] for r in _rows(runs[0]) if r["kind"] == "eval"]
    assert list(ax.get_lines()[0].get_xdata()) == steps


@pytest.mark.parametrize(
    "metric, ylabel, percent",
    [
        ("eval_accuracy", "validation accuracy (%)", True),
        ("eval_mcc", "validation MCC (correlation)", False),
        ("eval_pearson", "validation Pearson (correlation)", False),
        ("eval_loss", "validation loss (cross-entropy)", False),
    ],
)
def test_overlay_shows_percent_only_for_shares(tmp_path, metric, ylabel, percent):
    """MCC and correlations lie in [-1, 1]: not a percentage (an MCC of 0.87 is not 87%)."""
    from matplotlib.ticker import PercentFormatter

    run = make_run_dir(tmp_path, "r", seed=0)
    ax = plot_curves_overlay([run], metric).axes[0]
    assert ax.get_ylabel() == ylabel
    assert isinstance(ax.yaxis.get_major_formatter(), PercentFormatter) == percent


def test_overlay_tells_same_named_runs_apart_and_survives_no_data(tmp_path):
    a = make_run_dir(tmp_path / "a", "same", seed=1)
    b = make_run_dir(tmp_path / "b", "same", seed=2)
    labels = [line.get_label() for line in plot_curves_overlay([a, b]).axes[0].get_lines()]
    assert labels == [a.name, b.name]
    write_metrics(a, [])
    fig = plot_curves_overlay([a], "eval_f1")
    assert fig.axes[0].get_lines() == []
    assert "no rows with eval_f1" in fig.axes[0].texts[0].get_text()
