"""The site's Reference pages, generated from the code at build time so they cannot drift.

Run by the mkdocs-gen-files plugin (mkdocs.yml) on every `mkdocs build` / `mkdocs serve`:

- reference/cli.md: every `lorafit` command, its usage and each option's help, from the
  argparse parser the CLI itself uses (`lorafit.cli.build_parser`);
- reference/config.md: every config key with its type, default and help, from the config
  dataclasses (`lorafit.config`), the same text `lorafit train --help` prints;
- reference/api.md: every public name of `lorafit` (its `__all__`), rendered by mkdocstrings
  from the docstrings of the modules that define them.

tests/test_docs.py imports `cli_page` and `config_page` and checks that every command,
option and key has its text.
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
import typing

from lorafit.cli import build_parser
from lorafit.config import Config


def _cell(text: object) -> str:
    """Text for one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: object) -> str:
    """Text for a code span in a table cell: one line (a pipe inside backticks is no separator)."""
    return " ".join(str(text).split())


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of every subcommand, in the order `lorafit --help` lists."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, str, str]]:
    """(flags, default, help) of a parser's arguments, `--help` left out."""
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            flags = ", ".join(action.option_strings)
            if action.nargs != 0:
                metavar = action.metavar or (
                    "{" + ",".join(map(str, action.choices)) + "}"
                    if action.choices
                    else action.dest.upper()
                )
                flags += f" {metavar}"
        else:
            flags = str(action.metavar or action.dest)
            if action.nargs in ("*", "+"):
                flags += " ..."
        shown = "" if action.default in (None, False, argparse.SUPPRESS) else repr(action.default)
        rows.append((flags, shown, action.help or ""))
    return rows


def cli_page() -> str:
    """reference/cli.md: the whole command line, as argparse defines it."""
    parser = build_parser()
    lines = [
        "# Commands",
        "",
        "Generated from `lorafit.cli.build_parser` (the parser the command line uses) on every "
        "build of this site. Every command is also a Python function: see the "
        "[Python API](api.md). `lorafit COMMAND --help` prints the same text in a terminal; "
        "commands that take `--config FILE [key=value ...]` accept every key of the "
        "[configuration](config.md).",
        "",
        "```text",
        parser.format_usage().strip(),
        "```",
        "",
        "| option | default | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{f}` | {_cell(d)} | {_cell(h)} |" for f, d, h in _options(parser)]
    for name, help_text, sub in _subcommands(parser):
        lines += ["", f"## `lorafit {name}`", "", _cell(help_text) + "."]
        if sub.description:
            lines += ["", " ".join(sub.description.split())]
        lines += ["", "```text", sub.format_usage().strip(), "```", ""]
        lines += ["| argument | default | meaning |", "|---|---|---|"]
        lines += [f"| `{f}` | {_cell(d)} | {_cell(h)} |" for f, d, h in _options(sub)]
    return "\n".join(lines) + "\n"


def config_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) of every config key, sections expanded."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        factory = f.default_factory
        default = factory() if callable(factory) else f.default
        if dataclasses.is_dataclass(default):
            rows += config_keys(type(default), key + ".")
            continue
        kind = hints.get(f.name, f.type)
        kind = getattr(kind, "__name__", None) if isinstance(kind, type) else str(kind)
        kind = str(kind).replace("typing.", "")
        shown = "(required)" if default is dataclasses.MISSING else repr(default)
        rows.append((key, kind, shown, f.metadata.get("help", "")))
    return rows


def config_page() -> str:
    """reference/config.md: every key of a config file, section by section."""
    lines = [
        "# Configuration",
        "",
        "Generated from the config dataclasses of `lorafit.config` on every build of this site: "
        "the keys a YAML config file may hold (`lorafit train --config FILE`), with their type, "
        "default and meaning. Any key can be overridden on the command line as `key=value` "
        "(`train.lr=3e-4`, `'data.label_names=[neg,pos]'`); "
        "`lorafit train --help` prints the same table.",
        "",
        "Configs are YAML files mapped onto these dataclasses (loaded with OmegaConf). Unknown "
        "keys and wrong types or values are errors naming the key. An unknown key gets the "
        "likely one: a name other tools use (`lora.rank` -> `lora.r`, `learning_rate` -> `lr`, "
        "`num_train_epochs` -> `epochs`), the same name in another section "
        "(`train.max_length` -> `model.max_length`), or the closest spelling:",
        "",
        "```text",
        "lorafit: error: config (the command-line overrides): unknown key 'lora.rank'; "
        "did you mean 'lora.r'? see `lorafit train --help` for the keys",
        "```",
    ]
    section = None
    for key, kind, default, help_text in config_keys():
        top = key.split(".")[0]  # a section, or a top-level key (task, budget) of its own
        if top != section:
            section = top
            lines += ["", f"## `{top}`", ""]
            lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        lines.append(f"| `{key}` | `{_code(kind)}` | `{_code(default)}` | {_cell(help_text)} |")
    return "\n".join(lines) + "\n"


def api_page() -> str:
    """reference/api.md: one mkdocstrings block per public name, where it is defined."""
    import lorafit

    lines = [
        "# Python API",
        "",
        "Every subcommand is a function of the package (the CLI only parses its arguments and "
        "calls it), usable from a notebook. Generated from `lorafit.__all__` and the "
        "docstrings on every build of this site.",
        "",
        "```python",
        textwrap.dedent(lorafit.__doc__.split("usable from a notebook:\n\n")[1].split("\n\n")[0]),
        "```",
    ]
    for name in lorafit.__all__:
        module, attribute, _ = lorafit._EXPORTS[name]
        lines += ["", f"::: {module}.{attribute}", "    options:", f"      heading: lorafit.{name}"]
    return "\n".join(lines) + "\n"


PAGES = {
    "reference/cli.md": cli_page,
    "reference/config.md": config_page,
    "reference/api.md": api_page,
}

if __name__ == "<run_path>":  # run by mkdocs-gen-files
    import mkdocs_gen_files

    for path, make in PAGES.items():
        with mkdocs_gen_files.open(path, "w") as f:
            f.write(make())
        mkdocs_gen_files.set_edit_path(path, "gen_reference.py")
