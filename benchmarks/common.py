"""Shared pieces of the speed benchmarks: the benchmark model, the data, timing, the table.

The benchmark model is roberta-base's exact shape (12 layers, hidden 768, vocabulary 50,265)
with random weights and a byte-level BPE tokenizer trained here on the training slice, so
no download is needed and the FLOPs are those of the real model. Random weights make
accuracy meaningless (about chance); speed, padding and memory are what we measure.

    from common import Timer, build_benchmark_model, load_benchmark_data, print_results
    data = load_benchmark_data()
    model_dir = build_benchmark_model(data.train_texts)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lorafit.bench import Timer  # noqa: F401  (re-exported: `from common import Timer`)

REPO = Path(__file__).resolve().parents[1]
#: the real AG News rows, kept outside the repository (see ../shared/data/ag_news/README.md)
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ag_news" / "train_subset.csv"
#: where the roberta-base-shaped random model is cached between runs
DEFAULT_CACHE = Path(os.environ.get("LORAFIT_BENCH_CACHE", "~/.cache/lorafit-bench")).expanduser()
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")

TRAIN_ROWS = 4_000
PREDICT_ROWS = 7_600
VAL_ROWS = 640
SEED = 0


# ---------------------------------------------------------------- data


@dataclass
class BenchmarkData:
    """Training slice, validation rows and the prediction workload, as plain lists."""

    train_texts: list[str]
    train_labels: list[int]
    val_texts: list[str]
    val_labels: list[int]
    predict_texts: list[str]
    predict_labels: list[int]


def load_benchmark_data(
    path: str | Path = DEFAULT_DATA,
    train_rows: int = TRAIN_ROWS,
    predict_rows: int = PREDICT_ROWS,
    val_rows: int = VAL_ROWS,
    seed: int = SEED,
) -> BenchmarkData:
    """A stratified, seeded training slice of `path` plus the rows the benchmarks predict.

    - training: `train_rows` rows, stratified by label, chosen with `seed`;
    - prediction workload: the first `predict_rows` of the other rows, in file order (the
      size of the official AG News test set by default);
    - validation: `val_rows` rows, stratified, from what is left after both.
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    frame = pd.read_csv(path)
    labels = frame["label"].to_numpy()
    train_idx, rest_idx = train_test_split(
        np.arange(len(frame)), train_size=train_rows, random_state=seed, stratify=labels
    )
    rest_idx = np.sort(rest_idx)
    predict_idx, left_idx = rest_idx[:predict_rows], rest_idx[predict_rows:]
    if len(predict_idx) < predict_rows or len(left_idx) < val_rows:
        raise ValueError(
            f"{path}: {len(frame)} rows cannot give {train_rows} training + {predict_rows} "
            f"prediction + {val_rows} validation rows"
        )
    if val_rows:
        val_idx, _ = train_test_split(
            left_idx, train_size=val_rows, random_state=seed, stratify=labels[left_idx]
        )
    else:
        val_idx = left_idx[:0]

    def pick(idx: np.ndarray) -> tuple[list[str], list[int]]:
        idx = np.sort(idx)
        return frame["text"].iloc[idx].tolist(), labels[idx].astype(int).tolist()

    return BenchmarkData(*pick(train_idx), *pick(val_idx), *pick(predict_idx))


# ---------------------------------------------------------------- model


def build_benchmark_model(
    texts: list[str],
    cache_dir: str | Path = DEFAULT_CACHE,
    name: str = "roberta-base-random",
    tokenizer_vocab: int = 8_000,
    rebuild: bool = False,
) -> Path:
    """Path to a saved roberta-base-shaped random classifier; built (about a minute) if missing.

    The tokenizer is trained on `texts`. The model is written to a temporary folder first and
    renamed into place, so an interrupted build never leaves a half-written cache behind.
    """
    from lorafit.toy import save_toy_roberta

    out = Path(cache_dir) / name
    if not rebuild and all((out / f).is_file() for f in MODEL_FILES):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"building the benchmark model in {out} ...", file=sys.stderr, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
    try:
        save_toy_roberta(
            tmp, texts, layers=12, hidden=768, vocab_size=50265, tokenizer_vocab=tokenizer_vocab
        )
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------- time and memory


# `Timer` (wall seconds and peak memory of a block) is lorafit.bench's, so `lorafit bench`
# and both recipes here are timed by the same code; imported above for the scripts.


# ---------------------------------------------------------------- reporting


def format_results(rows: list[dict]) -> str:
    """A plain-text table of benchmark results (the one `lorafit bench` prints); '-' where missing."""
    from lorafit.bench import format_table

    return format_table(rows)


def print_results(rows: list[dict]) -> None:
    """Print the results table (recipe, samples/s, tokens/s, padding, MFU, memory, accuracy)."""
    print(format_results(rows), flush=True)
