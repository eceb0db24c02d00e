"""Measure lorafit on this machine: throughput, padding, MFU, peak memory and accuracy.

    lorafit bench --config configs/agnews_roberta_latent.yaml model.name=/path/to/model \\
        data.train=../shared/data/ag_news/train_subset.csv --predict-input FILE --dtype fp32 --dtype bf16

Trains the config for real (a normal run directory is written), then labels a file with
the run's best checkpoint in each requested dtype, and prints one table row per measurement.
MFU is the model FLOPs the recipe needs (real tokens only, see `lorafit.flops`) per second,
over this machine's measured matmul FLOP/s in the dtype the recipe computes in. With the
activation cache that is the frozen prefix once per row plus the top layers per step.
`benchmarks/speed.py` runs the same functions beside the usual recipe (HF Trainer).
"""

from __future__ import annotations

import functools
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lorafit.config import Config, as_config
from lorafit.data import (
    encode,
    epoch_batches,
    length_sorted_batches,
    load_splits,
    load_table,
    padded_width,
)
from lorafit.flops import encoder_flops, measure_matmul_flops, model_flops_utilisation
from lorafit.rundir import read_jsonl

COLUMNS = [
    ("recipe", "recipe", "{}"),
    ("samples/s", "samples_per_s", "{:.2f}"),
    ("tokens/s", "tokens_per_s", "{:.0f}"),
    ("padding", "padding_share", "{:.1%}"),
    ("MFU", "mfu", "{:.1%}"),
    ("peak MB", "peak_memory_mb", "{:.0f}"),
    ("accuracy", "accuracy", "{:.4f}"),
]
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# ---------------------------------------------------------------- time, memory, peak


class Timer:
    """Time a block and record its peak memory: RSS on the CPU, allocated memory on CUDA.

        with Timer() as t:
            work()
        t.seconds, t.peak_memory_mb

    On Linux the RSS high-water mark is reset when the block starts (via
    /proc/self/clear_refs), so `getrusage` gives this block's peak, not the process's.
    Where that reset is refused `peak_is_local` is False and the peak is the process's so far.
    The one timer of `lorafit bench` and of `benchmarks/` (both recipes are timed alike).
    """

    def __init__(self, device: str = "cpu"):
        self.device = str(device)
        self.seconds = 0.0
        self.peak_memory_mb = 0.0
        self.peak_is_local = True
        self._start = 0.0

    def __enter__(self) -> Timer:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak_is_local = _reset_peak_rss()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak_memory_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.peak_memory_mb = _peak_rss_mb()
        self.seconds = time.perf_counter() - self._start


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); False where that is refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS bytes, Linux KiB


@functools.cache
def matmul_peak(dtype: str, device: str = "cpu", seconds: float = 2.0) -> float:
    """This machine's FLOP/s for a 2048 x 2048 matmul in `dtype` ('fp32' or 'bf16'), measured once."""
    return measure_matmul_flops(TORCH_DTYPES[dtype], n=2048, seconds=seconds, device=device)


def _mfu(flops: float, seconds: float, dtype: str, device: str, peak: float | None) -> float | None:
    peak = peak or matmul_peak(dtype, device)
    return model_flops_utilisation(flops / seconds, peak)


# ---------------------------------------------------------------- training


def training_workload(cfg: Config, n_steps: int, world: int = 1) -> dict:
    """Rows, real and padded tokens of the batches a run of `n_steps` steps trains on.

    Rebuilds the loop's own batches (`epoch_batches`, same seed), so the counts are exact.
    """
    from lorafit.model import load_tokenizer

    tokenizer = load_tokenizer(cfg)
    train_set = encode(
        tokenizer, load_splits(cfg.data, cfg.train.seed)["train"], cfg.model.max_length
    )
    lengths, batch = train_set.lengths, cfg.train.batch_size * world
    steps, rows, padded, epochs_read = 0, [], 0, 0
    while steps < n_steps * cfg.train.grad_accum:
        for idx in epoch_batches(
            lengths, batch, cfg.train.seed, epochs_read, cfg.train.group_by_length
        ):
            rows.append(lengths[idx])
            padded += len(idx) * padded_width(int(lengths[idx].max()))
            steps += 1
            if steps >= n_steps * cfg.train.grad_accum:
                break
        epochs_read += 1
    real = np.concatenate(rows)
    return {"train_set": train_set, "real_lengths": real, "padded_tokens": padded}


def training_flops(cfg: Config, model, workload: dict, cached_prefix: int) -> float:
    """Model FLOPs the run needed: the prefix once per row (if cached) + the trained part."""
    from lorafit.model import layer_settings, num_layers

    config = model.config
    depth = num_layers(config)
    trained = sorted(layer_settings(cfg, depth))
    real = workload["real_lengths"]
    if not cached_prefix:
        return encoder_flops(config, real, trainable_layers=trained)
    top = depth - cached_prefix
    flops = encoder_flops(
        config, real, layers=top, trainable_layers=[i - cached_prefix for i in trained]
    )
    return flops + encoder_flops(
        config, workload["train_set"].lengths, layers=cached_prefix, backward=False
    )


