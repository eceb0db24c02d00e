"""The documentation (README.md and the site's pages under docs/) documents what exists:
every config key, every subcommand, and its examples print what the tool prints.

Examples written as a fenced block whose first line is `$ lorafit ...` are run (as
`python -m lorafit ...` from the repository's root, offline) and their output compared with
the block, after one documented normalisation: trailing spaces are ignored, and a last line
`...` means the block shows only the first lines of the output. Figures of a trained run
(only the quickstart's `evaluate`) are compared within a stated tolerance. An example that cannot run
here is listed in NOT_RUN with the reason, so a new example is either run or explained.
The site's Reference pages are generated at build time (docs/gen_reference.py); the tests
here check that every key and command has the text they are made from.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lorafit.cli import COMMANDS, build_parser
from lorafit.config import config_reference

from .conftest import ROOT

# the README and every page of the site, in a fixed order: the documentation a user reads
PAGES = {
    path: path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
}
README = "\n\n".join(PAGES.values())


def test_every_subcommand_is_in_the_readme():
    parser = build_parser()
    names = parser._subparsers._group_actions[0].choices.keys()
    assert len(names) == len(COMMANDS)
    missing = [n for n in names if f"lorafit {n}" not in README]
    assert not missing, f"README lacks subcommands: {missing}"


# the Python function behind each subcommand (the CLI only parses and calls it)
FUNCTIONS = {
    "train": "train",
    "describe": "describe",
    "predict": "predict",
    "evaluate": "evaluate",
    "plots": "write_plots",
    "log": "write_training_log",
    "report": "write_report",
    "sweep": "sweep",
    "ensemble": "ensemble",
    "export": "export_merged",
    "plan": "plan",
    "bench": "run_bench",
    "teacher": "build_teacher",
    "cache": "list_caches",
    "check-data": "check_data",
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
    assert "remove_caches" in lorafit.__all__  # cache KEY... / --older-than


# ---------------------------------------------------------------- the README's examples


def readme_examples(text: str = README) -> dict[str, str]:
    """{command: shown output} of every fenced block that starts with `$ lorafit`."""
    examples, block = {}, None
    for line in text.splitlines():
        if line.startswith("```"):
            if block and block[0].startswith("$ lorafit "):
                examples[block[0][2:]] = "\n".join(block[1:])
            block = None if block is not None else []
        elif block is not None:
            block.append(line)
    return examples


# examples run here (offline: roberta-base's shape is known to lorafit, no weights needed)
RUN = [
    "lorafit describe --config configs/agnews_roberta_latent.yaml",
    "lorafit plan model.name=roberta-base 'data.label_names=[World,Sports,Business,Sci/Tech]' --budget 1000000 --top 8",
]
# examples not run by this file, and why
NOT_RUN = {
    "lorafit evaluate runs/latest --input sample-test": "scores the quickstart's trained run; "
    "run by test_quickstart_then_evaluate_prints_the_readme_figures (slow)",
}


def _normalise(output: str) -> list[str]:
    return [line.rstrip() for line in output.strip("\n").splitlines()]


_NUMBER = re.compile(r"-?\d+\.\d+")


def _same_line(shown: str, printed: str, tolerance: float) -> bool:
    """Equal; or, with a tolerance, equal but for decimals that differ by at most it."""
    if shown == printed or not tolerance:
        return shown == printed
    if _NUMBER.sub("#", shown) != _NUMBER.sub("#", printed):
        return False
    pairs = zip(_NUMBER.findall(shown), _NUMBER.findall(printed))
    return all(abs(float(a) - float(b)) <= tolerance for a, b in pairs)


def compare(shown: str, printed: str, tolerance: float = 0.0) -> None:
    """The block equals the output (trailing spaces aside); a last line `...` = a prefix.

    `tolerance` (for figures of a trained run only): decimals may differ by that much.
    """
    shown_lines, printed_lines = _normalise(shown), _normalise(printed)
    if shown_lines and shown_lines[-1] == "...":
        shown_lines = shown_lines[:-1]
        printed_lines = printed_lines[: len(shown_lines)]
    same = len(shown_lines) == len(printed_lines) and all(
        _same_line(a, b, tolerance) for a, b in zip(shown_lines, printed_lines)
    )
    assert same, (
        "README example output differs from what the tool prints; fix the README (the tool "
        "is the reference) or the tool.\n--- README\n"
        + "\n".join(shown_lines)
        + "\n--- printed\n"
        + "\n".join(printed_lines)
    )


def run_example(command: str, cwd=ROOT) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "lorafit", *shlex.split(command)[1:]]
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command} failed:\n{done.stderr[-2000:]}"
    return done.stdout


def test_every_readme_example_is_run_or_explained():
    examples = readme_examples()
    assert set(RUN) <= set(examples), (
        f"RUN lists examples the README no longer has: {set(RUN) - set(examples)}"
    )
    assert set(NOT_RUN) <= set(examples), set(NOT_RUN) - set(examples)
    unexplained = set(examples) - set(RUN) - set(NOT_RUN)
    assert not unexplained, f"README examples neither run nor listed in NOT_RUN: {unexplained}"


def test_the_comparison_catches_a_changed_figure():
    shown = "total         125,316,104\ntrainable         667,396  (0.533%)"
    compare(shown + "\n", shown + "   \n")  # trailing spaces aside
    compare(shown.splitlines()[0] + "\n...", shown)  # `...`: only the first line is shown
    with pytest.raises(AssertionError, match="differs"):
        compare(shown.replace("125,316,104", "125,346,824"), shown)
    with pytest.raises(AssertionError, match="differs"):
        compare(shown, shown + "\nbias  none")  # a line the README lacks
    trained = "rows 160   accuracy 0.9563   macro-F1 0.9563   loss 0.1731"
    compare(trained, trained.replace("0.9563", "0.9625"), tolerance=0.02)
    for old, wrong in (("0.9563", "0.9000"), ("rows 160", "rows 161"), ("loss", "lost")):
        with pytest.raises(AssertionError, match="differs"):
            compare(trained, trained.replace(old, wrong), tolerance=0.02)


@pytest.mark.parametrize("command", RUN)
def test_readme_example_prints_what_the_readme_shows(command):
    compare(readme_examples()[command], run_example(command))


def test_readme_counts_agree_with_the_describe_example():
    # the seed recipe's comment and the describe example give the same trainable count
    shown = readme_examples()[RUN[0]]
    trainable = re.search(r"^trainable\s+([\d,]+)", shown, re.M).group(1)
    assert f"configs/agnews_roberta_latent.yaml      # {trainable} trainable" in README
    assert f"| seed recipe: query+value, r=8, layers 9-11 | {trainable} |" in README


def readme_commands(text: str = README) -> list[str]:
    """Every `lorafit ...` command of the README's shell blocks (`bash`, plain, `$ ` lines)."""
    commands, block = [], None
    for line in text.replace("\\\n", " ").splitlines():
        if line.startswith("```"):
            block = None if block is not None else line[3:].strip()
        elif block in ("bash", "sh", ""):
            for part in re.split(r"&&|;|\|", line.split(" #")[0]):
                part = part.strip().removeprefix("$ ").split(" > ")[0]
                if part.startswith("lorafit "):
                    commands.append(part)
    return commands


