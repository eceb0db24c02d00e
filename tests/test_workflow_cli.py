"""The CLI of the experiment workflow: plots, log, report, sweep, ensemble, export."""

from __future__ import annotations

import argparse

import pytest

from lorafit.cli import build_parser, main

WORKFLOW = ["plots", "log", "report", "sweep", "ensemble", "export"]


def registered_subcommands() -> list[str]:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


def test_workflow_subcommands_are_registered():
    assert set(WORKFLOW) <= set(registered_subcommands())


@pytest.mark.parametrize("command", registered_subcommands())
def test_help_of_every_registered_subcommand(command, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, "--help"])
    assert e.value.code == 0
    assert "usage: lorafit " + command in capsys.readouterr().out


@pytest.mark.parametrize(
    "command, words",
    [
        ("sweep", ["--parallel", "--gpus", "--dry-run", "SWEEP.yaml"]),
        (
            "ensemble",
            [
                "--method",
                "weighted",
                "vote",
                "--input",
                "--overwrite",
                "--text-column",
                "--label-column",
            ],
        ),
        ("predict", ["--input", "--dtype", "--text-column", "--label-column"]),
        ("evaluate", ["--perturb", "--text-column", "--label-column"]),
        ("export", ["--merged", "--overwrite"]),
        ("report", ["--output", "--leaderboard", "--overwrite"]),
    ],
)
def test_help_names_the_options(command, words, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    out = capsys.readouterr().out
    for word in words:
        assert word in out


@pytest.fixture
def trained(tiny_overrides, tmp_path):
    assert main(["train", *tiny_overrides]) == 0
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    return run_dir


def test_plots_log_and_report_commands(trained, tmp_path, capsys):
    import shutil

    shutil.rmtree(trained / "plots", ignore_errors=True)
    (trained / "training_log.txt").unlink(missing_ok=True)
    capsys.readouterr()

    assert main(["plots", str(trained)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed and all(p.endswith(".png") for p in printed)
    assert sorted(p.name for p in (trained / "plots").glob("*.png")) == sorted(
        p.rsplit("/", 1)[-1] for p in printed
    )
    assert (trained / "plots" / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["log", str(trained)]) == 0
    assert str(trained / "training_log.txt") in capsys.readouterr().out
    assert "Progress" in (trained / "training_log.txt").read_text()

    out = tmp_path / "report.html"
    assert main(["report", str(trained), "--output", str(out)]) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") or page.lower().startswith("<!doctype html>")
    assert "data:image/png;base64," in page
    assert main(["report", str(trained), "--output", str(out)]) == 2  # exists: needs --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["report", str(trained), "--output", str(out), "--overwrite"]) == 0


def test_plots_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert main(["plots", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such run directory" in err and err.count("\n") == 1
