"""Columns: which column holds the text (or the two texts of a pair) and which the label.

`data.text_column` / `data.label_column` name them. Left unset (null), they are the columns
named `text` / `label`, else the obvious cases are guessed and said in one log line: the one
text-like column (long, mostly distinct, not numbers) and the one label-like column (short
values, a few distinct ones, none empty). Anything less clear is one line listing the
columns. Where no label is needed (a file to predict), a column named `label` is read when
there is one (for scores) and never guessed; columns of lists (token ids) are neither text
nor label.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from lorafit.config import DataConfig, text_columns
from lorafit.data.labels import LABEL_SETS, is_multi_label
from lorafit.errors import UserError

log = logging.getLogger("lorafit")


def choose_columns(
    frame: pd.DataFrame, source: str, cfg: DataConfig, *, need_label: bool
) -> tuple[list[str], str | None]:
    """(text columns, label column or None) of `frame` under `cfg`; a `UserError` names the key."""
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    texts = text_columns(cfg.text_column)
    for c in texts:
        if c not in columns:
            raise UserError(
                f"{source}: no column '{c}' (found {columns[:8]}); set data.text_column"
            )
    label = cfg.label_column
    label_columns = getattr(cfg, "label_columns", None)
    if label_columns:  # one 0/1 column per label, joined into label sets
        label = LABEL_SETS
        frame = frame.drop(columns=[c for c in label_columns if c in columns])  # never text
        columns = [c for c in columns if c not in label_columns]
    if label is not None and label not in columns:
        if need_label:
            raise UserError(
                f"{source}: no label column '{label}' (found {columns[:8]}); set data.label_column"
            )
        label = None
    guessed = []  # said in the log; a column found by its default name (text, label) is not a guess
    if not texts:
        texts = [_guess_text(frame, source, exclude={label})]
        if texts[0] != "text":
            guessed.append(f"text column '{texts[0]}'")
    if label is None and need_label:
        label = _guess_label(frame, source, exclude=set(texts), multi=is_multi_label(cfg))
        if label != "label":
            guessed.append(f"label column '{label}'")
    elif label is None and "label" in columns and "label" not in texts:
        label = "label"  # labels where the file has them (scored), none where it has not
    if guessed:
        log.info(
            "%s: %s (guessed from the columns %s; set data.text_column / data.label_column to choose)",
            source,
            ", ".join(guessed),
            ", ".join(columns[:12]),
        )
    return texts, label


def _guess_text(frame: pd.DataFrame, source: str, exclude: set) -> str:
    if "text" in frame.columns and "text" not in exclude:
        return "text"
    found = [c for c in frame.columns if c not in exclude and _text_like(frame[c])]
    if len(found) == 1:
        return found[0]
    which = "several text-like columns" if found else "no text-like column"
    raise UserError(
        f"{source}: cannot tell the text column ({which} among {list(frame.columns)[:12]}); "
        "set data.text_column (or [first, second] for sentence pairs)"
    )


def _guess_label(frame: pd.DataFrame, source: str, exclude: set, multi: bool = False) -> str:
    """`label`, else the one label-like column; a multi-label run also takes `labels` and a
    column of lists (a `datasets` folder's or parquet file's label sets)."""
    for name in ("label", "labels") if multi else ("label",):
        if name in frame.columns and name not in exclude:
            return name
    if multi:
        lists = [c for c in frame.columns if c not in exclude and not _scalar(frame[c])]
        if len(lists) == 1:
            return lists[0]
    found = [c for c in frame.columns if c not in exclude and _label_like(frame[c])]
    if len(found) == 1:
        return found[0]
    which = f"{', '.join(found)} all look like labels" if found else "no label-like column"
    raise UserError(
        f"{source}: cannot tell the label column ({which}; columns {list(frame.columns)[:12]}); "
        "set data.label_column"
    )


def _cells(column: pd.Series) -> pd.Series:
    return column.map(_cell)


def _cell(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _scalar(column: pd.Series) -> bool:
    """Not a column of lists or arrays (token ids, multi-label lists from a `datasets` folder)."""
    return not column.map(lambda v: isinstance(v, (list, tuple, dict, np.ndarray))).any()


def _text_like(column: pd.Series) -> bool:
    """Long, mostly distinct values that are not numbers."""
    if not _scalar(column):
        return False
    cells = _cells(column)
    filled = cells[cells != ""]
    if len(filled) == 0 or pd.to_numeric(filled, errors="coerce").notna().mean() > 0.5:
        return False
    return filled.str.len().mean() >= 15 and filled.nunique() >= 0.5 * len(filled)


def _label_like(column: pd.Series) -> bool:
    """No empty cell, short values, few distinct ones (at least 2)."""
    if not _scalar(column):
        return False
    cells = _cells(column)
    if (cells == "").any() or len(cells) < 2:
        return False
    distinct = cells.nunique()
    return 2 <= distinct <= max(2, min(1000, len(cells) // 2)) and cells.str.len().mean() <= 40
