"""The AG News 66k split that the accuracy runs share: one holdout nothing tunes on.

    python benchmarks/agnews66k_split.py            # check the split against the committed digests
    python benchmarks/agnews66k_split.py --write    # (re)write benchmarks/splits/ag_news_66k.json

`../shared/data/ag_news/train_66k.csv` (66,191 real training rows) is split by lorafit itself,
stratified and seeded with `data.split_seed` (so every training seed sees the same rows):
4,000 holdout rows (`data.test_size`: scored once, with the best checkpoint), then 2,000
validation rows (`data.val_size`: early stopping, model selection), the rest for training. A
run uses it with these overrides (or the same keys in its config):

    data.train=../shared/data/ag_news/train_66k.csv data.test_size=4000 data.val_size=2000 data.split_seed=66191

The JSON file holds the input file's sha256 and, per split, its row count, class counts and the
sha256 of its sorted `label<TAB>text` rows; `tests/test_real_data.py` checks that lorafit still
produces exactly these rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "ag_news" / "train_66k.csv"
DIGESTS = Path(__file__).resolve().parent / "splits" / "ag_news_66k.json"
OVERRIDES = {"data.test_size": 4000, "data.val_size": 2000, "data.split_seed": 66191}


def split_digests(path: Path = DATA) -> dict:
    """The split lorafit makes of `path` with OVERRIDES, as digests."""
    from lorafit.config import load_config
    from lorafit.data import file_digest, load_splits

    cfg = load_config(None, [f"data.train={path}", *(f"{k}={v}" for k, v in OVERRIDES.items())])
    splits = load_splits(cfg.data, seed=cfg.train.seed)
    out = {
        "file": path.name,
        "file_sha256": file_digest(path),
        "overrides": OVERRIDES,
        "splits": {},
    }
    for name in ("train", "validation", "test"):
        table = splits[name]
        rows = sorted(f"{label}\t{text}" for label, text in zip(table.labels.tolist(), table.texts))
        out["splits"][name] = {
            "rows": len(table),
            "per_class": np.bincount(table.labels).tolist(),
            "sha256": hashlib.sha256("\n".join(rows).encode()).hexdigest(),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {DIGESTS.relative_to(REPO)}")
    args = parser.parse_args(argv)
    found = split_digests()
    print(json.dumps(found["splits"], indent=2))
    if args.write:
        DIGESTS.write_text(json.dumps(found, indent=2) + "\n")
        print(f"wrote {DIGESTS}")
        return 0
    same = json.loads(DIGESTS.read_text()) == found
    print("the committed split" if same else f"DIFFERS from {DIGESTS}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
