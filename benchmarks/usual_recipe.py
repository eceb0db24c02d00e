"""The usual recipe, as the competition's starter notebook does it: the speed baseline.

    cd /work/main && python benchmarks/usual_recipe.py --steps 20

HF `Trainer` + PEFT LoRA (r=8, alpha=16, dropout 0.1 on query and value of layers 9-11, the
classifier head trained too), texts tokenised with `Dataset.map(batched=True)` in its default
1,000-row batches with `padding=True` and `truncation=True` (max_length = the tokenizer's
512), `DataCollatorWithPadding`, training batch 16, evaluation batch 64, prediction batch 8
through `trainer.predict`, AdamW (the Trainer's default) at lr 2e-4, fp32.

`padding=True` inside `map` pads every row to the longest row of its 1,000-row map batch, so
a typical 50-token headline is computed at the length of the longest of 1,000 neighbours.
That waste, the padding share, is what this baseline exposes; the collator cannot undo it
because the pad tokens are already part of each row.

Run as a script it trains the roberta-base-shaped random benchmark model (see common.py) for
`--steps` steps on the 4,000-row training slice, evaluates on `--val-rows` rows and predicts
`--predict-rows` rows of the 7,600-row prediction workload. Random weights make accuracy
about chance; the speed figures are what count. On 2 CPU cores a training step takes about
20 s and a predicted row about 1 s (the rows are padded to ~350 tokens), so the defaults run
in about 5-10 minutes; the first run also builds the model (seconds). Fewer than 1,000
prediction rows form a single, shorter map batch, so their padding share understates the
full workload's (here 59% for 128 rows against 80% for 512 rows and 83% in training).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PREDICT_ROWS,
    VAL_ROWS,
    Timer,
    build_benchmark_model,
    load_benchmark_data,
    print_results,
)

LORA_LAYERS = [9, 10, 11]
TRAIN_BATCH = 16
EVAL_BATCH = 64
PREDICT_BATCH = 8
LEARNING_RATE = 2e-4
SEED = 42


# ---------------------------------------------------------------- the notebook's pieces


def usual_lora_layers(depth: int) -> list[int]:
    """The notebook adapts layers 9, 10, 11 of 12: the top three, in a model of any depth."""
    return list(range(max(0, depth - len(LORA_LAYERS)), depth))


def usual_lora_config(layers: list[int] = LORA_LAYERS):
    """The starter notebook's LoRA: r=8, alpha=16, dropout 0.1, query+value of `layers`."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=8,
        lora_alpha=16,
        lora_dropout=0.1,
        bias="none",
        target_modules=["query", "value"],
        layers_to_transform=list(layers),
    )


def tokenise(tokenizer, texts: list[str], labels: list[int] | None = None):
    """`Dataset.map(batched=True)` (1,000 rows a batch) with `padding=True, truncation=True`."""
    from datasets import Dataset

    columns = {"text": list(texts)}
    if labels is not None:
        columns["label"] = [int(x) for x in labels]
    dataset = Dataset.from_dict(columns)

    def preprocess(examples):
        return tokenizer(examples["text"], truncation=True, padding=True)

    dataset = dataset.map(preprocess, batched=True, remove_columns=["text"])
    if labels is not None:
        dataset = dataset.rename_column("label", "labels")
    return dataset


class RecordingCollator:
    """`DataCollatorWithPadding` that also records each batch's real and padded lengths."""

    def __init__(self, tokenizer):
        from transformers import DataCollatorWithPadding

        self.collate = DataCollatorWithPadding(tokenizer=tokenizer)
        self.batches: list[tuple[np.ndarray, int]] = []

    def __call__(self, features):
        batch = self.collate(features)
        real = batch["attention_mask"].sum(dim=1).numpy()
        self.batches.append((real, int(batch["input_ids"].shape[1])))
        return batch

    def stats(self, first: int | None = None) -> dict:
        """Rows, real tokens, padded tokens and real lengths of the first `first` batches."""
        batches = self.batches[:first]
        real = np.concatenate([r for r, _ in batches]) if batches else np.zeros(0, int)
        padded = sum(len(r) * width for r, width in batches)
        return {
            "rows": int(len(real)),
            "real_tokens": int(real.sum()),
            "padded_tokens": int(padded),
            "real_lengths": real,
            "padded_lengths": np.concatenate([np.full(len(r), w) for r, w in batches])
            if batches
            else np.zeros(0, int),
        }


