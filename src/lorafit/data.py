"""Data: read labelled or unlabelled texts from the hub or local files, split, tokenise, batch.

    table = load_table("../shared/data/ag_news/train_subset.csv", cfg.data)
    train, val = split_table(table, val_size=640, seed=42)

Formats, chosen by the file's ending: `.csv` (a header naming the text and label columns, or
the original AG News CSV: no header, `"class","title","description"`, class 1-4),
`.parquet`, `.jsonl`/`.json` (JSON lines), `.pkl`/`.pickle` (the competition's pickled
`datasets.Dataset`, read by an allow-list unpickler that runs no code), and `sample` /
`sample-test` for the news sample shipped with lorafit. Anything else that is not an existing
path is taken for a hub dataset id.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from lorafit.config import DataConfig
from lorafit.errors import UserError
from lorafit.hub import ensure_hub_reachable

TABULAR = {".csv", ".parquet", ".jsonl", ".json", ".pkl", ".pickle"}
AG_CLASSES = {"1", "2", "3", "4"}


@dataclass
class TextTable:
    """Texts with optional integer labels, and where they came from."""

    texts: list[str]
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> TextTable:
        idx = np.asarray(idx, dtype=np.int64)
        labels = None if self.labels is None else self.labels[idx]
        return TextTable([self.texts[i] for i in idx], labels, self.source)


# ---------------------------------------------------------------- reading


def load_table(
    source: str,
    cfg: DataConfig,
    *,
    split: str = "train",
    need_labels: bool = True,
    allow_empty_text: bool = False,
) -> TextTable:
    """Read `source` (file, 'sample', or hub id) into a `TextTable`, checking every row."""
    source = resolve_source(source)
    if os.path.exists(source):
        frame = _read_file(Path(source), cfg)
    elif Path(source).suffix.lower() in TABULAR or os.sep in source and source.startswith("."):
        raise UserError(f"{source}: file not found; check the path (relative to {os.getcwd()})")
    else:
        frame = _read_hub(source, split, cfg)
    return _to_table(frame, source, cfg, need_labels, allow_empty_text)


SAMPLES = {"sample": "sample_news_train.csv", "sample-test": "sample_news_test.csv"}


def resolve_source(source: str) -> str:
    """'sample' / 'sample-test' -> the news sample shipped with lorafit; anything else as is."""
    if source in SAMPLES:
        return str(resources.files("lorafit") / "assets" / SAMPLES[source])
    return source


def _read_file(path: Path, cfg: DataConfig) -> pd.DataFrame:
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a data file (.csv, .parquet, .jsonl, .pkl)")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty; give a file with a header and rows")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return _read_csv(path, cfg)
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=True, dtype=False)
        if suffix in (".pkl", ".pickle"):
            return _read_pickle(path)
    except UserError:
        raise
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (bad byte at offset {e.start}); re-save it as UTF-8") from None
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise UserError(_reading_problem(path, suffix, e)) from None
    raise UserError(
        f"{path}: unknown file type {suffix or '(none)'}; use .csv, .parquet, .jsonl or .pkl"
    )


def _reading_problem(path: Path, suffix: str, e: Exception) -> str:
    """A one-line message for a file the parser rejected, naming the line where we can."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", first)
    if fields:
        want, line, saw = fields.groups()
        return (
            f"{path}: line {line} has {saw} fields, the header {want}; put texts that contain "
            'commas in double quotes ("a, b") or remove the extra field'
        )
    quote = re.search(r"EOF inside string starting at row (\d+)", first)
    if quote:
        return (
            f"{path}: a quote opened in row {quote[1]} is never closed; write a quote inside a "
            'quoted text as two ("") or remove it'
        )
    if suffix in (".jsonl", ".json"):
        line = _first_bad_json_line(path)
        if line:
            return f"{path}: line {line} is not a JSON object; write one JSON object per line"
    return f"{path}: cannot read as {suffix[1:]} ({first}); check the file's format"


def _first_bad_json_line(path: Path) -> int | None:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line), dict):
                    return n
            except ValueError:
                return n
    return None