def test_every_readme_command_parses_and_its_config_loads(monkeypatch):
    """Options that exist, config files that exist, override keys that exist."""
    from lorafit.config import load_config

    monkeypatch.chdir(ROOT)
    commands = readme_commands()
    assert len(commands) > 15 and RUN[0] in commands
    for command in commands:
        try:
            args = build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit as stop:  # --help and --version exit 0 after printing
            if stop.code != 0:
                pytest.fail(f"documented command does not parse: {command}")
            continue
        if getattr(args, "config", None):
            assert (ROOT / args.config).is_file(), f"{command}: no file {args.config}"
        if hasattr(args, "overrides") and args.command != "sweep":
            load_config(getattr(args, "config", None), args.overrides)  # raises on a bad key
        if args.command == "sweep":
            assert (ROOT / args.sweep_file).is_file(), command


def test_readme_python_snippets_compile_and_name_real_functions():
    """Not run (they train), but each parses and every `lorafit.NAME` it uses exists."""
    import ast

    import lorafit

    snippets = re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)
    assert snippets
    for snippet in snippets:
        tree = ast.parse(snippet)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "lorafit":
                assert hasattr(lorafit, node.attr), (
                    f"README uses lorafit.{node.attr}, which does not exist"
                )


@pytest.mark.slow
def test_quickstart_then_evaluate_prints_the_readme_figures(tmp_path):
    """The quickstart's training, then the README's `evaluate` example, from an empty folder.

    Figures of a trained run move in the last digits with the thread count and with bf16
    (used where the CPU computes it natively), so decimals are compared within 0.02 (three
    of the 160 rows); everything else exactly. Measured here: 0.9625 / 0.1513 (1 thread).
    """
    run_example(f"lorafit train --config {ROOT / 'configs' / 'quickstart.yaml'}", cwd=tmp_path)
    command = "lorafit evaluate runs/latest --input sample-test"
    compare(readme_examples()[command], run_example(command, cwd=tmp_path), tolerance=0.02)