def _training_args(out_dir: str, max_steps: int, seed: int = SEED):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=out_dir,
        max_steps=max_steps,
        per_device_train_batch_size=TRAIN_BATCH,
        per_device_eval_batch_size=EVAL_BATCH,
        learning_rate=LEARNING_RATE,
        eval_strategy="no",  # evaluated once after training, timed on its own
        save_strategy="no",  # checkpoints are not part of the speed comparison
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=seed,
    )


def _accuracy(eval_pred) -> dict:
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def _figures(stats: dict, seconds: float, config, peak_flops_per_s, **flop_kwargs) -> dict:
    """Throughput, padding share and MFU (useful and as computed) from collator stats."""
    from lorafit.flops import encoder_flops, model_flops_utilisation

    useful = encoder_flops(config, stats["real_lengths"], **flop_kwargs)
    computed = encoder_flops(config, stats["padded_lengths"], **flop_kwargs)
    padded = stats["padded_tokens"]
    out = {
        "samples_per_s": stats["rows"] / seconds,
        "tokens_per_s": stats["real_tokens"] / seconds,
        "padding_share": 1 - stats["real_tokens"] / padded if padded else 0.0,
        "mean_real_length": stats["real_tokens"] / max(stats["rows"], 1),
        "mean_padded_length": padded / max(stats["rows"], 1),
        "useful_flops_per_s": useful / seconds,
        "mfu": None,
        "mfu_as_computed": None,
    }
    if peak_flops_per_s:
        out["mfu"] = model_flops_utilisation(useful / seconds, peak_flops_per_s)
        out["mfu_as_computed"] = model_flops_utilisation(computed / seconds, peak_flops_per_s)
    return out


# ---------------------------------------------------------------- train and predict


def run_usual_train(
    model_dir: str | Path,
    train_texts: list[str],
    train_labels: list[int],
    val_texts: list[str],
    val_labels: list[int],
    max_steps: int,
    *,
    peak_flops_per_s: float | None = None,
    keep_model: bool = False,
    seed: int = SEED,
) -> dict:
    """Train the usual recipe for `max_steps` steps, then evaluate once on the validation rows.

    Timed as one run: tokenising the training texts plus `trainer.train()`; model loading and
    the evaluation are timed apart. `samples_per_s` counts training rows, `tokens_per_s` their
    non-padding tokens, `padding_share` is the pad tokens' share of the tokens the model
    processed in training, and `mfu` counts the useful (non-padding) FLOPs against
    `peak_flops_per_s` (None without a peak). With `keep_model=True` the trained PEFT model
    comes back under "model" (for `run_usual_predict`). LoRA goes on the top three layers:
    9, 10, 11 of roberta-base's 12.
    """
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, set_seed

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    set_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=4)
    lora_layers = usual_lora_layers(base.config.num_hidden_layers)
    model = get_peft_model(base, usual_lora_config(lora_layers))
    load_seconds = time.perf_counter() - start
    collator = RecordingCollator(tokenizer)

    with tempfile.TemporaryDirectory(prefix="usual-recipe-") as out_dir, Timer() as run:
        tokenise_start = time.perf_counter()
        train_set = tokenise(tokenizer, train_texts, train_labels)
        tokenise_seconds = time.perf_counter() - tokenise_start
        trainer = Trainer(
            model=model,
            args=_training_args(out_dir, max_steps, seed),
            train_dataset=train_set,
            data_collator=collator,
            processing_class=tokenizer,
            compute_metrics=_accuracy,
        )
        train_output = trainer.train()
    # the dataloader fetches one batch ahead: only the first `max_steps` batches were trained
    stats = collator.stats(first=max_steps)

    eval_start = time.perf_counter()
    metrics = trainer.evaluate(tokenise(tokenizer, val_texts, val_labels))
    eval_seconds = time.perf_counter() - eval_start

    result = {
        "recipe": "usual (HF Trainer)",
        "steps": max_steps,
        "rows": stats["rows"],
        "seconds": run.seconds,
        "tokenise_seconds": tokenise_seconds,
        "load_seconds": load_seconds,
        **_figures(
            stats, run.seconds, model.config, peak_flops_per_s, trainable_layers=lora_layers
        ),
        "peak_memory_mb": run.peak_memory_mb,
        "train_loss": train_output.training_loss,
        "accuracy": metrics.get("eval_accuracy"),
        "eval_rows": len(val_texts),
        "eval_seconds": eval_seconds,
        "lora_layers": lora_layers,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if keep_model:
        result["model"] = model
    return result


def run_usual_predict(
    model_dir_or_model,
    texts: list[str],
    labels: list[int] | None = None,
    *,
    tokenizer=None,
    peak_flops_per_s: float | None = None,
) -> dict:
    """Predict `texts` the usual way: map-tokenise, then `trainer.predict` in batches of 8.

    `model_dir_or_model` is a saved model folder or a loaded (PEFT) model; for a model the
    tokenizer comes from `tokenizer` or else from the folder the model was loaded from.
    Timed: tokenising plus `trainer.predict`. Accuracy is given when `labels` are.
    """
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
    )

    if isinstance(model_dir_or_model, (str, Path)):
        model = AutoModelForSequenceClassification.from_pretrained(model_dir_or_model)
        source = model_dir_or_model
    else:
        model = model_dir_or_model
        source = model.config.name_or_path
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(source)
    collator = RecordingCollator(tokenizer)

    with tempfile.TemporaryDirectory(prefix="usual-predict-") as out_dir, Timer() as run:
        dataset = tokenise(tokenizer, texts)
        args = TrainingArguments(
            output_dir=out_dir,
            per_device_eval_batch_size=PREDICT_BATCH,
            report_to="none",
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, data_collator=collator)
        output = trainer.predict(dataset)
    predictions = np.argmax(output.predictions, axis=-1)
    stats = collator.stats()

    result = {
        "recipe": "usual predict (bs 8)",
        "rows": len(texts),
        "seconds": run.seconds,
        **_figures(stats, run.seconds, model.config, peak_flops_per_s, backward=False),
        "peak_memory_mb": run.peak_memory_mb,
        "accuracy": None,
    }
    if labels is not None:
        result["accuracy"] = float((predictions == np.asarray(labels)).mean())
    return result


