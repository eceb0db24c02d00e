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
- Confidence: rows whose teacher top-class probability is below
  `data.unlabeled_min_confidence` are dropped.
- Share: `data.unlabeled_share` = s is the share of the training rows that are unlabelled:
  s / (1 - s) unlabelled rows per labelled row (0.5: as many as labelled), a seeded subset of
  the kept rows, capped by their number; null joins every kept row. The joined rows are part
  of every epoch (an epoch = one pass over labelled + joined rows) and carry the label -100.
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

#: the label of an unlabelled training row (cross-entropy's ignore_index)
UNLABELED = -100


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
    table = load_table(data_cfg.unlabeled, reading, split="test", need_labels=False, allow_empty_text=True)
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
        log.info("data.unlabeled: %d texts are validation texts; dropped (validation stays unseen)", in_validation)
    report = {"file": str(data_cfg.unlabeled), "rows_read": len(table), "dropped_empty": empty, "dropped_in_validation": in_validation}
    return TextTable(table.texts, None, table.source, table.pairs).subset(keep), report


def select_unlabeled(log_probs: np.ndarray, n_labelled: int, data_cfg, seed: int, report: dict) -> tuple[np.ndarray, dict]:
    """Indices of the unlabelled rows that join training (sorted), and the updated counts."""
    confident = np.flatnonzero(np.exp(log_probs.max(-1)) >= data_cfg.unlabeled_min_confidence)
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
        len(chosen), len(log_probs), n_labelled, report["dropped_low_confidence"], data_cfg.unlabeled_min_confidence,
    )
    return chosen, report


def join_unlabeled(train: TextTable, unlabeled: TextTable, keep: np.ndarray) -> TextTable:
    """The labelled rows, then the chosen unlabelled rows labelled `UNLABELED`."""
    texts = list(train.texts) + [unlabeled.texts[i] for i in keep]
    pairs = None if train.pairs is None else list(train.pairs) + [unlabeled.pairs[i] for i in keep]
    labels = np.concatenate([train.labels, np.full(len(keep), UNLABELED, dtype=np.int64)])
    return TextTable(texts, labels, train.source, pairs)
