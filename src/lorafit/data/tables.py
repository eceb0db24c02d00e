"""Tables: the rows of a file as texts (or text pairs) and class ids, checked row by row; splits.

    splits = load_splits(cfg.data, seed=42)   # train / validation (/ test), labels resolved
    table = load_table("dev.tsv", cfg.data)   # another file, read with the run's columns and classes

`load_splits` settles what the config left open from the training file (the text and label
columns when unset, the class list when `data.label_names` is empty, how predictions are
written when `data.label_format` is auto) and writes it back into the `DataConfig` it was
given, so the run's config.yaml records the choices and every later command reads files the
same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from lorafit.config import DataConfig
from lorafit.data.labels import (
    LABEL_SETS,
    cell_items,
    class_names,
    is_integer,
    is_multi_label,
    is_regression,
    label_ids,
    label_sets,
    label_values,
    normalise,
    set_names,
    written_as_ids,
)
from lorafit.data.readers import read_frame, resolve_source
from lorafit.errors import UserError

log = logging.getLogger("lorafit")


@dataclass
class TextTable:
    """Texts (and the second text of each pair), optional class ids, optional row ids, and
    where they came from."""

    texts: list[str]
    labels: np.ndarray | None
    source: str
    pairs: list[str] | None = None  # sentence pairs: the second text of each row
    ids: list[str] | None = None  # an id column passed through to predictions (--id-column)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> TextTable:
        idx = np.asarray(idx, dtype=np.int64)
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
        labels = None if self.labels is None else self.labels[idx]
        texts = cast("list[str]", pick(self.texts))  # never None
        return TextTable(texts, labels, self.source, pick(self.pairs), pick(self.ids))

    def with_texts(self, texts: list[str], pairs: list[str] | None = None) -> TextTable:
        """The same rows with other texts (perturbed, augmented)."""
        return dataclasses.replace(
            self, texts=texts, pairs=pairs if pairs is not None else self.pairs
        )


# ---------------------------------------------------------------- reading


def load_table(
    source: str,
    cfg: DataConfig,
    *,
    split: str = "train",
    need_labels: bool = True,
    allow_empty_text: bool = False,
    id_column: str | None = None,
) -> TextTable:
    """Read `source` (file, 'sample', or hub id) into a `TextTable`, checking every row.

    Labels map to ids through `cfg.label_names` (see `lorafit.data.labels`); without
    `need_labels`, a missing or empty label column gives a table without labels.
    """
    source = resolve_source(source)
    frame = read_frame(source, cfg, split)
    return to_table(
        frame,
        source,
        cfg,
        need_labels=need_labels,
        allow_empty=allow_empty_text,
        id_column=id_column,
    )


# ------------------------------------------------------------- checking


def to_table(
    frame: pd.DataFrame,
    source: str,
    cfg: DataConfig,
    *,
    need_labels: bool = True,
    allow_empty: bool = False,
    id_column: str | None = None,
) -> TextTable:
    """Check a frame's rows and turn them into a `TextTable` with `cfg`'s columns and classes."""
    from lorafit.data.columns import choose_columns

    if len(frame) == 0:
        raise UserError(f"{source}: has no rows; give a file with at least one row")
    frame = join_label_columns(frame, source, cfg, need_labels)
    texts, label = choose_columns(frame, source, cfg, need_label=need_labels)
    first = _check_texts(frame[texts[0]], source, allow_empty)
    pairs = _check_texts(frame[texts[1]], source, allow_empty) if len(texts) == 2 else None
    labels = None
    if label is not None and label in frame.columns:
        labels = _labels(frame[label].tolist(), source, cfg, need_labels)
    if id_column is not None:
        if id_column not in frame.columns:
            raise UserError(
                f"{source}: no id column '{id_column}' (found {_columns(frame)}); check --id-column"
            )
        ids = [normalise(v) for v in frame[id_column].tolist()]
    else:
        ids = None
    return TextTable(first, labels, source, pairs, ids)


def join_label_columns(
    frame: pd.DataFrame, source: str, cfg: DataConfig, need_labels: bool
) -> pd.DataFrame:
    """With data.label_columns (one 0/1 column per label): `frame` plus the column
    `LABEL_SETS` of each row's label set (`joy,love`), what the label-set reader takes; a file
    without those columns where no label is needed (predict) is left as it is."""
    if not cfg.label_columns:
        return frame
    names = [str(c) for c in frame.columns]
    missing = [c for c in cfg.label_columns if c not in names]
    if missing:
        if need_labels:
            raise UserError(
                f"{source}: no label column {missing[0]!r} (found {names[:8]}); check data.label_columns"
            )
        return frame
    frame = frame.set_axis(names, axis=1)
    marks = {}
    for c in cfg.label_columns:
        cells = [normalise(v).lower() for v in frame[c].tolist()]
        for i, v in enumerate(cells, start=1):
            if v not in ("0", "1", "true", "false"):
                raise UserError(
                    f"{source}: row {i}: column {c!r} holds {v!r}; data.label_columns reads 0/1 (or "
                    "true/false) in each label's column"
                )
        marks[c] = [v in ("1", "true") for v in cells]
    frame = frame.copy()
    frame[LABEL_SETS] = [
        ",".join(c for c in cfg.label_columns if marks[c][i]) for i in range(len(frame))
    ]
    return frame


def _columns(frame: pd.DataFrame) -> list[str]:
    return list(map(str, frame.columns))[:8]


def _labels(column: list, source: str, cfg: DataConfig, need_labels: bool) -> np.ndarray | None:
    """Class ids (a regression: numbers; multi-label: 0/1 rows) of a label column. Without
    `need_labels` (predict), a column with no label at all is no labels, and one that does not
    fit the run's classes is ignored with a warning."""
    if not need_labels and not any(normalise(v) for v in column):
        return None
    if is_regression(cfg):
        read = lambda: label_values(column, source)  # noqa: E731
    elif is_multi_label(cfg):
        names = cfg.label_names or _own_classes(
            [i for cell in column for i in cell_items(cell)], source
        )
        read = lambda: label_sets(column, source, names)  # noqa: E731
    else:
        names = cfg.label_names or _own_classes(column, source)
        read = lambda: label_ids(column, source, names)  # noqa: E731
    try:
        return read()
    except UserError as e:
        if need_labels:
            raise
        log.warning("%s; the label column is ignored (no metrics)", e)
        return None


