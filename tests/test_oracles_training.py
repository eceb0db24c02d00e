"""Independent oracle for training (issue 30): lorafit's trainer against a plain PyTorch loop.

The reference below uses no lorafit code. It reads the CSV files with pandas, tokenises with
the model's tokenizer, wraps the model with PEFT itself, draws each epoch's batches from its
own sampler, and writes out AdamW (weight decay off for 1-D tensors), warmup + cosine (its own
`LambdaLR` lambda), gradient clipping and the cross-entropy. `lorafit.train` then has to reach
the same losses per step, learning rates, evaluation losses and adapter/head weights: straight
through, killed mid-run and resumed, and on the activation cache (LoRA on the top layer only).
Dropout is 0 everywhere (model and LoRA), so no random draws are compared, only arithmetic.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lorafit.train import train

from .conftest import AG_LABELS

SEED = 7
STEPS = 10
BATCH = 16
TRAIN_ROWS = 64  # 4 batches an epoch: 10 steps cross two epoch boundaries
LR, WEIGHT_DECAY, WARMUP, MAX_NORM = 5e-3, 0.05, 3, 0.5
RANK, ALPHA = 4, 8.0
MAX_LENGTH = 64
EVAL_EVERY = 5


# ---------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def still_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny RoBERTa with every dropout at 0 (the config file edited, the weights as saved)."""
    import shutil

    out = Path(shutil.copytree(tiny_model, tmp_path_factory.mktemp("still") / "model"))
    config = json.loads((out / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def data_files(small_csv, tmp_path_factory) -> tuple[Path, Path]:
    """A 64-row training file and a separate 40-row validation file (no split to reproduce)."""
    rows = pd.read_csv(small_csv)
    folder = tmp_path_factory.mktemp("oracle-data")
    train_csv, val_csv = folder / "train.csv", folder / "val.csv"
    rows.iloc[:TRAIN_ROWS].to_csv(train_csv, index=False)
    rows.iloc[TRAIN_ROWS : TRAIN_ROWS + 40].to_csv(val_csv, index=False)
    return train_csv, val_csv


def lorafit_overrides(
    model: Path, data: tuple[Path, Path], tmp_path: Path, *extra: str
) -> list[str]:
    train_csv, val_csv = data
    return [
        AG_LABELS,  # the file's integer labels 0-3 are the class ids
        f"model.name={model}",
        f"data.train={train_csv}",
        f"data.validation={val_csv}",
        f"model.max_length={MAX_LENGTH}",
        f"lora.r={RANK}",
        f"lora.alpha={ALPHA}",
        "lora.dropout=0.0",
        "lora.target_modules=[query,value]",
        f"train.seed={SEED}",
        f"train.max_steps={STEPS}",
        f"train.batch_size={BATCH}",
        f"train.lr={LR}",
        f"train.weight_decay={WEIGHT_DECAY}",
        f"train.warmup_steps={WARMUP}",
        "train.scheduler=cosine",
        f"train.max_grad_norm={MAX_NORM}",
        f"train.eval_every={EVAL_EVERY}",
        "train.log_every=1",
        "train.metric=eval_loss",
        "train.patience=null",
        "train.mixed_precision=no",
        "train.threads=1",
        "train.cache_activations=false",
        "log.progress=false",
        f"run.dir={tmp_path / 'runs'}",
        f"train.cache_dir={tmp_path / 'cache'}",
        *extra,
    ]


# ---------------------------------------------------------------- the reference loop


def reference_batches(lengths: np.ndarray, epoch: int, group_by_length: bool) -> list[np.ndarray]:
    """The documented sampler, written again: a permutation seeded by (seed, epoch); grouped
    by length, every run of 50 batches is ordered longest first (ties in permuted order) and
    the batch order is drawn again from the same generator."""
    generator = np.random.default_rng([SEED, epoch])
    order = list(generator.permutation(len(lengths)))
    if group_by_length:
        chunk = 50 * BATCH
        grouped = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            grouped += sorted(part, key=lambda row: -lengths[row])  # sorted() is stable
        order = grouped
    batches = [np.array(order[i : i + BATCH]) for i in range(0, len(order), BATCH)]
    if group_by_length:
        batches = [batches[i] for i in generator.permutation(len(batches))]
    return batches


def cosine_with_warmup(step: int) -> float:
    if step < WARMUP:
        return step / WARMUP
    progress = (step - WARMUP) / (STEPS - WARMUP)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Reference:
    losses: list[float] = field(default_factory=list)  # per optimizer step
    lrs: list[float] = field(default_factory=list)  # after each step's schedule step
    eval_losses: dict[int, float] = field(default_factory=dict)
    weights: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # trainable, per step
    adapters: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # PEFT's saved form
    emas: dict[int, dict[str, torch.Tensor]] = field(
        default_factory=dict
    )  # the moving average, per step
    clipped_steps: int = 0


def _padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def reference_run(
    model_dir: Path,
    data: tuple[Path, Path],
    layers: list[int] | None,
    group_by_length: bool,
    ema_decay: float = 0.0,
) -> Reference:
    """The plain loop. With `ema_decay`, a moving average of the trainable weights starts at
    their initial values, takes each step's weights at min(decay, (1 + step) / (10 + step)),
    and is what each evaluation scores and what `adapters` holds; `weights` stay the raw ones."""
    from peft import LoraConfig, TaskType, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    train_rows, val_rows = (pd.read_csv(p) for p in data)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pad = tokenizer.pad_token_id
    ids = tokenizer(train_rows.text.tolist(), truncation=True, max_length=MAX_LENGTH)["input_ids"]
    val_ids = tokenizer(val_rows.text.tolist(), truncation=True, max_length=MAX_LENGTH)["input_ids"]
    labels, val_labels = (
        torch.tensor(train_rows.label.to_numpy()),
        torch.tensor(val_rows.label.to_numpy()),
    )
    lengths = np.array([len(x) for x in ids])

    torch.manual_seed(SEED)  # the LoRA A matrices' initialisation
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    assert base.config.num_labels == 4
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=RANK,
        lora_alpha=ALPHA,
        lora_dropout=0.0,
        target_modules=["query", "value"],
        layers_to_transform=layers,
        layers_pattern="layer" if layers else None,
    )
    model = get_peft_model(base, lora)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
            {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=LR,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup)

    out, step, epoch = Reference(), 0, 0
    ema = {n: p.detach().clone() for n, p in trainable} if ema_decay else None
    model.train()
    while step < STEPS:
        for batch in reference_batches(lengths, epoch, group_by_length):
            input_ids, mask = _padded([ids[i] for i in batch], pad)
            logits = model(input_ids=input_ids, attention_mask=mask).logits
            loss = F.cross_entropy(logits, labels[batch])
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_([p for _, p in trainable], MAX_NORM)
            out.clipped_steps += bool(norm > MAX_NORM)
            optimizer.step()
            optimizer.zero_grad()
            schedule.step()
            step += 1
            out.losses.append(loss.item())
            out.lrs.append(optimizer.param_groups[0]["lr"])
            out.weights[step] = {n: p.detach().clone() for n, p in trainable}
            raw = out.weights[step]
            if ema is not None:  # average in; evaluate and save the average
                d = min(ema_decay, (1 + step) / (10 + step))
                ema = {n: d * ema[n] + (1 - d) * raw[n] for n in ema}
                out.emas[step] = ema
                with torch.no_grad():
                    for n, p in trainable:
                        p.copy_(ema[n])
            out.adapters[step] = {
                k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()
            }
            if step % EVAL_EVERY == 0 or step == STEPS:
                out.eval_losses[step] = _eval_loss(model, val_ids, val_labels, pad)
            if ema is not None:  # training goes on from the raw weights
                with torch.no_grad():
                    for n, p in trainable:
                        p.copy_(raw[n])
            if step == STEPS:
                break
        epoch += 1
    return out


@torch.no_grad()
def _eval_loss(model, ids: list[list[int]], labels: torch.Tensor, pad: int) -> float:
    model.eval()
    input_ids, mask = _padded(ids, pad)
    loss = F.cross_entropy(model(input_ids=input_ids, attention_mask=mask).logits, labels)
    model.train()
    return loss.item()


# ---------------------------------------------------------------- comparing


def _rows(run: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


def assert_matches_reference(run: Path, ref: Reference) -> None:
    """Per-step losses and learning rates, eval losses, final and best weights."""
    train_rows = _rows(run, "train")
    assert [r["step"] for r in train_rows] == list(range(1, STEPS + 1))
    np.testing.assert_allclose(
        [r["train_loss"] for r in train_rows], ref.losses, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose([r["lr"] for r in train_rows], ref.lrs, rtol=1e-9, atol=0)
    evals = {r["step"]: r["eval_loss"] for r in _rows(run, "eval")}
    assert sorted(evals) == sorted(ref.eval_losses)
    for step, loss in ref.eval_losses.items():
        assert evals[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), step

    final = load_file(run / "checkpoints" / f"step-{STEPS:06d}" / "trainable.safetensors")
    _assert_same_tensors(final, ref.weights[STEPS])
    summary = json.loads((run / "summary.json").read_text())
    best_step = min(ref.eval_losses, key=ref.eval_losses.get)
    assert summary["best_step"] == best_step
    best = load_file(run / "checkpoint-best" / "adapter_model.safetensors")
    _assert_same_tensors(best, ref.adapters[best_step])


def _assert_same_tensors(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.fixture(scope="module")
def reference_all_layers(still_model, data_files) -> Reference:
    ref = reference_run(still_model, data_files, layers=None, group_by_length=True)
    # the run must exercise what is compared: weights that move, clipping that bites,
    # an eval best that is not the last step's value by construction
    assert ref.clipped_steps >= 3
    assert not torch.equal(
        ref.weights[1]["base_model.model.classifier.modules_to_save.default.out_proj.weight"],
        ref.weights[STEPS]["base_model.model.classifier.modules_to_save.default.out_proj.weight"],
    )
    return ref


def test_lorafit_training_equals_a_plain_pytorch_loop(
    still_model, data_files, tmp_path, reference_all_layers
):
    run = train(None, lorafit_overrides(still_model, data_files, tmp_path))
    assert_matches_reference(run, reference_all_layers)


class Killed(Exception):
    pass


def killed_at_step_five(overrides: list[str], tmp_path: Path) -> Path:
    """Train until the evaluation at step 5 raises; return the unfinished run's folder."""

    def kill_at_five(step: int, row: dict) -> bool:
        if step == 5:
            raise Killed
        return False

    with pytest.raises(Killed):
        train(None, overrides, on_eval=kill_at_five)
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir() and p.name != "latest"]
    return run


def test_a_killed_and_resumed_run_equals_the_plain_loop(
    still_model, data_files, tmp_path, reference_all_layers
):
    """Killed at step 5 (an exception out of the evaluation callback; the newest checkpoint is
    step 4), then `train(resume=...)`: steps 5-10 are trained again from the checkpoint."""
    run = killed_at_step_five(
        lorafit_overrides(still_model, data_files, tmp_path, "train.checkpoint_every=4"), tmp_path
    )
    assert not (run / "summary.json").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000004"]
    assert train(resume=run) == run
    assert "resuming at step 4" in (run / "train.log").read_text()
    assert_matches_reference(run, reference_all_layers)


def test_the_activation_cache_equals_a_plain_loop_with_lora_on_the_top_layer(
    still_model, data_files, tmp_path
):
    ref = reference_run(still_model, data_files, layers=[1], group_by_length=False)
    run = train(
        None,
        lorafit_overrides(
            still_model,
            data_files,
            tmp_path,
            "lora.layers=[1]",
            "train.cache_activations=true",
            "train.group_by_length=false",
        ),
    )
    assert "activation cache: built" in (run / "train.log").read_text()
    assert all(".layer.0." not in name for name in ref.weights[STEPS])  # only layer 1 adapted
    assert_matches_reference(run, ref)


def test_the_moving_average_equals_a_plain_loop_that_averages(
    still_model, data_files, tmp_path, reference_all_layers
):
    """train.ema_decay=0.3: 0.3 binds from step 3 (the warm-up (1 + step) / (10 + step) before).
    Training follows the raw weights (the same losses as without the average); evaluations, the
    best checkpoint and the checkpoint's ema.safetensors hold the average; a run killed at step 5
    and resumed from step 4 continues the average exactly."""
    ref = reference_run(still_model, data_files, layers=None, group_by_length=True, ema_decay=0.3)
    assert ref.losses == pytest.approx(
        reference_all_layers.losses, rel=1e-6
    )  # averaging does not train
    assert ref.eval_losses != pytest.approx(
        reference_all_layers.eval_losses, rel=1e-3
    )  # but changes what is scored
    overrides = lorafit_overrides(
        still_model, data_files, tmp_path, "train.ema_decay=0.3", "train.checkpoint_every=4"
    )
    run = killed_at_step_five(overrides, tmp_path)
    _assert_same_tensors(
        load_file(run / "checkpoints" / "step-000004" / "ema.safetensors"), ref.emas[4]
    )
    assert train(resume=run) == run
    assert_matches_reference(run, ref)
    _assert_same_tensors(
        load_file(run / "checkpoints" / f"step-{STEPS:06d}" / "ema.safetensors"), ref.emas[STEPS]
    )