def _read_csv(path: Path, cfg: DataConfig) -> pd.DataFrame:
    with open(path, encoding="utf-8", newline="") as f:
        first = next(csv.reader(f), [])
    if cfg.text_column in first:
        # Every line is a row, blank ones too: skipping a blank (or whitespace-only) text
        # line would shift every later row's ID in a submission. Trailing blank lines go.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", skip_blank_lines=False)
        if None in frame.columns or any(str(c).startswith("Unnamed:") for c in frame.columns):
            raise UserError(f"{path}: a header column is empty; name every column in row 1")
        filled = frame.fillna("").apply(lambda c: c.astype(str).str.strip() != "").any(axis=1).to_numpy()
        return frame.iloc[: int(np.flatnonzero(filled)[-1]) + 1 if filled.any() else 0]
    if len(first) == 3 and first[0].strip().isdigit():
        return _read_ag_original(path, cfg)
    for sep, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
        if len(first) == 1 and cfg.text_column in first[0].split(sep):
            raise UserError(
                f"{path}: the header {first[0]!r} is {name}-separated; save the file with commas "
                "as the separator (or as .jsonl / .parquet)"
            )
    raise UserError(
        f"{path}: no '{cfg.text_column}' column in the header {first[:6]} and not the original "
        f"AG News format (class,title,description); set data.text_column / data.label_column"
    )


def _read_ag_original(path: Path, cfg: DataConfig) -> pd.DataFrame:
    """The original AG News CSV: class 1-4, title, description -> text, label 0-3."""
    frame = pd.read_csv(
        path, header=None, dtype=str, keep_default_na=False, encoding="utf-8", on_bad_lines="error"
    )
    if frame.shape[1] != 3:
        raise UserError(f"{path}: original AG News rows need 3 fields, found {frame.shape[1]}")
    bad = ~frame[0].str.strip().isin(AG_CLASSES)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        raise UserError(f"{path}: row {row}: class {frame[0][row - 1]!r} is not 1-4 (original AG News format)")
    text = (frame[1].str.strip() + " " + frame[2].str.strip()).str.strip()
    label = frame[0].str.strip().astype(int) - 1
    return pd.DataFrame({cfg.text_column: text, cfg.label_column: label})


def _read_hub(dataset_id: str, split: str, cfg: DataConfig) -> pd.DataFrame:
    ensure_hub_reachable(
        f"dataset '{dataset_id}'",
        "point data.train / data.test at local files instead, e.g. "
        "data.train=../shared/data/ag_news/train_subset.csv",
    )
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(f"hub dataset '{dataset_id}' split '{split}': {str(e).splitlines()[0]}") from None
    except (ConnectionError, OSError) as e:
        raise UserError(f"cannot download hub dataset '{dataset_id}' ({str(e).splitlines()[0]})") from None
    return ds.to_pandas()


# ------------------------------------------------------- the competition pickle


def _read_pickle(path: Path) -> pd.DataFrame:
    from lorafit.pickles import read_pickle_frame  # allow-list unpickler; see lorafit.pickles

    return read_pickle_frame(path)


# ------------------------------------------------------------- checking


def _to_table(
    frame: pd.DataFrame, source: str, cfg: DataConfig, need_labels: bool, allow_empty: bool
) -> TextTable:
    if len(frame) == 0:
        raise UserError(f"{source}: has no rows; give a file with at least one row")
    if cfg.text_column not in frame.columns:
        raise UserError(
            f"{source}: no column '{cfg.text_column}' (found {list(map(str, frame.columns))[:8]}); "
            "set data.text_column"
        )
    texts = _check_texts(frame[cfg.text_column], source, allow_empty)
    labels = None
    if cfg.label_column in frame.columns:
        labels = _check_labels(frame[cfg.label_column], source, len(cfg.label_names))
    elif need_labels:
        raise UserError(
            f"{source}: no label column '{cfg.label_column}' (found "
            f"{list(map(str, frame.columns))[:8]}); set data.label_column"
        )
    return TextTable(texts, labels, source)


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


