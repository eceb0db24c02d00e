"""The 12-layer proxy: the seed recipe, a budgeted best recipe and the usual recipe on
all-mpnet-base-v2 (roberta-base's size and shape, pretrained), trained on real AG News rows.

    ../shared/tools/get-mpnet                                  # once: the model folder (~10 s)
    cd /work/main
    python benchmarks/mpnet_proxy.py seed                      # (a) ~15 min on 2 cores
    python benchmarks/mpnet_proxy.py best                      # (b) <= 30 min on 2 cores
    python benchmarks/mpnet_proxy.py usual --train-rows 2000   # (c) the usual recipe is slow:
                                                               #     about 1 row/s here
    python benchmarks/mpnet_proxy.py all --out /tmp/mpnet-proxy  # a, b and c (c on every row!)
    # a smoke test of every part (minutes):
    python benchmarks/mpnet_proxy.py all --train-rows 64 --max-steps 2 --val-rows 32

Every part trains on `../shared/data/ag_news/train_subset.csv` (23,696 rows) and holds out
the same stratified, seeded validation split (`--val-rows`, 2,000 rows, `train.seed` 42), so
the three parts see the same rows. Run it on an idle machine: the wall times are the figures.

(a) `seed`: `configs/agnews_mpnet_latent.yaml` (LoRA r=8, alpha 16, dropout 0.1 on attn.q and
    attn.v of layers 9-11, MPNet's own head) for one epoch through `lorafit train`: best
    validation accuracy and wall time of the whole command.
(b) `best`: `configs/agnews_mpnet_best.yaml` (under 1,000,000 trainable parameters) through
    `lorafit train`: validation accuracy, the accuracy on a perturbed copy of the validation
    rows (`lorafit evaluate RUN --input VAL.csv --perturb mixed`, rate 0.1, seed 0) and wall
    time.
(c) `usual`: the starter notebook's recipe (HF `Trainer` + PEFT, `Dataset.map(batched=True)`
    with `padding=True` per 1,000-row map batch, batch 16, AdamW at 2e-4, fp32; see
    `usual_recipe.py`) with the seed recipe's LoRA in MPNet's names, one epoch over the
    training rows, then one evaluation on the validation rows; against `lorafit train` of
    the seed recipe on the same rows. Both are timed whole: the usual recipe from loading the
    model to its evaluation (in this process, imports excluded), lorafit as the whole
    `python -m lorafit train` command (a new process: imports, loading, tokenising, the
    activation cache, training, its evaluations and checkpoints). Nothing is extrapolated:
    with `--train-rows N` both train on the same stratified N rows.

`--max-steps N` caps every training run (smoke tests only: the figures are then meaningless).
Prints a table and writes `mpnet_proxy.json` into `--out`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_MODEL = os.environ.get("LORAFIT_MPNET", "/root/.cache/lorafit-models/all-mpnet-base-v2")
DATA = "../shared/data/ag_news/train_subset.csv"  # relative to the repository root
SEED_CONFIG = ROOT / "configs" / "agnews_mpnet_latent.yaml"
BEST_CONFIG = ROOT / "configs" / "agnews_mpnet_best.yaml"
SEED_LAYERS = [9, 10, 11]


def common_overrides(args, run_dir: Path) -> list[str]:
    """What every lorafit part shares: the model, the rows, the held-out split, the folder."""
    out = [
        f"model.name={args.model}",
        f"data.train={DATA}",
        "data.validation=null",
        "data.test=null",
        f"data.val_size={args.val_rows}",
        "log.progress=false",
        f"run.dir={run_dir}",
        # a fresh activation cache per part: building it is part of the time measured
        f"train.cache_dir={run_dir / 'activation-cache'}",
    ]
    if args.train_rows:
        out.append(f"data.max_train_rows={args.train_rows}")
    if args.max_steps:
        out += [f"train.max_steps={args.max_steps}", f"train.eval_every={args.max_steps}"]
    return out


def lorafit_train(config: Path, overrides: list[str], run_dir: Path) -> tuple[Path, float]:
    """`python -m lorafit train --config CONFIG ...` in a new process; (run folder, wall s)."""
    command = [sys.executable, "-m", "lorafit", "train", "--config", str(config), *overrides]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    wall = time.perf_counter() - started
    runs = sorted(
        p
        for p in run_dir.iterdir()
        if p.is_dir() and not p.is_symlink() and (p / "summary.json").is_file()
    )
    return runs[-1], wall


def validation_csv(args, out: Path) -> Path:
    """The held-out validation rows (the runs' own split) as a `text,label` CSV."""
    import pandas as pd

    from lorafit.config import load_config
    from lorafit.data import load_splits

    cfg = load_config(SEED_CONFIG, common_overrides(args, out / "runs"))
    path = out / f"validation-{args.val_rows}.csv"
    if not path.exists():
        val = load_splits(cfg.data, cfg.train.seed)["validation"]
        pd.DataFrame({"text": val.texts, "label": val.labels}).to_csv(path, index=False)
    return path


def run_summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def part_seed(args, out: Path) -> dict:
    run, wall = lorafit_train(SEED_CONFIG, common_overrides(args, out / "seed"), out / "seed")
    s = run_summary(run)
    return {
        "part": "a: seed recipe (lorafit)",
        "run": str(run),
        "trainable": s["params"]["trainable"],
        "steps": s["final_step"],
        "wall_s": round(wall, 1),
        "val_accuracy": s["best_eval"]["eval_accuracy"],
        "precision": s.get("mixed_precision"),
    }


def part_best(args, out: Path) -> dict:
    run, wall = lorafit_train(BEST_CONFIG, common_overrides(args, out / "best"), out / "best")
    s = run_summary(run)
    val = validation_csv(args, out)
    command = [
        sys.executable, "-m", "lorafit", "evaluate", str(run), "--input", str(val),
        "--perturb", "mixed", "--json",
    ]  # fmt: skip
    print("$", " ".join(command), flush=True)
    scored = json.loads(
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    )
    return {
        "part": "b: best recipe (lorafit)",
        "run": str(run),
        "trainable": s["params"]["trainable"],
        "steps": s["final_step"],
        "wall_s": round(wall, 1),
        "val_accuracy": s["best_eval"]["eval_accuracy"],
        "reloaded_accuracy": _find(scored, "clean").get("accuracy", scored.get("accuracy")),
        "perturbed_accuracy": _find(scored, "perturbed")["mixed"]["accuracy"],
        "precision": s.get("mixed_precision"),
    }


def _find(scored: dict, key: str) -> dict:
    return scored.get(key) or {}


def usual_train_whole(args, train, val) -> dict:
    """The usual recipe on MPNet, timed whole: load, tokenise, `trainer.train()`, evaluate."""
    import numpy as np
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, set_seed
    from usual_recipe import TRAIN_BATCH, RecordingCollator, _accuracy, _training_args, tokenise

    steps = math.ceil(len(train.texts) / TRAIN_BATCH)  # one epoch
    if args.max_steps:
        steps = min(steps, args.max_steps)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    set_seed(42)
    base = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=4)
    lora = LoraConfig(  # the notebook's LoRA, in MPNet's module names
        task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1, bias="none",
        target_modules=["attn.q", "attn.v"], layers_to_transform=SEED_LAYERS,
    )  # fmt: skip
    model = get_peft_model(base, lora)
    collator = RecordingCollator(tokenizer)
    with tempfile.TemporaryDirectory(prefix="usual-mpnet-") as tmp:
        trainer = Trainer(
            model=model,
            args=_training_args(tmp, steps),
            train_dataset=tokenise(tokenizer, train.texts, list(train.labels)),
            data_collator=collator,
            processing_class=tokenizer,
            compute_metrics=_accuracy,
        )
        trainer.train()
        metrics = trainer.evaluate(tokenise(tokenizer, val.texts, list(val.labels)))
    wall = time.perf_counter() - started
    stats = collator.stats(first=steps)
    return {
        "part": "c: usual recipe (Trainer + PEFT)",
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "steps": steps,
        "rows": stats["rows"],
        "wall_s": round(wall, 1),
        "val_accuracy": metrics.get("eval_accuracy"),
        "padding_share": round(1 - stats["real_tokens"] / max(stats["padded_tokens"], 1), 4),
        "mean_padded_length": float(np.mean(stats["padded_lengths"])) if stats["rows"] else 0.0,
    }


