"""lorafit.report: one self-contained HTML file; checked as text and in headless chromium."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorafit.errors import UserError
from lorafit.report import write_report

from .rundir_factory import make_run_dir

IMG = '<img src="data:image/png;base64,'
CHROMIUM = Path("/usr/bin/chromium")
XSS = "<script>alert('x')</script>"


@pytest.fixture
def runs(tmp_path):
    """Two finished runs with a test evaluation each, and one interrupted run without."""
    parent = tmp_path / "runs"
    return [
        make_run_dir(parent, "agnews-r4", r=4, lr=3e-4, final_accuracy=0.87, seed=1),
        make_run_dir(parent, "agnews-r8", r=8, lr=2e-4, final_accuracy=0.89, seed=2),
        make_run_dir(
            parent, "agnews-r16", r=16, lr=1e-4, steps=200, seed=3, summary=False, evaluation=False
        ),
    ]


@pytest.fixture
def leaderboard(tmp_path):
    path = tmp_path / "leaderboard.csv"
    path.write_text(
        "rank,run,lora.r,eval_accuracy,val_loss\n"
        "1,agnews-r8,8,0.8912,0.42746537923812866\n2,agnews-r4,4,0.8701,0.5\n"
    )
    return path


def _runs_table(page: str) -> str:
    return re.search(r'<table class="sortable" id="runs">.*?</table>', page, re.S).group(0)


def test_report_lists_every_run_with_settings_and_results(runs, tmp_path):
    page = write_report(runs, tmp_path / "report.html").read_text()
    table = _runs_table(page)
    assert table.count("<tr>") == 1 + len(runs)
    for name in ["agnews-r4", "agnews-r8", runs[2].name]:  # unfinished: labelled by its folder
        assert f'<td data-sort="{name.lower()}">{name}</td>' in table
    for header in [
        "model",
        "r",
        "alpha",
        "dropout",
        "layers",
        "target modules",
        "lr",
        "optimizer",
        "trainable",
        "total",
        "best val acc",
        "best val F1",
        "best step",
        "test acc",
        "wall time",
    ]:
        assert f">{header}</th>" in table
    assert ">query, value</td>" in table and ">3.0e-04</td>" in table
    assert table.count(">unfinished</td>") == 1


def test_report_embeds_one_png_per_curve_overlay_and_confusion_matrix(runs, tmp_path):
    page = write_report(runs, tmp_path / "report.html").read_text()
    # two overlays (validation accuracy, train loss), score against wall time, and one
    # confusion matrix per evaluated run
    assert page.count(IMG) == 2 + 1 + 2
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            assert image.format == "PNG" and image.size[0] >= 600 and image.size[1] >= 400
    assert "No evaluations (evaluations/*.json) in: " + runs[2].name in page


def test_report_is_self_contained(runs, tmp_path):
    page = write_report(runs, tmp_path / "report.html").read_text()
    without_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert "http://" not in without_images and "https://" not in without_images
    assert "<link" not in page and "@import" not in page
    assert re.findall(r"<script[^>]*\bsrc=", page) == []


def test_report_escapes_run_names(tmp_path):
    run = make_run_dir(tmp_path / "runs", "evil", display_name=XSS)
    page = write_report([run], tmp_path / "report.html").read_text()
    assert XSS not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only the report's own sorting script


def test_report_refuses_to_overwrite(runs, tmp_path):
    out = tmp_path / "report.html"
    out.write_text("keep me")
    with pytest.raises(FileExistsError, match=r"report\.html already exists; pass --overwrite"):
        write_report(runs, out)
    assert out.read_text() == "keep me"
    assert write_report(runs, out, overwrite=True) == out
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_report_includes_the_sweep_leaderboard(runs, leaderboard, tmp_path):
    page = write_report(runs, tmp_path / "report.html", leaderboard=leaderboard).read_text()
    board = re.search(r'<table class="sortable" id="leaderboard">.*?</table>', page, re.S).group(0)
    assert board.count("<tr>") == 3
    assert '<th data-type="num" title="sort by eval_accuracy">eval_accuracy</th>' in board
    assert '<th data-type="text" title="sort by run">run</th>' in board
    assert '<td data-sort="0.8912">0.8912</td>' in board
    # long floats are shown to 4 decimals and sorted by their full value
    assert '<td data-sort="0.42746537923812866">0.4275</td>' in board
    with pytest.raises(UserError, match="file not found"):
        write_report(runs, tmp_path / "other.html", leaderboard=tmp_path / "missing.csv")


def _study_beside(leaderboard, finished: int):
    """A sweep's study (SQLite + study.json) beside the leaderboard: `finished` trials with
    varying rank and lr, one pruned after two reports, one over budget."""
    import json

    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    folder = leaderboard.parent
    url = f"sqlite:///{folder / 'study.db'}"
    study = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    dists = {
        "lora.r": IntDistribution(2, 64, log=True),
        "train.lr": FloatDistribution(1e-4, 1e-2, log=True),
    }
    for i in range(finished):
        study.add_trial(
            optuna.create_trial(
                params={"lora.r": 2 + 4 * i, "train.lr": 1e-3 * (i + 1)},
                distributions=dists,
                value=0.5 + 0.1 * (i % 3),
                intermediate_values={4: 0.4, 8: 0.5},
                user_attrs={"name": f"t{i}"},
            )
        )
    study.add_trial(
        optuna.create_trial(
            state=optuna.trial.TrialState.PRUNED,
            params={"lora.r": 4, "train.lr": 1e-2},
            distributions=dists,
            intermediate_values={4: 0.2, 8: 0.25},
            user_attrs={"name": "pruned"},
        )
    )
    study.add_trial(
        optuna.create_trial(
            state=optuna.trial.TrialState.PRUNED,
            params={"lora.r": 64, "train.lr": 1e-3},
            distributions=dists,
            user_attrs={"name": "big", "infeasible": "budget: over"},
        )
    )
    info = {
        "study_name": "tiny",
        "storage": url,
        "metric": "eval_accuracy",
        "direction": "maximize",
        "sampler": "tpe",
        "pruner": "median",
        "source": "tiny.yaml",
    }
    (folder / "study.json").write_text(json.dumps(info))


def test_report_plots_the_study_and_its_parameter_importances(runs, leaderboard, tmp_path):
    _study_beside(leaderboard, finished=4)
    page = write_report(runs, tmp_path / "report.html", leaderboard=leaderboard).read_text()
    search = page[page.index("<h2>Search</h2>") :]
    assert "sampler tpe, pruner median, 6 trials" in search
    assert "optuna-dashboard sqlite:///" in search
    assert 'alt="eval_accuracy by trial"' in search and 'alt="parameter importances"' in search
    assert search.count(IMG) == 2
    for img in re.findall(r'src="data:image/png;base64,([^"]+)"', search):
        assert Image.open(io.BytesIO(base64.b64decode(img))).size[0] > 300


def test_report_says_why_importances_are_missing_with_few_trials(runs, leaderboard, tmp_path):
    _study_beside(leaderboard, finished=2)
    page = write_report(runs, tmp_path / "report.html", leaderboard=leaderboard).read_text()
    search = page[page.index("<h2>Search</h2>") :]
    assert search.count(IMG) == 1 and 'alt="eval_accuracy by trial"' in search
    assert (
        "parameter importances need at least 3 finished trials whose parameters differ (2 finished so far)"
        in search
    )


def test_report_drops_duplicate_paths_and_rejects_non_runs(runs, tmp_path):
    latest = runs[0].parent / "latest"
    latest.symlink_to(runs[0].name)
    page = write_report([*runs, latest], tmp_path / "report.html").read_text()
    assert _runs_table(page).count("<tr>") == 1 + len(runs)
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(UserError, match="not a run directory"):
        write_report([tmp_path / "not-a-run"], tmp_path / "x.html")
    with pytest.raises(UserError, match="no run directories"):
        write_report([], tmp_path / "y.html")


# ---------------------------------------------------------------------------------------------
# Headless chromium: the page renders, runs its script without errors, and its images decode.


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _console_messages(stderr: str) -> list[str]:
    """Page console output and uncaught exceptions (the report itself logs nothing)."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def _body_attributes(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom).group(1)
    return dict(re.findall(r'([\w-]+)="([^"]*)"', body))


needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed")


@pytest.mark.browser
@needs_chromium
def test_report_renders_in_headless_chromium(runs, leaderboard, tmp_path):
    out = write_report(runs, tmp_path / "report.html", leaderboard=leaderboard)
    shot = tmp_path / "report.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", out.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert _console_messages(result.stderr) == []
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels[:1000].std() > 20, "the top of the page looks blank"
    if os.environ.get("LORAFIT_REPORT_SCREENSHOT"):  # refresh docs/report-screenshot.png
        shutil.copy(shot, os.environ["LORAFIT_REPORT_SCREENSHOT"])

    result = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", out.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert _console_messages(result.stderr) == []
    body = _body_attributes(result.stdout)
    assert body["data-images-ok"] == "true", body
    # two overlays, score against wall time, two confusion matrices
    assert body["data-images-loaded"] == "5/5"
    assert body["data-visible-rows"] == str(len(runs))
    assert result.stdout.count("<img ") == 5


@pytest.mark.browser
@needs_chromium
def test_clicking_a_header_sorts_numerically(runs, tmp_path):
    page = write_report(runs, tmp_path / "report.html").read_text()
    probe = """<script>
    window.addEventListener("load", function () {
      var th = Array.prototype.find.call(document.querySelectorAll("#runs th"),
                                         function (h) { return h.textContent === "r"; });
      var order = function () {
        return Array.prototype.map.call(document.querySelectorAll("#runs tbody tr"),
                                        function (tr) { return tr.cells[2].textContent; }).join(",");
      };
      th.click(); document.body.dataset.ascending = order();
      th.click(); document.body.dataset.descending = order();
    });
    </script></body>"""
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", probe))
    result = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    assert _console_messages(result.stderr) == []
    body = _body_attributes(result.stdout)
    assert body["data-ascending"] == "4,8,16"  # as text it would be 16,4,8
    assert body["data-descending"] == "16,8,4"