def _own_classes(column: list, source: str) -> list[str]:
    """Classes of a file read without a run's class list: integers 0..max as their own ids,
    else the labels found, sorted."""
    found = class_names(column, source, at_least=1)
    if all(is_integer(v) and int(v) >= 0 for v in found):
        return [str(i) for i in range(int(found[-1]) + 1)]
    return found


def _check_texts(column: pd.Series, source: str, allow_empty: bool) -> list[str]:
    texts = []
    for i, value in enumerate(column.tolist(), start=1):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = ""
        if not isinstance(value, str):
            value = str(value)
        if not value.strip() and not allow_empty:
            raise UserError(f"{source}: row {i}: the text is empty; remove the row or fill it in")
        texts.append(value)
    return texts


# --------------------------------------------------------------- splits


def split_table(
    table: TextTable,
    val_size: float,
    seed: int,
    *,
    what: str = "validation",
    key: str = "data.val_size",
) -> tuple[TextTable, TextTable]:
    """A stratified, seeded split: (the rest, `val_size` rows (>= 1) or a fraction of them).

    Classes are kept in proportion; a regression's values by their quantile bins (`strata`).
    """
    from sklearn.model_selection import train_test_split

    n_val = int(val_size) if val_size >= 1 else max(1, round(val_size * len(table)))
    assert table.labels is not None  # the tables split are training tables: labelled
    if table.labels.ndim == 2:  # multi-label: each row by its rarest label
        strata = rarest_label_strata(table.labels)
    elif table.labels.dtype.kind == "f":
        strata = value_strata(table.labels, n_val)
    else:
        strata = table.labels
    classes = 1 if strata is None else len(np.unique(strata))
    if n_val < classes or len(table) - n_val < classes:
        kinds = (
            f"{classes} classes"
            if table.labels.dtype.kind != "f"
            else "regression labels"
            if table.labels.ndim == 1
            else f"{classes} label groups"
        )
        raise UserError(
            f"{table.source}: cannot split {n_val} {what} rows from {len(table)} rows with "
            f"{kinds}; lower {key} or give data.{what}"
        )
    try:
        tr, va = train_test_split(
            np.arange(len(table)), test_size=n_val, random_state=seed, stratify=strata
        )
    except ValueError as e:
        raise UserError(
            f"{table.source}: cannot stratify the {what} split ({e}); lower {key}"
        ) from None
    return table.subset(np.sort(tr)), table.subset(np.sort(va))


