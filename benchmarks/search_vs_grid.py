"""A TPE study with pruning against the shipped grid, in the same wall time on this CPU.

    cd /work/main && OMP_NUM_THREADS=1 python benchmarks/search_vs_grid.py \
        --steps 60 --eval-every 20 --train-rows 1000 --val-rows 300 --out runs/search_vs_grid

The grid is `configs/sweeps/minilm_layer_ranges.yaml` (LoRA r=8 on query+value of MiniLM
layers 0-5, 3-5, 4-5 or 5; all-MiniLM-L6-v2 on real AG News rows). It runs first, in one
process, and its wall time T is measured. Then `configs/sweeps/minilm_search.yaml`'s TPE
study (rank, learning rate, dropout, layers, target modules; median pruner; its 100,000
budget) runs with `timeout` T, so it starts no trial after T seconds (the trial running at
T finishes, so its wall time can exceed T by one trial; both times are printed). Both use
the same base (rows, steps, evaluations) from the command line, and the same validation
rows. Prints the best validation accuracy each found, with its configuration.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "configs" / "sweeps"


def sweep_file(source: Path, out: Path, args, **search) -> Path:
    """The shipped sweep file with the smaller base of this benchmark, written to `out`."""
    spec = yaml.safe_load(source.read_text())
    spec["dir"] = str(out)
    spec["name"] = source.stem
    base = spec["base"]
    base["data"].update(
        max_train_rows=args.train_rows,
        val_size=args.val_rows,
        train=str(ROOT.parent / "shared/data/ag_news/train_subset.csv"),
    )
    base["model"]["max_length"] = args.max_length
    base["train"].update(
        max_steps=args.steps,
        eval_every=args.eval_every,
        warmup_steps=max(1, args.steps // 10),
        log_every=args.eval_every,
    )
    if search:
        spec["search"].update(search)
    path = out / f"{source.stem}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def best(result: dict) -> dict:
    with open(result["leaderboard_csv"], newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "done"]
    return rows[0] if rows else {}


def main() -> None:
    from lorafit.search import sweep

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--train-rows", type=int, default=1000)
    p.add_argument("--val-rows", type=int, default=300)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--out", default="runs/search_vs_grid")
    args = p.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    start = time.time()
    grid = sweep(sweep_file(SWEEPS / "minilm_layer_ranges.yaml", out, args))
    grid_s = time.time() - start
    start = time.time()
    search = sweep(
        sweep_file(SWEEPS / "minilm_search.yaml", out, args, n_trials=None, timeout=grid_s)
    )
    search_s = time.time() - start

    print(f"\nsettings: {vars(args)}")
    for label, result, seconds in [
        ("grid (4 points)", grid, grid_s),
        ("TPE + median pruner", search, search_s),
    ]:
        row = best(result)
        counts = {
            s: list(result["status"].values()).count(s)
            for s in ("done", "pruned", "skipped", "failed")
        }
        keys = [k for k in result["plan"].keys if row.get(k)]
        print(
            f"{label:>20}: wall {seconds:6.0f} s, trials {counts}, best val accuracy "
            f"{float(row.get('val_accuracy') or 'nan'):.4f} ({', '.join(f'{k}={row[k]}' for k in keys)})"
        )


if __name__ == "__main__":
    main()
