"""The CLI end to end on a tiny random RoBERTa: train -> predict -> evaluate -> describe."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pandas as pd
import pytest

from lorafit.cli import build_parser, main

from .conftest import AG_HEAD, ROOT

SUBCOMMANDS = ["train", "describe", "predict", "evaluate"]


@pytest.fixture
def trained(tiny_overrides, tmp_path):
    assert main(["train", *tiny_overrides]) == 0
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    return run_dir


def test_train_writes_the_run_directory(trained, tmp_path):
    for name in [
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "train.log",
        "model_description.json",
        "model_description.txt",
    ]:
        assert (trained / name).stat().st_size > 0, name
    assert (tmp_path / "runs" / "latest").resolve() == trained.resolve()
    ckpt = trained / "checkpoint-best"
    assert (ckpt / "adapter_model.safetensors").exists() and (ckpt / "adapter_config.json").exists()
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    eval_rows = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in train_rows] == [2, 4, 6, 8, 10, 12]
    assert [r["step"] for r in eval_rows] == [4, 8, 12]
    for key in [
        "epoch",
        "lr",
        "train_loss",
        "samples_per_s",
        "tokens_per_s",
        "padding_share",
        "memory_mb",
        "memory_now_mb",
    ]:
        assert key in train_rows[0]
    for key in ["eval_loss", "eval_accuracy", "eval_f1"]:
        assert 0 <= eval_rows[0][key] <= 10
    summary = json.loads((trained / "summary.json").read_text())
    best = max(eval_rows, key=lambda r: r["eval_accuracy"])
    assert summary["best_value"] == best["eval_accuracy"]
    assert summary["best_step"] == min(
        r["step"] for r in eval_rows if r["eval_accuracy"] == best["eval_accuracy"]
    )
    assert (
        summary["params"]["trainable"]
        == json.loads((trained / "model_description.json").read_text())["params"]["trainable"]
    )
    for key in [
        "wall_time_s",
        "git_commit",
        "versions",
        "device",
        "mixed_precision",
        "seed",
        "command",
    ]:
        assert key in summary
    assert summary["versions"]["peft"] and summary["seed"] == 42
    # the loop's time and the time before it (data, model, cache) cover the whole logged run
    from datetime import datetime

    log_lines = (trained / "train.log").read_text().splitlines()
    stamps = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f") for line in log_lines]
    span = (stamps[-1] - stamps[0]).total_seconds()
    assert summary["setup_time_s"] > 0
    assert summary["setup_time_s"] + summary["wall_time_s"] >= span - 0.1
    assert f"(and {summary['setup_time_s']:.1f} s before the first step)" in log_lines[-1]


def test_checkpoint_loads_with_peft(trained):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from lorafit.config import load_config

    cfg = load_config(trained / "config.yaml")
    base = AutoModelForSequenceClassification.from_pretrained(cfg.model.name, num_labels=4)
    model = PeftModel.from_pretrained(base, trained / "checkpoint-best")
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_predict_and_evaluate(trained, tmp_path, capsys):
    out = tmp_path / "submission.csv"
    assert main(["predict", str(trained), "--input", str(AG_HEAD), "--output", str(out)]) == 0
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["ID", "Label"]
    assert sub.ID.tolist() == list(range(2000)) and set(sub.Label) <= {0, 1, 2, 3}
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "confusion matrix" in printed
    (probs,) = (trained / "predictions").glob("train_head2000-*.csv")
    p = pd.read_csv(probs)
    assert p.filter(like="prob_").sum(axis=1).round(4).eq(1).all()
    assert (p.Label == sub.Label).all()
    # an existing output is never replaced without --overwrite
    assert main(["predict", str(trained), "--input", str(AG_HEAD), "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    # the default name never overwrites either
    assert main(["predict", str(trained), "--input", str(AG_HEAD)]) == 0
    assert main(["predict", str(trained), "--input", str(AG_HEAD)]) == 0
    assert (trained / "submission-train_head2000.csv").exists() and (
        trained / "submission-train_head2000-2.csv"
    ).exists()
    capsys.readouterr()

    assert main(["evaluate", str(trained), "--input", str(AG_HEAD), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["rows"] == 2000 and len(m["confusion_matrix"]) == 4
    assert sum(map(sum, m["confusion_matrix"])) == 2000
    assert m["accuracy"] == pytest.approx(
        (sub.Label == pd.read_csv(AG_HEAD, header=None)[0] - 1).mean()
    )
    (saved,) = (trained / "evaluations").glob("train_head2000-*.json")
    assert json.loads(saved.read_text())["macro_f1"] == m["macro_f1"]


def test_labelled_test_file_is_scored_with_best_checkpoint(tiny_overrides, small_csv, tmp_path):
    assert main(["train", *tiny_overrides, f"data.test={small_csv}"]) == 0
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test"]["rows"] == 240
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["kind"] == "test" and rows[-1]["test_accuracy"] == summary["test"]["accuracy"]


def test_describe_writes_json_and_text(tmp_path, capsys):
    config = ROOT / "configs" / "agnews_roberta_latent.yaml"
    assert main(["describe", "--config", str(config), "--output-dir", str(tmp_path)]) == 0
    assert "667,396" in capsys.readouterr().out
    d = json.loads((tmp_path / "model_description.json").read_text())
    assert d["params"]["trainable"] == 667_396 and d["fits_budget"]
    assert "667,396" in (tmp_path / "model_description.txt").read_text()


def test_over_budget_refused_before_any_output(tiny_overrides, tmp_path, capsys):
    assert main(["train", *tiny_overrides, "budget=100"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lorafit: error: budget:") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "train.lrr=1"], "unknown key 'train.lrr'"),
        (["train", "train.lr=fast"], "key 'train.lr'"),
        (["train", "--config", "nope.yaml"], "nope.yaml not found"),
        (["predict", "no-such-run", "--input", "x.csv"], "no-such-run: no such run directory"),
    ],
)
def test_errors_are_one_line_with_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: lorafit " + command in out


def test_train_help_lists_config_keys(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = capsys.readouterr().out
    for key in [
        "model.name",
        "lora.layers",
        "lora.sections",
        "train.patience",
        "budget",
        "run.name",
    ]:
        assert key in out


def test_python_dash_m_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "lorafit", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "describe" in done.stdout


# ---- issue 13: a fast --help, and an API as quiet and as informative as the CLI

HEAVY = ["torch", "transformers", "matplotlib", "pandas", "numpy", "omegaconf"]

_HELP_SCRIPT = """
import contextlib, io, json, runpy, sys
HEAVY = {heavy!r}
seen = {{}}
for argv in [["--help"], ["train", "--help"], ["predict", "--help"], ["plan", "--help"],
             ["bogus"], ["train", "--resume"], ["predict", "run"]]:
    sys.argv = ["lorafit", *argv]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            runpy.run_module("lorafit", run_name="__main__")
        except SystemExit as e:
            code = e.code
    seen[" ".join(argv)] = [code, out.getvalue()[:200], sorted(m for m in HEAVY if m in sys.modules)]
