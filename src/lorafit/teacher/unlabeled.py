"""Unlabelled texts (`data.unlabeled`): read, soft-labelled by the teacher, joined to training.

- Reading: any format `data.train` takes (`.csv`, `.parquet`, `.jsonl`, the competition's
  `.pkl`), through `lorafit.data.load_table`; only `data.text_column` is read (both
  columns of a sentence pair), a label column is ignored, empty texts (a pair with an empty
  side) are dropped. The very file to be predicted may be given:
  that is TRANSDUCTIVE use of the test texts (their labels are never seen, only the
  teacher's opinion of them), allowed by the competition and recorded in the run.
- Never in validation: the validation split was made from the labelled rows before any
  unlabelled row is read, and an unlabelled row equal to a validation row (both texts of a
  pair) is dropped, so validation scores are not inflated by training on the teacher's view
  of them.
- Confidence: rows whose teacher confidence is below `data.unlabeled_min_confidence` are
  dropped: a classifier's top-class probability; a multi-label teacher's least decided label,
  min over labels of max(p, 1 - p); a regression teacher gives values, not confidences (the
  key must stay 0 there).
- Share: `data.unlabeled_share` = s is the share of the training rows that are unlabelled:
  s / (1 - s) unlabelled rows per labelled row (0.5: as many as labelled), a seeded subset of
  the kept rows, capped by their number; null joins every kept row. The joined rows are part
  of every epoch (an epoch = one pass over labelled + joined rows) and carry no label: -100
  for a class (cross-entropy's ignore_index), NaN for a regression's value or for every entry
  of a multi-label row (`unlabeled_like`, `labelled_rows`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from lorafit.data import TextTable, load_table
from lorafit.errors import UserError

log = logging.getLogger("lorafit")

#: the label of an unlabelled training row of a classification (cross-entropy's ignore_index)
UNLABELED = -100


def unlabeled_like(labels: np.ndarray, n: int) -> np.ndarray:
    """`n` rows of "no label" shaped and typed as `labels`: -100 for class ids, NaN for a
    regression's values or a multi-label run's 0/1 rows."""
    labels = np.asarray(labels)
    fill = UNLABELED if np.issubdtype(labels.dtype, np.integer) else np.nan
    return np.full((n, *labels.shape[1:]), fill, dtype=labels.dtype)


def labelled_rows(labels):
    """True for each row that has a label (numpy array or tensor): not -100 (a class id), not
    NaN (a value, or any entry of a multi-label row)."""
    if isinstance(labels, np.ndarray):
        if np.issubdtype(labels.dtype, np.integer):
            return labels != UNLABELED
        missing = np.isnan(labels)
        return ~(missing.any(axis=tuple(range(1, labels.ndim))) if labels.ndim > 1 else missing)
    if not labels.is_floating_point():
        return labels != UNLABELED
    missing = labels.isnan()
    return ~(missing.flatten(1).any(-1) if labels.dim() > 1 else missing)


def teacher_confidence(outputs: np.ndarray, task: str) -> np.ndarray:
    """Each row's confidence: a classifier's top-class probability (outputs: log-probs); a
    multi-label teacher's least decided label, min over labels of max(p, 1 - p) (outputs:
    log-odds); a regression's values have none (1 for every row)."""
    if task == "regression":
        return np.ones(len(outputs))
    if task == "multi_label":
        p = 1.0 / (1.0 + np.exp(-np.asarray(outputs, dtype=np.float64)))
        return np.maximum(p, 1 - p).min(axis=-1)
    return np.exp(np.asarray(outputs, dtype=np.float64).max(-1))


def load_unlabeled(data_cfg, splits: dict) -> tuple[TextTable, dict]:
    """The unlabelled rows (texts or pairs), without empty ones and without any validation row; and counts."""
    from lorafit.data import resolve_source
    from lorafit.teacher.logits import row_keys

    if not Path(resolve_source(data_cfg.unlabeled)).is_file():
        raise UserError(
            f"data.unlabeled {data_cfg.unlabeled}: file not found (relative to {os.getcwd()}); give "
            "a file of texts (.csv, .parquet, .jsonl, .pkl) or set data.unlabeled=null"
        )
    # a label column, if the file has one, is neither read nor checked
    reading = dataclasses.replace(data_cfg, label_column="\0no label column")
    table = load_table(
        data_cfg.unlabeled, reading, split="test", need_labels=False, allow_empty_text=True
    )
    held_out = set(row_keys(splits["validation"]))
    sides = [table.texts] if table.pairs is None else [table.texts, table.pairs]
    filled = [all(t.strip() for t in row) for row in zip(*sides)]
    keep = [i for i, key in enumerate(row_keys(table)) if filled[i] and key not in held_out]
    empty = filled.count(False)
    in_validation = len(table) - len(keep) - empty
    if not keep:
        raise UserError(
            f"data.unlabeled {data_cfg.unlabeled}: no usable text ({empty} empty, {in_validation} "
            "also in the validation split); give a file of other texts or remove data.unlabeled"
        )
    if in_validation:
        log.info(
            "data.unlabeled: %d texts are validation texts; dropped (validation stays unseen)",
            in_validation,
        )
    report = {
        "file": str(data_cfg.unlabeled),
        "rows_read": len(table),
        "dropped_empty": empty,
        "dropped_in_validation": in_validation,
    }
    return TextTable(table.texts, None, table.source, table.pairs).subset(keep), report


def select_unlabeled(
    log_probs: np.ndarray,
    n_labelled: int,
    data_cfg,
    seed: int,
    report: dict,
    task: str = "classification",
) -> tuple[np.ndarray, dict]:
    """Indices of the unlabelled rows that join training (sorted), and the updated counts.

    `log_probs` are the teacher's stored outputs for the rows (see `teacher_confidence`)."""
    confident = np.flatnonzero(
        teacher_confidence(log_probs, task) >= data_cfg.unlabeled_min_confidence
    )
    share = data_cfg.unlabeled_share
    chosen = confident
    if share is not None:
        want = int(round(share / (1 - share) * n_labelled))
        if want < len(confident):
            rng = np.random.default_rng([seed, 15])
            chosen = np.sort(rng.choice(confident, size=want, replace=False))
    report = {
        **report,
        "dropped_low_confidence": int(len(log_probs) - len(confident)),
        "min_confidence": data_cfg.unlabeled_min_confidence,
        "share": share,
        "joined": int(len(chosen)),
        "labelled_rows": int(n_labelled),
    }
    log.info(
        "data.unlabeled: %d of %d usable rows join the %d labelled ones (%d below confidence %.2f)",
        len(chosen),
        len(log_probs),
        n_labelled,
        report["dropped_low_confidence"],
        data_cfg.unlabeled_min_confidence,
    )
    return chosen, report


def join_unlabeled(train: TextTable, unlabeled: TextTable, keep: np.ndarray) -> TextTable:
    """The labelled rows, then the chosen unlabelled rows without a label (`unlabeled_like`)."""
    texts = list(train.texts) + [unlabeled.texts[i] for i in keep]
    pairs = None
    if train.pairs is not None:
        assert unlabeled.pairs is not None  # read with the same text columns
        pairs = list(train.pairs) + [unlabeled.pairs[i] for i in keep]
    assert train.labels is not None  # the training table
    labels = np.concatenate([train.labels, unlabeled_like(train.labels, len(keep))])
    return TextTable(texts, labels, train.source, pairs)
