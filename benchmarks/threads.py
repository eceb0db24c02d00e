"""Threads on a shared machine: lorafit's `auto` against fixed thread counts, idle and busy.

Runs the quickstart's training (all-MiniLM-L6-v2, LoRA on every layer, the bundled sample;
`--steps` optimizer steps of 16 rows) through the real CLI with `--threads 1`, `--threads 2`
(or the usable core count) and `auto`, in each of the cases users meet on a 2-core machine:

- idle: nothing else running;
- nice: lorafit started with `nice -n 19` (a background job) beside a normal two-thread torch job;
- pinned: beside a one-thread CPU-bound job pinned to one core;
- twin: beside a second two-thread torch job at the same priority;
- late (`--late`): the two-thread torch job starts `--late-after` seconds into a longer run
  (`auto` must notice it while training, not only at the start).

Prints training samples/s (rows / the run's training wall time) and the whole command's wall
time for each, and whether `auto` is within 1.5x of the best fixed count (5% when idle).

    python benchmarks/threads.py                 # the table in the README (about 15 minutes)
    python benchmarks/threads.py --cases idle pinned --steps 24
    python benchmarks/threads.py --late          # adds the late case (96 steps)

Run it alone on the machine: the busy cases bring their own load, anything else spoils them.
No OMP_NUM_THREADS / MKL_NUM_THREADS in the environment (they would win over `--threads`).
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
BATCH = 16

# the loads beside lorafit
TORCH_JOB = (
    "import torch\ntorch.set_num_threads(2)\na = torch.randn(1024, 1024)\nwhile True:\n    a @ a\n"
)
PINNED_JOB = "import os\nos.sched_setaffinity(0, {%d})\nwhile True:\n    pass\n"


def start_load(case: str) -> subprocess.Popen | None:
    if case in ("nice", "twin", "late"):
        return subprocess.Popen([sys.executable, "-c", TORCH_JOB])
    if case == "pinned":
        return subprocess.Popen(
            [sys.executable, "-c", PINNED_JOB % sorted(os.sched_getaffinity(0))[0]]
        )
    return None


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        proc.kill()
        proc.wait()


def train_once(case: str, threads: str, steps: int, late_after: float, timeout: float) -> dict:
    """One `lorafit train` of the quickstart under `case` with `--threads threads`."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "lorafit",
            "train",
            "--config",
            str(REPO / "configs" / "quickstart.yaml"),
            f"train.max_steps={steps}",
            f"train.eval_every={steps}",
            "train.patience=null",
            "data.test=null",
            "log.progress=false",
            f"run.dir={tmp}",
            "--threads",
            threads,
        ]
        if case == "nice":
            cmd = ["nice", "-n", "19", *cmd]
        env = {
            k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
        }
        load = None if case == "late" else start_load(case)
        time.sleep(1.0 if load else 0.0)  # the load is running before lorafit starts
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            if case == "late":
                time.sleep(late_after)
                load = start_load(case)
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                return {"case": case, "threads": threads, "timeout": timeout}
        finally:
            stop(load)
        whole = time.monotonic() - start
        if proc.returncode:
            raise SystemExit(f"lorafit train failed ({case}, --threads {threads}):\n{err[-2000:]}")
        (run,) = [p for p in Path(tmp).iterdir() if p.name != "latest"]
        summary = json.loads((run / "summary.json").read_text())
        return {
            "case": case,
            "threads": threads,
            "samples_per_s": steps * BATCH / summary["wall_time_s"],
            "train_s": summary["wall_time_s"],
            "whole_s": whole,
            "chosen": summary.get("threads"),
            "changes": summary.get("threads_changes", []),
        }


def verdict(rows: list[dict]) -> str:
    fixed = [r for r in rows if r["threads"] != "auto" and "samples_per_s" in r]
    auto = next((r for r in rows if r["threads"] == "auto" and "samples_per_s" in r), None)
    if not fixed or auto is None:
        return "n/a"
    best = max(r["samples_per_s"] for r in fixed)
    ratio = best / auto["samples_per_s"]
    goal = 1.05 if rows[0]["case"] == "idle" else 1.5
    return (
        f"best fixed / auto = {ratio:.2f} ({'ok' if ratio <= goal else 'MISSED'}, goal <= {goal})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["idle", "nice", "pinned", "twin"],
        choices=["idle", "nice", "pinned", "twin", "late"],
    )
    parser.add_argument(
        "--steps", type=int, default=24, help="optimizer steps of 16 rows per run (default 24)"
    )
    parser.add_argument(
        "--late",
        action="store_true",
        help="add the late case (the load starts during a 96-step run)",
    )
    parser.add_argument(
        "--late-after",
        type=float,
        default=12.0,
        help="seconds into the late case's run when the load starts",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="a run slower than this is stopped and shown as such",
    )
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    settings = ["1", str(max(2, cores)), "auto"]
    cases = list(args.cases) + (["late"] if args.late and "late" not in args.cases else [])
    print(f"{cores} usable cores; quickstart training, batch {BATCH}", flush=True)
    print("| case | threads | samples/s | training s | whole command s | auto chose |")
    print("|---|---|---:|---:|---:|---|")
    results = []
    for case in cases:
        steps = 96 if case == "late" else args.steps
        rows = []
        for threads in settings:
            row = train_once(case, threads, steps, args.late_after, args.timeout)
            rows.append(row)
            if "timeout" in row:
                print(
                    f"| {case} | {threads} | stopped after {args.timeout:.0f} s | | | |", flush=True
                )
                continue
            chose = ""
            if threads == "auto":
                chose = f"{row['chosen']}" + "".join(
                    f", {t} at {s:.0f} s" for s, t in row["changes"]
                )
            print(
                f"| {case} | {threads} | {row['samples_per_s']:.1f} | {row['train_s']:.1f} | {row['whole_s']:.1f} | {chose} |",
                flush=True,
            )
        print(f"  {case}: {verdict(rows)}", flush=True)
        results += rows
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