# ---------------------------------------------------------------- script


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps (batch 16)")
    parser.add_argument("--val-rows", type=int, default=64, help=f"validation rows (<= {VAL_ROWS})")
    parser.add_argument(
        "--predict-rows",
        type=int,
        default=128,
        help=f"rows of the {PREDICT_ROWS}-row prediction workload to predict (all: {PREDICT_ROWS});"
        " about 1 s a row on 2 cores",
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached model")
    args = parser.parse_args(argv)

    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    from lorafit.bench import matmul_peak  # the peak `lorafit bench` and speed.py use

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    t0 = time.perf_counter()
    data = load_benchmark_data()
    model_dir = build_benchmark_model(data.train_texts, rebuild=args.rebuild)
    print(f"model {model_dir} ready in {time.perf_counter() - t0:.1f}s", flush=True)
    peak = matmul_peak("fp32")
    print(f"fp32 matmul peak on {torch.get_num_threads()} threads: {peak / 1e9:.1f} GFLOP/s")

    train = run_usual_train(
        model_dir,
        data.train_texts,
        data.train_labels,
        data.val_texts[: args.val_rows],
        data.val_labels[: args.val_rows],
        args.steps,
        peak_flops_per_s=peak,
        keep_model=True,
    )
    model = train.pop("model")
    predict = run_usual_predict(
        model,
        data.predict_texts[: args.predict_rows],
        data.predict_labels[: args.predict_rows],
        peak_flops_per_s=peak,
    )
    for name, r in (("train", train), ("predict", predict)):
        print(
            f"{name}: {r['rows']} rows in {r['seconds']:.1f}s, mean length "
            f"{r['mean_real_length']:.1f} real / {r['mean_padded_length']:.1f} padded tokens, "
            f"MFU as computed (pads included) {r['mfu_as_computed']:.1%}"
        )
    print(
        f"train: tokenise {train['tokenise_seconds']:.2f}s, loss {train['train_loss']:.4f}, "
        f"{train['trainable_parameters']:,} trainable parameters; "
        f"eval {train['eval_rows']} rows in {train['eval_seconds']:.1f}s"
    )
    print_results([train, predict])
    minutes = PREDICT_ROWS / predict["samples_per_s"] / 60
    print(
        f"the whole {PREDICT_ROWS}-row prediction workload would take ~{minutes:.0f} min at this "
        "rate (more if its 1,000-row map batches pad further than this sample)"
    )
    print(f"total {time.perf_counter() - t0:.1f}s")
    return [train, predict]


if __name__ == "__main__":
    main()