# ---------------------------------------------------------------- the site's generated Reference


def _gen_reference():
    """docs/gen_reference.py, the script mkdocs-gen-files runs, imported as a module."""
    import runpy

    return runpy.run_path(str(ROOT / "docs" / "gen_reference.py"))


def test_every_command_and_option_has_its_help_text():
    """The Commands page is made from argparse: a command or option without help is a gap."""
    gen = _gen_reference()
    parser = build_parser()
    commands = gen["_subcommands"](parser)
    assert sorted(name for name, _, _ in commands) == sorted(FUNCTIONS)
    lacking = [name for name, help_text, _ in commands if not help_text.strip()]
    for name, _, sub in [("lorafit", "", parser), *commands]:
        lacking += [
            f"{name} {flags}" for flags, _, help_text in gen["_options"](sub) if not help_text
        ]
    assert not lacking, f"commands or options without help text: {lacking}"
    page = gen["cli_page"]()
    for name, _, sub in commands:
        assert f"## `lorafit {name}`" in page
        for flags, _, _ in gen["_options"](sub):
            assert f"| `{flags}` |" in page, (name, flags)


def test_every_config_key_has_its_type_default_and_help_on_the_reference_page():
    gen = _gen_reference()
    rows = gen["config_keys"]()
    assert [key for key, *_ in rows] == [key for key, _, _ in config_reference()]
    lacking = [key for key, _, _, help_text in rows if not help_text.strip()]
    assert not lacking, f"config keys without help text (config.py `_f(..., help)`): {lacking}"
    page = gen["config_page"]()
    for key, kind, default, _ in rows:
        assert f"| `{key}` | `{kind}` | `{default}` |" in page, key
    assert "| `train.lr` | `float` | `0.0002` |" in page  # a real default, typed


def test_the_api_page_documents_every_public_name_where_it_is_defined():
    import importlib

    import lorafit

    page = _gen_reference()["api_page"]()
    for name in lorafit.__all__:
        module, attribute, _ = lorafit._EXPORTS[name]
        assert f"::: {module}.{attribute}\n" in page
        assert getattr(importlib.import_module(module), attribute).__doc__, name


# ---------------------------------------------------------------- the built site, in a browser


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """`mkdocs build --strict` of the repository's docs/, as CI runs it."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    argv = [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.browser
def test_the_site_renders_its_navigation_and_a_tutorial_in_headless_chromium(site, tmp_path):
    from .test_report import CHROMIUM, _chromium

    assert CHROMIUM.exists(), f"{CHROMIUM} is not installed (.ci/run installs it)"
    result = _chromium(
        tmp_path, "--virtual-time-budget=5000", "--dump-dom", (site / "index.html").as_uri()
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    # the primary navigation (nested <nav>s inside it) up to the page's own table of contents
    start = dom.find('<nav class="md-nav md-nav--primary"')
    assert start >= 0, "the primary navigation did not render"
    nav = re.sub(r"\s+", " ", dom[start : dom.find("md-sidebar--secondary", start)])
    sections = ["Get started", "Tutorials", "How-to guides", "Reference", "Explanation"]
    for section in [*sections, "Measured figures", "Project"]:
        assert re.search(rf"> ?{section} ?<", nav), f"navigation lacks {section!r}"
    assert 'href="tutorials/own-data/"' in nav and 'href="reference/config/"' in nav

    page = site / "tutorials" / "own-data" / "index.html"
    shot = tmp_path / "tutorial.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels[:800].std() > 20, "the top of the tutorial page looks blank"
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()).stdout
    article = re.search(r'<article class="md-content__inner.*?</article>', dom, re.S).group(0)
    assert "<h1" in article and "SMS" in article and "<code" in article
    assert 'class="md-content"' in dom and "md-sidebar--primary" in dom
