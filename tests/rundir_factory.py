"""Build run directories by writing the contract files directly (docs/get-started/run-directory.md).

    run = make_run_dir(tmp_path, "agnews-r8", r=8, final_accuracy=0.89)

Until the core trainer lands, the plot, log and report tests read folders made here. The
values are shaped like a real AG News run (loss from ln 4 down, accuracy from 25% up, warmup
then cosine learning rate, a few hundred samples/s on CPU). Everything lives in this one file
so it can be swapped for a real tiny `lorafit train` run later.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

LABEL_NAMES = ["World", "Sports", "Business", "Sci/Tech"]
TRAIN_ROWS = 4800
BATCH = 32
TEST_STEM = "test-3f2a9c1d4e5b"


def make_run_dir(
    parent: str | Path,
    name: str = "agnews-r8",
    *,
    steps: int = 300,
    log_every: int = 10,
    eval_every: int = 50,
    r: int = 8,
    lr: float = 2e-4,
    final_accuracy: float = 0.89,
    seed: int = 0,
    summary: bool = True,
    evaluation: bool = True,
    display_name: str | None = None,
) -> Path:
    """Write a complete (or, with `summary=False`, interrupted) run directory; return it.

    `display_name` overrides `summary.run_name` (e.g. to test HTML escaping), since
    `run.name` itself only allows letters, digits and `._+-`.
    """
    run = Path(parent) / f"{name}-20261122-1015{seed % 60:02d}"
    run.mkdir(parents=True)
    config = make_config(name, r=r, lr=lr, seed=seed, log_every=log_every, eval_every=eval_every)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    params = make_params(r)
    (run / "model_description.json").write_text(
        json.dumps({"model": "roberta-base", "params": params})
    )
    rows = make_metrics(steps, log_every, eval_every, lr, final_accuracy, seed)
    test = make_evaluation(final_accuracy - 0.01, seed) if evaluation else None
    if test is not None:
        rows.append(_test_row(rows, test))
    write_metrics(run, rows)
    if evaluation:
        (run / "evaluations").mkdir()
        (run / "evaluations" / f"{TEST_STEM}.json").write_text(json.dumps(test, indent=2))
    if summary:
        info = make_summary(run, config, rows, params, test)
        info["run_name"] = display_name or info["run_name"]
        (run / "summary.json").write_text(json.dumps(info, indent=2))
    return run


def write_metrics(run: Path, rows: list[dict]) -> None:
    """(Re)write `metrics.jsonl` with `rows`, one JSON object per line."""
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_config(
    name: str, *, r: int, lr: float, seed: int, log_every: int, eval_every: int
) -> dict:
    """A fully resolved config, shaped like `config_to_dict(Config())`."""
    return {
        "model": {
            "name": "roberta-base",
            "max_length": 128,
            "head": "full",
            "attn_implementation": "sdpa",
        },
        "data": {
            "train": "sample",
            "validation": None,
            "test": "data/test.csv",
            "val_size": 640,
            "text_column": "text",
            "label_column": "label",
            "label_names": LABEL_NAMES,
            "max_train_rows": None,
        },
        "lora": {
            "r": r,
            "alpha": 2.0 * r,
            "dropout": 0.1,
            "target_modules": ["query", "value"],
            "bias": "none",
            "layers": "all",
            "sections": [],
        },
        "budget": 1000000,
        "train": {
            "optimizer": "adamw",
            "lr": lr,
            "weight_decay": 0.01,
            "batch_size": BATCH,
            "eval_batch_size": 128,
            "grad_accum": 1,
            "max_grad_norm": 1.0,
            "max_steps": None,
            "epochs": 2.0,
            "scheduler": "cosine",
            "warmup_ratio": 0.1,
            "warmup_steps": None,
            "eval_every": eval_every,
            "log_every": log_every,
            "metric": "eval_accuracy",
            "patience": 3,
            "seed": seed,
            "mixed_precision": "auto",
            "group_by_length": True,
        },
        "run": {"dir": "runs", "name": name},
        "log": {"tensorboard": False, "progress": True},
    }


def make_params(r: int) -> dict:
    """roberta-base with LoRA on query+value of 12 layers plus the classification head."""
    trainable = 12 * 2 * 2 * 768 * r + 768 * 768 + 768 + 768 * 4 + 4
    total = 124_645_632 + trainable
    return {
        "total": total,
        "trainable": trainable,
        "frozen": total - trainable,
        "trainable_pct": round(100 * trainable / total, 4),
    }


def make_metrics(
    steps: int, log_every: int, eval_every: int, lr: float, final_accuracy: float, seed: int
) -> list[dict]:
    """Train rows every `log_every` steps, eval rows every `eval_every` steps and at the end."""
    rng = np.random.default_rng(seed)
    rows, best = [], -1.0
    for step in range(1, steps + 1):
        progress = 1 - math.exp(-step / (steps / 4))
        base = {
            "step": step,
            "epoch": round(step * BATCH / TRAIN_ROWS, 4),
            "time_s": round(step * 0.18, 2),
        }
        if step % log_every == 0:
            speed = 178 + rng.normal(0, 6)
            rows.append(
                {
                    **base,
                    "kind": "train",
                    "lr": _lr(step, steps, lr),
                    "train_loss": round(1.386 - 1.05 * progress + rng.normal(0, 0.04), 4),
                    "samples_per_s": round(speed, 1),
                    "tokens_per_s": round(speed * rng.normal(41.3, 1.5), 1),
                    "padding_share": 0.07,
                    "memory_mb": 1830.5,
                    "memory_now_mb": 1790.0,
                }
            )
        if step % eval_every == 0 or step == steps:
            accuracy = round(0.25 + (final_accuracy - 0.25) * progress + rng.normal(0, 0.004), 4)
            rows.append(
                {
                    **base,
                    "kind": "eval",
                    "eval_loss": round(1.30 - 0.97 * progress, 4),
                    "eval_accuracy": accuracy,
                    "eval_f1": round(accuracy - 0.004, 4),
                    "is_best": accuracy > best,
                }
            )
            best = max(best, accuracy)
    return rows


def _lr(step: int, steps: int, peak: float) -> float:
    warmup = max(1, int(0.1 * steps))
    if step <= warmup:
        return peak * step / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def make_evaluation(accuracy: float, seed: int, per_class: int = 1900) -> dict:
    """An evaluation dict (as `lorafit evaluate` writes) with a consistent confusion matrix."""
    rng = np.random.default_rng(seed + 1)
    n = len(LABEL_NAMES)
    matrix = np.zeros((n, n), dtype=int)
    for i in range(n):
        right = int(per_class * min(0.99, accuracy + rng.normal(0, 0.03)))
        wrong = rng.multinomial(per_class - right, np.full(n - 1, 1 / (n - 1)))
        matrix[i] = np.insert(wrong, i, right)
    predicted, support, diag = matrix.sum(0), matrix.sum(1), np.diag(matrix)
    precision, recall = diag / np.maximum(predicted, 1), diag / support
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return {
        "input": "data/test.csv",
        "rows": int(matrix.sum()),
        "accuracy": float(diag.sum() / matrix.sum()),
        "macro_f1": float(f1.mean()),
        "loss": 0.3412,
        "label_names": LABEL_NAMES,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(LABEL_NAMES)
        },
        "confusion_matrix": matrix.tolist(),
    }


def _test_row(rows: list[dict], test: dict) -> dict:
    last = rows[-1]
    return {
        "kind": "test",
        "step": last["step"],
        "epoch": last["epoch"],
        "time_s": last["time_s"] + 9.5,
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "test_f1": test["macro_f1"],
    }


def make_summary(
    run: Path, config: dict, rows: list[dict], params: dict, test: dict | None
) -> dict:
    """`summary.json` of a finished run, consistent with `rows`."""
    evals = [r for r in rows if r["kind"] == "eval"]
    best = max(evals, key=lambda r: r["eval_accuracy"])
    return {
        "run_name": config["run"]["name"],
        "run_dir": str(run),
        "command": f"lorafit train --config configs/agnews.yaml run.name={config['run']['name']}",
        "model_name": config["model"]["name"],
        "label_names": LABEL_NAMES,
        "metric": "eval_accuracy",
        "best_value": best["eval_accuracy"],
        "best_step": best["step"],
        "final_step": rows[-1]["step"],
        "stopped_early": False,
        "best_eval": best,
        "test": test,
        "params": params,
        "seed": config["train"]["seed"],
        "device": "cpu",
        "mixed_precision": "no",
        "wall_time_s": rows[-1]["time_s"] + 12.0,
        "setup_time_s": 30.0,
        "git_commit": "4c1d9e2a7b3f5e6d8c9a0b1c2d3e4f5a6b7c8d9e",
        "versions": {
            "python": "3.11.9",
            "torch": "2.13.0",
            "transformers": "5.0.0",
            "peft": "0.21.0",
            "accelerate": "1.10.0",
            "datasets": "4.0.0",
            "lorafit": "0.1.0",
        },
        "started_at": "2026-11-22T10:15:00+00:00",
        "finished_at": "2026-11-22T10:16:10+00:00",
    }