#: a regression's split keeps the share of each of at most this many quantile bins of the values
VALUE_BINS = 10


def value_strata(values: np.ndarray, n_split: int) -> np.ndarray | None:
    """Quantile-bin ids of regression labels to stratify a split of `n_split` rows by: as many
    bins (<= VALUE_BINS) as leave each at least 2 rows and both sides one row per bin; None
    (a plain seeded split) when not even 2 bins do."""
    values = np.asarray(values, dtype=np.float64)
    most = min(VALUE_BINS, n_split, len(values) - n_split)
    for bins in range(most, 1, -1):
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        strata = np.searchsorted(edges, values, side="right")
        counts = np.bincount(strata)
        counts = counts[counts > 0]
        if counts.min() >= 2 and len(counts) <= min(n_split, len(values) - n_split):
            return strata
    return None


def rarest_label_strata(labels: np.ndarray) -> np.ndarray | None:
    """A multi-label split's strata: each row's rarest label (in the whole table; rows without
    a label apart), a label held by fewer than 2 rows merged into one group; None (a plain
    seeded split) when fewer than 2 groups remain."""
    counts = labels.sum(axis=0)
    rank = np.where(labels > 0, counts[None, :], np.inf)
    strata = np.where(labels.any(axis=1), rank.argmin(axis=1), labels.shape[1])
    sizes = np.bincount(strata, minlength=labels.shape[1] + 1)
    strata = np.where(sizes[strata] >= 2, strata, labels.shape[1] + 1)
    if np.bincount(strata)[np.bincount(strata) > 0].min() < 2 or len(np.unique(strata)) < 2:
        return None
    return strata


def stratified_subset(table: TextTable, rows: int, seed: int) -> TextTable:
    """At most `rows` rows, keeping the class proportions (seeded)."""
    if rows >= len(table):
        return table
    train, _ = split_table(table, len(table) - rows, seed)
    return train


def load_splits(cfg: DataConfig, seed: int) -> dict[str, TextTable]:
    """train / validation (/ test) tables for a training run.

    Settles `cfg`'s open choices from the training file, in place (see the module docstring).
    Validation comes from data.validation or a stratified, seeded data.val_size split; a test
    split from data.test or data.test_size (taken first, so validation never holds its rows).
    `seed` (the run's train.seed) seeds the splits unless data.split_seed is set.
    """
    if cfg.split_seed is not None:
        seed = cfg.split_seed
    train_source = _require_train(cfg)
    frame = read_frame(train_source, cfg, "train")
    settle(frame, train_source, cfg)
    train = to_table(frame, train_source, cfg)
    splits: dict[str, TextTable] = {}
    if cfg.test_size:
        train, splits["test"] = split_table(
            train, cfg.test_size, seed + 1, what="test", key="data.test_size"
        )
    if cfg.validation:
        val = load_table(cfg.validation, cfg, split="validation")
    else:
        train, val = split_table(train, cfg.val_size, seed)
    if cfg.max_train_rows:
        train = stratified_subset(train, cfg.max_train_rows, seed)
    splits = {"train": train, "validation": val, **splits}
    if cfg.test:
        splits["test"] = load_table(cfg.test, cfg, split="test")
    return splits


def _require_train(cfg: DataConfig) -> str:
    if not cfg.train:
        raise UserError(
            "data.train: no training file; give one (data.train=my.csv), or data.train=sample for "
            "the news sample shipped with lorafit"
        )
    return resolve_source(cfg.train)


_SETTLED: dict[tuple, tuple] = {}


