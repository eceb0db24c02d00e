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