@pytest.mark.browser
@needs_chromium
def test_console_check_catches_script_errors(tmp_path):
    """The console check above is not vacuous: a throwing page is caught."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><body><script>throw new Error('boom');</script></body>")
    result = _chromium(tmp_path, "--virtual-time-budget=2000", "--dump-dom", page.as_uri())
    assert any("Uncaught Error: boom" in line for line in _console_messages(result.stderr))


# ---------------------------------------------------------------------------------------------
# The real trainer's run directory, end to end


@pytest.mark.slow
def test_report_of_a_real_tiny_training_run(tiny_overrides, tmp_path):
    from lorafit.cli import main
    from lorafit.plots import write_plots
    from lorafit.runlog import write_training_log

    assert main(["train", *tiny_overrides]) == 0
    (run,) = [p for p in (tmp_path / "runs").iterdir() if not p.is_symlink()]
    names = {p.name for p in write_plots(run)}
    assert {"learning_curve.png", "loss.png", "accuracy.png", "lr.png", "throughput.png"} <= names
    text = write_training_log(run).read_text()
    assert "summary.json is missing" not in text and "best " in text
    page = write_report([run], tmp_path / "report.html").read_text()
    assert page.count(IMG) >= 2


def test_score_points_take_the_test_figure_else_the_best_validation_one(runs, tmp_path):
    """What "Score against wall time" plots, read back from the run folders by hand."""
    import json

    from lorafit.plots import plot_score_vs_time, score_points

    points = score_points(runs)
    assert [p["label"] for p in points] == [
        "agnews-r4",
        "agnews-r8",
    ]  # the unfinished run has no wall time
    for p, run in zip(points, runs):
        summary = json.loads((run / "summary.json").read_text())
        # the whole command: the loop and the setup before it (the activation cache's build)
        assert p["minutes"] == pytest.approx((summary["wall_time_s"] + 30.0) / 60)
        assert summary["setup_time_s"] == 30.0
        assert p["held_out"] and p["score"] == pytest.approx(summary["test"]["accuracy"])
    # without a test figure: the best validation accuracy (the summary's best step's row)
    summary = json.loads((runs[0] / "summary.json").read_text())
    summary.pop("test")
    (runs[0] / "summary.json").write_text(json.dumps(summary))
    rows = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    (runs[0] / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows if r.get("kind") != "test")
    )
    best = next(r for r in rows if r.get("kind") == "eval" and r["step"] == summary["best_step"])
    point = score_points(runs[:1])[0]
    assert not point["held_out"] and point["score"] == pytest.approx(best["eval_accuracy"])
    fig = plot_score_vs_time(score_points(runs))
    ax = fig.axes[0]
    offsets = [c.get_offsets().tolist() for c in ax.collections]
    assert sorted(xy for o in offsets for xy in o) == sorted(
        [p["minutes"], p["score"]] for p in score_points(runs)
    )
    assert [t.get_text() for t in ax.texts] == ["agnews-r4", "agnews-r8"]
    assert plot_score_vs_time([]) is None


def test_score_time_benchmark_prints_each_run_and_writes_the_plot(runs, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "score_time", Path(__file__).parents[1] / "benchmarks" / "score_time.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "time.png"
    assert bench.main([str(r) for r in runs[:2]] + ["--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "agnews-r4" in printed and "agnews-r8" in printed and "test" in printed
    with Image.open(out) as image:
        assert image.format == "PNG"
    assert bench.main([str(runs[2])]) == 2  # an unfinished run: refused
