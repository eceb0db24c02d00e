"""What lorafit prints: its own progress lines on stderr, the libraries below it quiet.

The CLI and the package-level API functions (`lorafit.train`, `lorafit.predict`, ...) run inside
`console()`, so a notebook sees what the command line sees:

- lorafit's INFO lines (data summary, `step N: loss ...`, evaluations, where files went) go to
  stderr as plain lines; warnings get a `warning: ` prefix. When the process has configured
  logging itself (a handler on the root logger, as `logging.basicConfig` or pytest add), the
  lines go to those handlers instead, and a level set on the `lorafit` logger is kept.
- transformers' info/warning chatter (the load report, its progress bars) and the libraries'
  FutureWarnings are hidden.

The logging and warning settings are put back on exit; transformers stays at errors-only
without progress bars for the rest of the process (as the CLI always left it: a model loaded
later by lorafit's own inner functions stays quiet too). A nested `console()` does nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager

log = logging.getLogger("lorafit")

# FutureWarnings from these packages (and from lorafit's calls into them) are not the user's to act on
_LIBRARIES = (
    r"(transformers|peft|accelerate|torch|huggingface_hub|datasets|tokenizers|lorafit)(\.|$)"
)

_depth = 0


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


class _ConsoleHandler(logging.StreamHandler):
    """lorafit's lines on stderr while `console()` is active; above a live progress bar (a
    terminal's: elsewhere train.py draws none), not glued to its end."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm = sys.modules.get("tqdm")
        if tqdm is None or not getattr(tqdm.tqdm, "_instances", None):
            return super().emit(record)
        try:
            tqdm.tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging's own rule: report, do not raise
            self.handleError(record)


@contextmanager
def console(libraries: bool = True):
    """Show lorafit's progress lines and quiet the libraries (see the module docstring).

    `libraries=False` leaves transformers alone (and unimported): for commands that only read
    files a run wrote.
    """
    global _depth
    if _depth:
        yield
        return
    _depth += 1
    from lorafit.cores import mark_start

    mark_start()  # the machine's load is measured from here to the first thread-count choice
    level = log.level
    handler = None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=_LIBRARIES)
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            if libraries:
                _quiet_transformers()
            if not logging.getLogger().handlers and not _has_stream_handler(log):
                handler = _ConsoleHandler(sys.stderr)
                handler.setFormatter(_Format("%(message)s"))
                log.addHandler(handler)
            if level == logging.NOTSET:
                log.setLevel(logging.INFO)
            yield
    finally:
        _depth -= 1
        if handler is not None:
            log.removeHandler(handler)
        log.setLevel(level)


def _has_stream_handler(logger: logging.Logger) -> bool:
    return any(
        type(h) is logging.StreamHandler or isinstance(h, _ConsoleHandler) for h in logger.handlers
    )


def _quiet_transformers() -> None:
    """Errors only from transformers, no progress bars (its load report is a warning)."""
    from transformers.utils import logging as tf_logging

    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()
