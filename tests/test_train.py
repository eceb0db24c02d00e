"""The training loop's options on the tiny model: schedules, optimizers, accumulation, stopping."""

from __future__ import annotations

import json
import math

import pytest

from lorafit.cli import main


def _rows(tmp_path, kind):
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind], json.loads((run / "summary.json").read_text())


def test_early_stopping_with_patience(tiny_overrides, tmp_path):
    # lr ~ 0: the metric cannot improve after the first evaluation
    assert (
        main(["train", *tiny_overrides, "train.lr=1e-12", "train.eval_every=1", "train.patience=2"])
        == 0
    )
    evals, summary = _rows(tmp_path, "eval")
    assert [r["step"] for r in evals] == [1, 2, 3]
    assert summary["stopped_early"] and summary["final_step"] == 3 and summary["best_step"] == 1


@pytest.mark.parametrize("scheduler", ["linear", "cosine", "constant"])
def test_warmup_then_schedule(tiny_overrides, tmp_path, scheduler):
    args = [
        "train.lr=1e-3",
        "train.warmup_steps=4",
        "train.log_every=1",
        f"train.scheduler={scheduler}",
    ]
    assert main(["train", *tiny_overrides, *args]) == 0
    rows, _ = _rows(tmp_path, "train")
    lrs = [r["lr"] for r in rows]  # the lr after each step's scheduler update
    total, warm = 12, 4
    for step, lr in zip(range(1, 13), lrs):
        if step < warm:
            want = 1e-3 * step / warm
        elif scheduler == "constant":
            want = 1e-3
        elif scheduler == "linear":
            want = 1e-3 * (total - step) / (total - warm)
        else:
            want = 1e-3 * 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
        assert lr == pytest.approx(want, abs=1e-9), (step, lr, want)


def test_lion_with_gradient_accumulation_learns(tiny_overrides, tmp_path):
    args = [
        "train.optimizer=lion",
        "train.lr=3e-3",
        "train.grad_accum=2",
        "train.batch_size=8",
        "train.max_steps=20",
        "train.eval_every=20",
        "train.log_every=5",
    ]
    assert main(["train", *tiny_overrides, *args]) == 0
    rows, summary = _rows(tmp_path, "train")
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    # 2 micro-batches of 8 per optimizer step
    assert rows[-1]["epoch"] == pytest.approx(20 * 16 / 200, abs=0.1)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_epochs_set_the_step_count(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith("train.max_steps")]
    assert main(["train", *overrides, "train.epochs=2", "train.batch_size=32"]) == 0
    _, summary = _rows(tmp_path, "train")
    assert summary["final_step"] == 2 * math.ceil(200 / 32)


def test_progress_bar_keeps_loss_throughput_and_accuracy_together():
    import io

    from tqdm.auto import tqdm

    from lorafit.train import _postfix

    bar = tqdm(total=10, file=io.StringIO())
    _postfix(bar, loss="0.5000", samples_s="3.0")
    _postfix(bar, acc="0.9000", best="0.9000")  # an evaluation
    _postfix(bar, loss="0.4000", samples_s="3.1")  # the next train row keeps the accuracy
    assert bar.postfix == "loss=0.4000, samples_s=3.1, acc=0.9000, best=0.9000"
