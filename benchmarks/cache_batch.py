"""How many padded tokens per batch the activation cache should be built with (`fastpath.BUILD_TOKENS`).

    ../shared/tools/get-mpnet                 # once: all-mpnet-base-v2, the 12-layer proxy
    OMP_NUM_THREADS=2 python benchmarks/cache_batch.py [--tokens 1024,2048,4096,8192,16384]

(nothing else running.) Times `fastpath.compute_prefix`, the very function the cache build
and the evaluations on the prefix run, over the first `--rows` real AG News rows of
`../shared/data/ag_news/train_subset.csv`, longest first in batches of at most `--tokens`
padded tokens, through the first `--layers` layers of `--model` under `--precision`
autocast; each size `--repeat` times, interleaved (the machine is shared: the spread says
how noisy it was). Prints rows/s per size (the best and the worst repeat) and the host's
2048 x 2048 matmul rate before and after, the scale of every figure.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "ag_news" / "train_subset.csv"
MPNET = Path("~/.cache/lorafit-models/all-mpnet-base-v2").expanduser()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", default=str(MPNET), help="a local encoder folder (default: get-mpnet's)"
    )
    p.add_argument(
        "--layers", type=int, default=9, help="layers below the first adapted one (9: LoRA on 9-11)"
    )
    p.add_argument("--rows", type=int, default=640)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument(
        "--tokens", default="1024,2048,4096,8192,16384", help="padded tokens per batch, comma list"
    )
    p.add_argument(
        "--precision",
        default="bf16",
        choices=["bf16", "no"],
        help="autocast, as train.mixed_precision",
    )
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--data", default=str(DATA))
    return p.parse_args(argv)


def main(argv=None) -> None:
    import pandas as pd
    import torch
    from accelerate import Accelerator
    from transformers import AutoModel, AutoTokenizer

    from lorafit import fastpath
    from lorafit.flops import measure_matmul_flops

    args = parse_args(argv)
    if not Path(args.model).is_dir():
        raise SystemExit(
            f"cache_batch: {args.model}: no such folder; run ../shared/tools/get-mpnet or pass --model"
        )
    rate = lambda: round(measure_matmul_flops(torch.bfloat16, n=2048, seconds=3.0) / 1e12, 3)  # noqa: E731
    before = rate()
    model = AutoModel.from_pretrained(args.model, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    texts = pd.read_csv(args.data).text.tolist()[: args.rows]
    ids = tok(texts, truncation=True, max_length=args.max_length)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    trunk = fastpath.find_trunk(model)
    accelerator = Accelerator(cpu=True, mixed_precision=args.precision)
    order = np.argsort(-lengths, kind="stable")
    sizes = [int(t) for t in args.tokens.split(",")]
    fastpath.compute_prefix(
        trunk, args.layers, [ids[i] for i in order[:8]], tok.pad_token_id, accelerator
    )  # warm-up
    rows_per_s: dict[int, list[float]] = {t: [] for t in sizes}
    for _ in range(args.repeat):
        for tokens in sizes:
            started = time.perf_counter()
            for batch in fastpath._token_batches(order, lengths, tokens):
                fastpath.compute_prefix(
                    trunk, args.layers, [ids[i] for i in batch], tok.pad_token_id, accelerator
                )
            rows_per_s[tokens].append(len(ids) / (time.perf_counter() - started))
    after = rate()
    print(
        f"{Path(args.model).name}, layers 0-{args.layers - 1}, {len(ids)} rows (mean {lengths.mean():.0f} tokens), "
        f"{args.precision}; bf16 matmul {before} TFLOP/s before, {after} after; "
        f"BUILD_TOKENS now {fastpath.BUILD_TOKENS:,}"
    )
    print("| tokens per batch | rows/s (best) | rows/s (worst) |\n|---:|---:|---:|")
    for tokens in sizes:
        print(f"| {tokens:,} | {max(rows_per_s[tokens]):.1f} | {min(rows_per_s[tokens]):.1f} |")


if __name__ == "__main__":
    main()