def part_usual(args, out: Path) -> list[dict]:
    """The usual recipe and lorafit's seed recipe on the same rows, each timed whole."""
    from lorafit.config import load_config
    from lorafit.data import load_splits

    overrides = common_overrides(args, out / "seed-vs-usual")
    cfg = load_config(SEED_CONFIG, overrides)
    splits = load_splits(cfg.data, cfg.train.seed)  # the rows lorafit trains and validates on
    usual = usual_train_whole(args, splits["train"], splits["validation"])
    run, wall = lorafit_train(SEED_CONFIG, overrides, out / "seed-vs-usual")
    s = run_summary(run)
    ours = {
        "part": "c: seed recipe (lorafit), same rows",
        "run": str(run),
        "trainable": s["params"]["trainable"],
        "steps": s["final_step"],
        "rows": len(splits["train"].texts),
        "wall_s": round(wall, 1),
        "val_accuracy": s["best_eval"]["eval_accuracy"],
        "precision": s.get("mixed_precision"),
    }
    ours["speedup_whole"] = round(usual["wall_s"] / max(ours["wall_s"], 1e-9), 2)
    return [usual, ours]


def machine_speed() -> dict:
    """This machine's 2048 x 2048 matmul rate now (TFLOP/s), fp32 and bf16: the figures' scale.

    The machine is shared: the same run takes longer when the host is busy, and the matmul
    rate measured before and after the parts tells how busy it was.
    """
    import torch

    from lorafit.flops import measure_matmul_flops

    return {
        name: round(measure_matmul_flops(dtype, n=2048, seconds=3.0) / 1e12, 3)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| part | trainable | steps | wall (s) | val acc | perturbed acc | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        acc = r.get("val_accuracy")
        pert = r.get("perturbed_accuracy")
        note = f"{r['speedup_whole']}x faster, whole" if "speedup_whole" in r else ""
        if "padding_share" in r:
            note = f"padding {r['padding_share']:.1%}"
        lines.append(
            f"| {r['part']} | {r['trainable']:,} | {r['steps']} | {r['wall_s']:.1f} | "
            f"{'' if acc is None else f'{100 * acc:.2f}'} | {'' if pert is None else f'{100 * pert:.2f}'} | {note} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=["seed", "best", "usual", "all"])
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="all-mpnet-base-v2 folder (../shared/tools/get-mpnet)",
    )
    p.add_argument(
        "--train-rows", type=int, default=None, help="train on a stratified subset of N rows"
    )
    p.add_argument(
        "--val-rows", type=int, default=2000, help="held-out validation rows (default 2,000)"
    )
    p.add_argument(
        "--max-steps", type=int, default=None, help="cap every training run (smoke tests only)"
    )
    p.add_argument(
        "--out", default=None, help="folder for runs and mpnet_proxy.json (default: a temp folder)"
    )
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if not (Path(args.model) / "config.json").is_file():
        sys.exit(
            f"mpnet_proxy: no model at {args.model}; run ../shared/tools/get-mpnet or pass --model"
        )
    os.chdir(ROOT)  # the configs' data paths are relative to the repository root
    out = Path(args.out or tempfile.mkdtemp(prefix="mpnet-proxy-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    out = Path(
        tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=out)
    )  # never reuse a cache
    rows: list[dict] = []
    speed = {"before": machine_speed()}
    print(f"matmul TFLOP/s before: {speed['before']}", flush=True)
    if args.part in ("seed", "all"):
        rows.append(part_seed(args, out))
    if args.part in ("best", "all"):
        rows.append(part_best(args, out))
    if args.part in ("usual", "all"):
        rows += part_usual(args, out)
    command = "python benchmarks/mpnet_proxy.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    speed["after"] = machine_speed()
    (out / "mpnet_proxy.json").write_text(
        json.dumps({"command": command, "rows": rows, "matmul_tflops": speed}, indent=2) + "\n"
    )
    print(
        f"\n{command}\n(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {os.cpu_count()} CPUs; "
        f"2048x2048 matmul TFLOP/s before {speed['before']}, after {speed['after']})\n"
    )
    print(table(rows))
    print(f"\nwritten: {out / 'mpnet_proxy.json'}")
    return rows


if __name__ == "__main__":
    main()
