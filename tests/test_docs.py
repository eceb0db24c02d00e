"""The README documents what exists: every config key, every subcommand."""

from __future__ import annotations

from lorafit.cli import COMMANDS, build_parser
from lorafit.config import config_reference

from .conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_every_config_key_is_in_the_readme():
    missing = [key for key, _, _ in config_reference() if f"`{key}`" not in README]
    assert not missing, f"README lacks config keys: {missing}"


def test_every_subcommand_is_in_the_readme():
    parser = build_parser()
    names = parser._subparsers._group_actions[0].choices.keys()
    assert len(names) == len(COMMANDS)
    missing = [n for n in names if f"lorafit {n}" not in README]
    assert not missing, f"README lacks subcommands: {missing}"


# the Python function behind each subcommand (the CLI only parses and calls it)
FUNCTIONS = {
    "train": "train", "describe": "describe", "predict": "predict", "evaluate": "evaluate",
    "plots": "write_plots", "log": "write_training_log", "report": "write_report",
    "sweep": "sweep", "ensemble": "ensemble", "export": "export_merged", "plan": "plan",
    "bench": "run_bench",
}


def test_every_subcommand_is_a_documented_function_of_the_package():
    import inspect

    import lorafit

    names = build_parser()._subparsers._group_actions[0].choices.keys()
    assert sorted(names) == sorted(FUNCTIONS)
    for command, name in FUNCTIONS.items():
        fn = getattr(lorafit, name)
        assert name in lorafit.__all__ and inspect.isfunction(fn), command
        assert len(inspect.getdoc(fn) or "") > 40, f"lorafit.{name} needs a docstring"
    assert "evaluate_perturbed" in lorafit.__all__  # evaluate --perturb
