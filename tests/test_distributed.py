"""Data-parallel training: 2 CPU processes (gloo) give what 1 process gives, written once.

    torchrun --nproc_per_node 2 -m lorafit train ... train.batch_size=4
    == lorafit train ... train.batch_size=8   (up to floating-point noise)

The model has no dropout and LoRA dropout is 0: with dropout each process would draw its
own masks, which no single process reproduces. What remains is summation order: two
half-batch gradients averaged by the all-reduce instead of one batch's mean, so ~1e-7
relative per step in fp32; through 50 Adam steps that stays far below the 1e-4 relative
tolerance on the evaluation loss (observed: equal to 6 decimals).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lorafit.cli import main

from .test_fastpath import still_model  # noqa: F401  (the dropout-free model fixture)

pytestmark = pytest.mark.slow


def _args(model, csv, out, cache, batch):
    return [
        f"model.name={model}",
        f"data.train={csv}",
        "data.val_size=40",  # 200 training rows: every global batch of 8 splits 4 + 4
        "data.test=null",
        "model.max_length=64",
        "lora.layers=1-2",
        "lora.dropout=0",
        "train.lr=5e-3",
        "train.epochs=2",
        "train.eval_every=10",
        "train.log_every=5",
        "train.patience=null",
        "train.mixed_precision=no",
        f"train.cache_activations={cache}",
        f"train.cache_dir={out / 'cache'}",
        f"train.batch_size={batch}",
        "log.progress=false",
        f"run.dir={out / 'runs'}",
    ]


def _only_run(runs_dir):
    runs = [p for p in runs_dir.iterdir() if p.name != "latest"]
    assert len(runs) == 1, runs  # the run directory is written once, by the main process
    assert (runs_dir / "latest").resolve() == runs[0].resolve()
    return runs[0]


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("cache", ["true", "false"])
def test_two_processes_match_one(cache, still_model, small_csv, tmp_path):  # noqa: F811
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", *_args(still_model, small_csv, one, cache, 8)]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",  # = torchrun; --standalone picks a free port
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "lorafit",
            "train",
            *_args(still_model, small_csv, two, cache, 4),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    run1, run2 = _only_run(one / "runs"), _only_run(two / "runs")
    summary = json.loads((run2 / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["final_step"] == 50
    rows1, rows2 = _metrics(run1), _metrics(run2)
    assert [(r["kind"], r["step"]) for r in rows1] == [
        (r["kind"], r["step"]) for r in rows2
    ]  # no duplicate rows
    eval1 = [r["eval_loss"] for r in rows1 if r["kind"] == "eval"]
    eval2 = [r["eval_loss"] for r in rows2 if r["kind"] == "eval"]
    assert eval1[0] != eval1[-1]  # it trained
    np.testing.assert_allclose(eval2, eval1, rtol=1e-4)
    assert [r["eval_accuracy"] for r in rows1 if r["kind"] == "eval"] == [
        r["eval_accuracy"] for r in rows2 if r["kind"] == "eval"
    ]
    # the logged training loss is the mean over both processes' halves of each batch
    np.testing.assert_allclose(
        [r["train_loss"] for r in rows2 if r["kind"] == "train"],
        [r["train_loss"] for r in rows1 if r["kind"] == "train"],
        rtol=1e-4,
    )
    assert summary["best_step"] == json.loads((run1 / "summary.json").read_text())["best_step"]
    assert (run2 / "checkpoint-best" / "adapter_model.safetensors").exists()
    if cache == "true":  # both processes filled one cache: the same states as one process's
        from lorafit.fastpath import PrefixCache

        (c1,) = [p for p in (one / "cache").iterdir() if not p.name.startswith(".")]
        (c2,) = [p for p in (two / "cache").iterdir() if not p.name.startswith(".")]
        assert c1.name == c2.name  # same model, rows and precision: the same key
        a, b = PrefixCache(c1), PrefixCache(c2)
        np.testing.assert_array_equal(a.offsets, b.offsets)
        sa, _ = a.batch(range(len(a)), "cpu")
        sb, _ = b.batch(range(len(b)), "cpu")
        np.testing.assert_allclose(sa.numpy(), sb.numpy(), atol=2e-3, rtol=2e-3)
