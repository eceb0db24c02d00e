"""Training-time augmentation (`data.augment`): perturb a seeded share of the training rows.

    lorafit train --config configs/quickstart.yaml data.augment=typo,synonym data.augment_share=0.5

Once, before tokenising, `training_splits` replaces a seeded `data.augment_share` of the
training rows by perturbed copies (the kinds of `lorafit.perturb`, taken in turn, each
touching `data.augment_rate` of a text's words). Replacing rather than appending keeps the
number of rows, and so the steps and compute, the same as without augmentation; validation
and test rows are never perturbed. A sentence pair's two texts are both perturbed (the second
texts of the chosen rows as a list, with the same kind and seed as the first).

This is a stage above the data: it imports the data layer, the config and the
perturbations, never prediction (`lorafit evaluate --perturb`, which needs a model, lives in
`lorafit.robustness`); the data layer never imports it.
"""

from __future__ import annotations

import numpy as np

from lorafit.config import DataConfig, split_kinds
from lorafit.data import TextTable, load_splits
from lorafit.errors import UserError
from lorafit.perturb import perturb_texts


def training_splits(cfg: DataConfig, seed: int) -> dict[str, TextTable]:
    """`load_splits`, with the training rows augmented when data.augment is set (validation
    and test rows never are)."""
    splits = load_splits(cfg, seed)
    splits["train"] = augment_table(splits["train"], cfg, seed)
    return splits


def augment_table(table: TextTable, cfg: DataConfig, seed: int) -> TextTable:
    """A copy of `table` with a seeded `cfg.augment_share` of its rows perturbed.

    `table` itself comes back when `cfg.augment` is off (null or empty).
    """
    kinds = split_kinds(cfg.augment)
    if not kinds:
        return table
    rng = np.random.default_rng([seed, 20_06])
    chosen = rng.permutation(len(table))[: round(cfg.augment_share * len(table))]
    sides = [list(table.texts)] + ([] if table.pairs is None else [list(table.pairs)])
    for n, kind in enumerate(kinds):
        rows = chosen[n :: len(kinds)]  # kinds in turn over the shuffled chosen rows
        for texts in sides:  # a pair: both texts, each with the same seed
            try:
                new = perturb_texts([texts[i] for i in rows], kind, cfg.augment_rate, seed + n)
            except (ImportError, ValueError) as e:
                raise UserError(f"data.augment {kind}: {e}") from None
            for i, text in zip(rows, new):
                texts[i] = text
    return table.with_texts(*sides)