def settle_classes(cfg: DataConfig) -> None:
    """Fill an empty `data.label_names` (and the columns) from the training file's labels, in
    place: what counting the head needs before any training (describe, plan, a sweep's budget
    check). Each file is read once per process (keyed by path, size and time)."""
    if cfg.label_names:
        return
    if not cfg.train:
        raise UserError(
            "the classes are unknown, so the head cannot be built or counted: set data.train (its "
            "labels give the classes) or data.label_names (e.g. data.label_names=[World,Sports,Business,Sci/Tech])"
        )
    source = _require_train(cfg)
    stat = os.stat(source) if os.path.exists(source) else None
    key = (
        source,
        stat and (stat.st_size, stat.st_mtime_ns),
        repr(cfg.text_column),
        cfg.label_column,
        repr(cfg.columns),
        cfg.quoting,
        cfg.encoding,
        cfg.label_format,
        getattr(cfg, "_task", ""),
    )
    if key not in _SETTLED:
        settle(read_frame(source, cfg, "train"), source, cfg)
        _SETTLED[key] = (cfg.text_column, cfg.label_column, list(cfg.label_names), cfg.label_format)
    cfg.text_column, cfg.label_column, names, cfg.label_format = _SETTLED[key]
    cfg.label_names = list(names)


def settle(frame: pd.DataFrame, source: str, cfg: DataConfig) -> None:
    """Fill in `cfg`'s text and label columns, class list and label format from a training frame."""
    from lorafit.data.columns import choose_columns

    class_labels = frame.attrs.get("class_labels", {})  # a hub or saved dataset's ClassLabel names
    frame = join_label_columns(frame, source, cfg, need_labels=True)
    texts, label = choose_columns(frame, source, cfg, need_label=True)
    cfg.text_column = texts[0] if len(texts) == 1 else list(texts)
    cfg.label_column = (
        None if label == LABEL_SETS else label
    )  # data.label_columns: they stay as given
    column = frame[label].tolist()
    if is_regression(cfg):  # one output, named by data.label_names or after the label column
        label_values(column, source)
        cfg.label_names = list(cfg.label_names) or [str(label)]
        return
    if is_multi_label(
        cfg
    ):  # every label a row holds, or data.label_names (data.label_columns' names)
        names = set_names(column, source, cfg.label_names or cfg.label_columns or ())
        if cfg.label_format == "auto":
            items = [i for cell in column for i in cell_items(cell)]
            cfg.label_format = "ids" if items and written_as_ids(items, names) else "names"
        cfg.label_names = list(names)
        return
    given = cfg.label_names
    if not given and class_labels.get(label):  # ids 0..K-1 named by the dataset's ClassLabel
        given = class_labels[label]
        log.info(
            "%s: classes named by the dataset's ClassLabel '%s': %s",
            source,
            label,
            ", ".join(given),
        )
    names = class_names(column, source, given)
    if not given and looks_continuous(names):
        log.warning(
            "%s: the label column '%s' holds %d distinct numbers, some fractional (%s, ...), each "
            "read as a class; if they are values to predict, set task: regression",
            source,
            label,
            len(names),
            ", ".join([n for n in names if not float(n).is_integer()][:3]),
        )
    if cfg.label_names and len(names) > len(set(normalise(v) for v in column)):
        log.info(
            "%s: classes in data.label_names absent from training: %s",
            source,
            ", ".join(
                n for i, n in enumerate(names) if i not in set(label_ids(column, source, names))
            ),
        )
    if cfg.label_format == "auto":
        cfg.label_format = "ids" if written_as_ids(column, names) else "names"
    cfg.label_names = list(names)


#: a classification's labels that look like a regression's values: more distinct numbers than this
CONTINUOUS_CLASSES = 20


def looks_continuous(names: list[str]) -> bool:
    """True for class names that are many numbers, some with a fraction (STS-B's 0.0-5.0 scores)."""
    if len(names) <= CONTINUOUS_CLASSES:
        return False
    try:
        numbers = [float(n) for n in names]
    except ValueError:
        return False
    return any(not x.is_integer() for x in numbers)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (hex); of a folder (a saved dataset): its files' names and bytes."""
    h = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if path.is_dir():
            h.update(f"{p.relative_to(path)}\0".encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