import lorafit
dir(lorafit), lorafit.__all__, lorafit.__version__, lorafit.UserError, lorafit.Config
seen["import lorafit"] = [0, "", sorted(m for m in HEAVY if m in sys.modules)]
print(json.dumps(seen))
"""


def test_help_and_argument_errors_load_no_heavy_library():
    """`lorafit --help`, `lorafit CMD --help` and argument errors import no torch, transformers,
    matplotlib, pandas, numpy or omegaconf (those took the 1.6 s); nor does `import lorafit`.
    Checked on the imports, not the clock, so a busy machine cannot fail it."""
    script = _HELP_SCRIPT.format(heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    for argv, (code, printed, loaded) in seen.items():
        assert loaded == [], f"{argv}: imported {loaded}"
        if argv.endswith("--help"):
            assert code == 0 and printed.startswith("usage: lorafit"), (argv, printed)
        elif argv != "import lorafit":
            assert code == 2 and "usage: lorafit" in printed, (argv, printed)
    assert (
        "lora.r "
        in subprocess.run(
            [sys.executable, "-m", "lorafit", "train", "--help"], capture_output=True, text=True
        ).stdout
    )  # the epilog still lists the config keys


def test_package_functions_stay_functions_after_their_modules_load():
    """`lorafit.train` is imported lazily; importing lorafit/train.py must not replace it."""
    import lorafit
    import lorafit.plan
    import lorafit.predict
    import lorafit.train  # noqa: F401 - the import under test

    for name in ["train", "predict", "plan", "evaluate", "describe"]:
        assert callable(getattr(lorafit, name)) and getattr(lorafit, name).__name__ == name
    assert lorafit.train.__wrapped__ is sys.modules["lorafit.train"].train
    with pytest.raises(AttributeError):
        lorafit.no_such_function  # noqa: B018 - the attribute access under test


_API_SCRIPT = """
import pathlib, sys
import lorafit
runs, csv, empty = sys.argv[1:4]
run = lorafit.train(None, [
    "model.name=all-MiniLM-L6-v2", f"data.train={csv}", "data.val_size=40", "data.test=null",
    "model.max_length=32", "lora.layers=4-5", "train.max_steps=4", "train.eval_every=2",
    "train.log_every=2", "train.batch_size=8", "train.cache_activations=false", f"run.dir={runs}",
])
lorafit.train(resume=run)  # finished: says so
lorafit.predict(run, empty, str(pathlib.Path(runs) / "out.csv"))
print("RUN", run)
"""


def test_api_prints_what_the_cli_prints_and_nothing_raw(small_csv, tmp_path):
    """`lorafit.train/predict` in a plain script, output to pipes (not a terminal): lorafit's
    progress and info lines, warnings as log lines; no load report, no ANSI colours, no
    FutureWarning, no Python warning with a source line, no progress-bar redraws."""
    empty = tmp_path / "empty.csv"
    pd.DataFrame({"text": ["news of the day", "", "markets fall"]}).to_csv(empty, index=False)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _API_SCRIPT, str(tmp_path / "runs"), str(small_csv), str(empty)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    err, everything = done.stderr, done.stdout + done.stderr
    for line in [
        "new run directory",
        "train: 200 rows",
        "step 2: loss",
        "step 4: eval loss",
        "best eval_accuracy",
        "already finished (summary.json exists); nothing to resume",
        "warning: ",
        "1 rows have empty text; they still get a prediction",
    ]:
        assert line in err, (line, err)
    for raw in [
        "LOAD REPORT",
        "MISSING",
        "\x1b[",
        "FutureWarning",
        "UserWarning",
        "warnings.warn",
        "log.warning(",
        "\r",
        "Loading weights",
        "Writing model shards",
        "it/s]",
    ]:
        assert raw not in everything, (raw, everything)


def test_version_is_the_installed_packages_and_names_the_libraries(capsys):
    """One version number: pyproject.toml reads lorafit.__version__, the metadata pip wrote
    agrees, and `lorafit --version` prints it with the libraries' versions on one line."""
    from importlib.metadata import version

    import lorafit

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert version("lorafit") == lorafit.__version__
    assert out == (
        f"lorafit {lorafit.__version__} (Python {platform.python_version()}, torch {version('torch')}, "
        f"transformers {version('transformers')}, peft {version('peft')})\n"
    )
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'attr = "lorafit.__version__"' in text
    assert "\nversion = " not in text.split("[tool.")[0]  # no second number in [project]