def _check_labels(column: pd.Series, source: str, num_labels: int) -> np.ndarray:
    values = column.tolist()
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values, start=1):
        try:
            number = float(str(value).strip())
            ok = number.is_integer()
        except ValueError:
            ok = False
        if not ok:
            raise UserError(f"{source}: row {i}: label {value!r} is not an integer 0-{num_labels - 1}")
        if not 0 <= number < num_labels:
            raise UserError(
                f"{source}: row {i}: label {int(number)} is out of range 0-{num_labels - 1}; "
                "fix the row or set data.label_names"
            )
        out[i - 1] = int(number)
    return out


# --------------------------------------------------------------- splits


def split_table(table: TextTable, val_size: float, seed: int) -> tuple[TextTable, TextTable]:
    """A stratified, seeded train/validation split; `val_size` rows (>= 1) or a fraction."""
    from sklearn.model_selection import train_test_split

    n_val = int(val_size) if val_size >= 1 else max(1, round(val_size * len(table)))
    classes = len(np.unique(table.labels))
    if n_val < classes or len(table) - n_val < classes:
        raise UserError(
            f"{table.source}: cannot split {n_val} validation rows from {len(table)} rows with "
            f"{classes} classes; lower data.val_size or give data.validation"
        )
    try:
        tr, va = train_test_split(
            np.arange(len(table)), test_size=n_val, random_state=seed, stratify=table.labels
        )
    except ValueError as e:
        raise UserError(f"{table.source}: cannot stratify the split ({e}); lower data.val_size") from None
    return table.subset(np.sort(tr)), table.subset(np.sort(va))


def stratified_subset(table: TextTable, rows: int, seed: int) -> TextTable:
    """At most `rows` rows, keeping the class proportions (seeded)."""
    if rows >= len(table):
        return table
    train, _ = split_table(table, len(table) - rows, seed)
    return train


def load_splits(cfg: DataConfig, seed: int) -> dict[str, TextTable]:
    """train / validation (/ test) tables for a training run."""
    train = load_table(cfg.train, cfg, split="train")
    if cfg.validation:
        val = load_table(cfg.validation, cfg, split="validation")
    else:
        train, val = split_table(train, cfg.val_size, seed)
    if cfg.max_train_rows:
        train = stratified_subset(train, cfg.max_train_rows, seed)
    if cfg.augment:  # training rows only, before tokenising (see lorafit.augment)
        from lorafit.augment import augment_table

        train = augment_table(train, cfg, seed)
    splits = {"train": train, "validation": val}
    if cfg.test:
        splits["test"] = load_table(cfg.test, cfg, split="test")
    return splits


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -------------------------------------------------------- tokens and batches


@dataclass
class Encoded:
    """Token ids per row (no padding), labels, and how many rows were truncated."""

    ids: list[list[int]]
    labels: np.ndarray | None
    truncated: int

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))


def encode(tokenizer, table: TextTable, max_length: int) -> Encoded:
    """Tokenise once, truncating to `max_length` tokens with the special tokens kept."""
    prefix, suffix = special_tokens(tokenizer)
    room = max_length - len(prefix) - len(suffix)
    raw = tokenizer(table.texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    truncated = sum(len(x) > room for x in raw)
    ids = [prefix + x[:room] + suffix for x in raw]
    return Encoded(ids, table.labels, truncated)


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single text (e.g. <s> ... </s>)."""
    bare = tokenizer("news", add_special_tokens=False)["input_ids"]
    full = tokenizer("news")["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    raise UserError(f"cannot tell where {type(tokenizer).__name__} puts its special tokens")


def pad_batch(rows: list[list[int]], pad_id: int):
    """Right-pad token id lists to the longest row: (input_ids, attention_mask) tensors."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def epoch_batches(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group_by_length: bool
) -> list[np.ndarray]:
    """The batches of one epoch, the same for the same (seed, epoch) on every process.

    With `group_by_length`, a shuffled order is cut into mega-batches of 50 batches, each
    sorted by length, so a batch holds texts of similar length and needs little padding; the
    batch order is then shuffled again so lengths do not drift through the epoch.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if group_by_length:
        mega = batch_size * 50
        order = np.concatenate(
            [c[np.argsort(-lengths[c], kind="stable")] for c in np.split(order, range(mega, len(order), mega))]
        )
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches for inference: rows sorted by length, longest first (least padding)."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