def bench_train(
    config: Config | str | Path | None = None,
    overrides=(),
    *,
    recipe: str | None = None,
    peak: float | None = None,
) -> dict:
    """Train the config (a real run) and measure it as a whole: model loading, tokenising,
    building the activation cache, the loop, the final evaluation and the outputs."""
    from lorafit.fastpath import plan_prefix_cache
    from lorafit.model import build_model
    from lorafit.train import train

    cfg = as_config(config, overrides)
    with Timer() as m:
        run_dir = train(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = read_jsonl(run_dir / "metrics.jsonl")
    workload = training_workload(cfg, summary["final_step"], summary.get("num_processes", 1))
    model = build_model(cfg, weights=False)
    plan = plan_prefix_cache(cfg, model, workload["train_set"])
    dtype = "bf16" if summary["mixed_precision"] == "bf16" else "fp32"
    flops = training_flops(cfg, model, workload, plan.prefix if plan.enabled else 0)
    real = int(workload["real_lengths"].sum())
    last_eval = [r for r in rows if r["kind"] == "eval"][-1]
    return {
        "recipe": recipe or f"lorafit train ({'cache' if plan.enabled else 'no cache'}, {dtype})",
        "run_dir": str(run_dir),
        "steps": summary["final_step"],
        "rows": len(workload["real_lengths"]),
        "seconds": m.seconds,
        "samples_per_s": len(workload["real_lengths"]) / m.seconds,
        "tokens_per_s": real / m.seconds,
        "padding_share": 1 - real / workload["padded_tokens"],
        "model_flops": flops,
        "mfu": _mfu(flops, m.seconds, dtype, "cpu", peak),
        "dtype": dtype,
        "activation_cache": plan.enabled,
        "peak_memory_mb": m.peak_memory_mb,
        "accuracy": last_eval["eval_accuracy"],
        "eval_loss": last_eval["eval_loss"],
    }


# ---------------------------------------------------------------- prediction


def bench_predict(
    run_dir,
    input_path: str,
    *,
    dtype: str = "auto",
    batch_size: int = 64,
    recipe: str | None = None,
    peak: float | None = None,
) -> dict:
    """Label a file with a run's merged best checkpoint; timed: tokenising + inference.

    Loading and merging the model is not timed (the usual recipe's timing does not load
    either). The logits come back under "logits" for agreement checks between dtypes.
    """
    from lorafit.predict import infer_logits, inference_dtype, load_run_model

    model, tokenizer, cfg = load_run_model(run_dir, "cpu", dtype)
    name = "bf16" if inference_dtype(dtype, "cpu") == torch.bfloat16 else "fp32"
    table = load_table(input_path, cfg.data, split="test", need_labels=False, allow_empty_text=True)
    with Timer() as m:
        encoded = encode(tokenizer, table, cfg.model.max_length)
        logits = infer_logits(model, encoded, batch_size, tokenizer.pad_token_id, "cpu")
    lengths = encoded.lengths
    padded = sum(len(b) * int(lengths[b].max()) for b in length_sorted_batches(lengths, batch_size))
    flops = encoder_flops(model.config, lengths, backward=False)
    # a regression's run has no accuracy (its figures: `lorafit evaluate`)
    accuracy = (
        None
        if table.labels is None or cfg.task == "regression"
        else float((logits.argmax(-1) == table.labels).mean())
    )
    return {
        "recipe": recipe or f"lorafit predict ({name}, batch {batch_size})",
        "rows": len(table),
        "seconds": m.seconds,
        "samples_per_s": len(table) / m.seconds,
        "tokens_per_s": int(lengths.sum()) / m.seconds,
        "padding_share": 1 - int(lengths.sum()) / padded,
        "model_flops": flops,
        "mfu": _mfu(flops, m.seconds, name, "cpu", peak),
        "dtype": name,
        "peak_memory_mb": m.peak_memory_mb,
        "accuracy": accuracy,
        "logits": logits,
    }


def agreement(logits: np.ndarray, reference: np.ndarray) -> dict:
    """How far predictions moved from a reference: label agreement and probability change."""
    from lorafit.metrics import softmax

    p, q = softmax(logits), softmax(reference)
    return {
        "label_agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
        "labels_changed": int((logits.argmax(-1) != reference.argmax(-1)).sum()),
        "max_prob_diff": float(np.abs(p - q).max()),
        "mean_prob_diff": float(np.abs(p - q).mean()),
    }


# ---------------------------------------------------------------- the command


def run_bench(
    config: Config | str | Path | None = None,
    overrides=(),
    *,
    predict_input: str | None = None,
    dtypes: tuple[str, ...] = ("auto",),
    batch_size: int = 64,
) -> dict:
    """`lorafit bench`: train once, predict in each dtype; returns rows + dtype agreement."""
    cfg = as_config(config, overrides)
    rows = [bench_train(cfg)]
    source = predict_input or cfg.data.validation or cfg.data.test
    agreements = {}
    if source:
        preds = [
            bench_predict(rows[0]["run_dir"], source, dtype=d, batch_size=batch_size)
            for d in dtypes
        ]
        reference = next((p for p in preds if p["dtype"] == "fp32"), None)
        for p in preds:
            if reference is not None and p is not reference:
                agreements[p["recipe"]] = agreement(p["logits"], reference["logits"])
        for p in preds:
            p.pop("logits")
        rows += preds
    return {"rows": rows, "agreement_with_fp32": agreements, "predict_input": source}


def format_table(rows: list[dict]) -> str:
    """recipe, samples/s, tokens/s, padding, MFU, peak MB, accuracy; '-' where missing."""
    cells = [[title for title, _, _ in COLUMNS]]
    for row in rows:
        cells.append(["-" if row.get(k) is None else fmt.format(row[k]) for _, k, fmt in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def bench_text(result: dict) -> str:
    """The table plus the dtype agreement lines, as `lorafit bench` prints them."""
    lines = [format_table(result["rows"])]
    for recipe, a in result["agreement_with_fp32"].items():
        lines.append(
            f"{recipe} vs fp32: labels agree on {a['label_agreement']:.2%} ({a['labels_changed']} changed), "
            f"max probability difference {a['max_prob_diff']:.4f}"
        )
    if not result["predict_input"]:
        lines.append(
            "no prediction measured: pass --predict-input (or set data.validation / data.test)"
        )
    return "\n".join(lines)
