"""Resident memory over a long training run: does it stay flat after warm-up?

Trains MiniLM on the real AG News rows (`../shared/data/ag_news/train_66k.csv`) through the
real CLI and samples the process's anonymous resident memory (RssAnon in /proc/PID/status:
the heap, not the memory-mapped activation cache, which is file-backed) every `--every`
seconds. Prints the samples at a quarter, half, three quarters and the end of the run, and the
growth from the quarter mark (after warm-up: the cache built, the first evaluation done) to
the end. The goal: within 10%.

    python benchmarks/memory.py                              # latent LoRA (layers 3-5), cache on
    python benchmarks/memory.py lora.layers=all train.cache_activations=false   # no cache
    python benchmarks/memory.py --steps 1200 train.batch_size=32
    python benchmarks/memory.py --env MALLOC_ARENA_MAX=1     # try an allocator setting
    python benchmarks/memory.py --build --steps 10           # the activation cache's build
    python benchmarks/memory.py --predict RUN_DIR            # lorafit predict over the 66k rows

`--build` builds the cache afresh (in a new cache folder) and samples from the start of the
command until training starts; `--predict RUN_DIR` samples `lorafit predict` over `--data`
from its start to its end (the figures are then per quarter of the whole command).

Run it alone on the machine; with one core busy set OMP_NUM_THREADS=1 (and say so). The
activation cache is built on the first run and reused by later ones (its build is not in the
figures: sampling starts when training does).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "ag_news" / "train_66k.csv"


def rss_anon_mb(pid: int) -> float | None:
    """RssAnon of a process in MB, or None when it has ended."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def cache_built(log: Path) -> bool:
    """The cache's `activation cache: built` line: the build is over (the validation prefix and
    the first evaluation come after it)."""
    return log.exists() and "activation cache: built" in log.read_text(errors="replace")


def training_started(log: Path) -> bool:
    """The first `step N:` line of the run's log: the cache is built, the loop runs."""
    return log.exists() and "step " in log.read_text(errors="replace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the run",
    )
    parser.add_argument("--json", help="also write the samples to this file")
    parser.add_argument(
        "--build",
        action="store_true",
        help="sample the activation cache's build (a fresh cache folder) instead of training",
    )
    parser.add_argument(
        "--predict",
        metavar="RUN_DIR",
        help="sample `lorafit predict RUN_DIR --input DATA` instead of training",
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides for lorafit train")
    args = parser.parse_args()

    runs = Path(tempfile.mkdtemp(prefix="lorafit-memory-"))
    out = runs / "stdout.log"
    command = [
        sys.executable,
        "-m",
        "lorafit",
        "train",
        f"model.name={args.model}",
        f"data.train={args.data}",
        "data.label_names=[World,Sports,Business,Sci/Tech]",
        "data.val_size=2000",
        "model.max_length=128",
        "lora.layers=3-5",
        "lora.r=8",
        "train.cache_activations=true",
        "train.batch_size=32",
        f"train.max_steps={args.steps}",
        f"train.eval_every={max(1, args.steps // 4)}",
        "train.log_every=50",
        "train.patience=null",
        "log.progress=false",
        f"run.dir={runs}",
        *args.overrides,
    ]
    if args.build:
        command.append(f"train.cache_dir={runs / 'cache'}")
    if args.predict:
        command = [
            sys.executable,
            "-m",
            "lorafit",
            "predict",
            args.predict,
            "--input",
            args.data,
            "--output",
            str(runs / "out.csv"),
        ]
    phase = "the cache build" if args.build else "prediction" if args.predict else "training"
    env = {**os.environ, **dict(e.split("=", 1) for e in args.env)}
    print(
        f"threads: OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset (lorafit/torch default)')}; extra env: {args.env or 'none'}"
    )
    print(" ".join(command[2:]))
    with open(out, "w") as sink:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
        samples: list[tuple[float, float]] = []
        start = None
        if args.build or args.predict:
            start = time.time()  # from the command's start
        while proc.poll() is None:
            time.sleep(args.every)
            if args.build and cache_built(out):
                proc.terminate()  # the build is over
                break
            if start is None:
                if not training_started(out):
                    continue
                start = time.time()
            mb = rss_anon_mb(proc.pid)
            if mb is not None:
                samples.append((time.time() - start, mb))
    proc.wait()
    if proc.returncode != 0 and not args.build:
        print(out.read_text()[-3000:])
        raise SystemExit(f"lorafit train failed ({proc.returncode})")
    if len(samples) < 4:
        raise SystemExit("too few samples: train longer (--steps) or sample more often (--every)")
    marks = {
        q: samples[min(len(samples) - 1, round(q * (len(samples) - 1)))]
        for q in (0.25, 0.5, 0.75, 1.0)
    }
    for q, (t, mb) in marks.items():
        print(f"{int(q * 100):>3}% of {phase} ({t:6.0f} s): RssAnon {mb:8.0f} MB")
    growth = marks[1.0][1] / marks[0.25][1] - 1
    peak = max(mb for _, mb in samples)
    print(
        f"{phase}: growth from 25% to the end: {100 * growth:+.1f}% (goal: within 10%); peak {peak:.0f} MB; {len(samples)} samples"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"command": command, "env": args.env, "samples": samples, "growth": growth})
        )


if __name__ == "__main__":
    main()
