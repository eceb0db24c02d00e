"""Your own data, measured: the GLUE suite (RTE, CoLA, SST-2) and two files as users have them
(the SMS Spam Collection, TREC), trained with lorafit's shipped configs and scored on each
task's dev (or held-out test) split, beside the LoRA paper's roberta-base figures.

    OMP_NUM_THREADS=1 python benchmarks/glue.py                    # all tasks, MiniLM, offline
    OMP_NUM_THREADS=1 python benchmarks/glue.py --tasks rte cola   # some of them
    python benchmarks/glue.py --model roberta-base                  # on a GPU with the hub

Every task runs the real CLI (`lorafit train --config configs/...`), one after the other, and
the table names the model in every row, with the metric each task is scored by (GLUE's:
accuracy, Matthews correlation for CoLA; macro-F1 for the imbalanced SMS file), the trainable
parameters and the wall time of the whole `lorafit train` process. The reference column is
the LoRA paper's (Hu et al. 2021, Table 2: roberta-base, LoRA with 0.3M trainable parameters,
GLUE dev sets); for SMS and TREC there is no such figure.

Run it alone on the machine (two cores: a test suite beside it slows it several times), and
say which thread count a figure comes from: OMP_NUM_THREADS=1 on a busy machine, or torch's
default on an idle one.
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
SHARED = REPO.parent / "shared" / "data" / "foreign"

# task: (config, metric in summary.json's scores, label for the table, LoRA paper roberta-base)
TASKS = {
    "rte": ("configs/glue/rte.yaml", "accuracy", "accuracy", 86.6),
    "cola": ("configs/glue/cola.yaml", "mcc", "Matthews corr.", 63.4),
    "sst2": ("configs/glue/sst2.yaml", "accuracy", "accuracy", 95.1),
    "sms": ("configs/sms_spam.yaml", "macro_f1", "macro-F1 (test)", None),
    "trec": ("configs/trec.yaml", "accuracy", "accuracy (TREC_10)", None),
}


def trec_tsv(folder: Path) -> tuple[Path, Path]:
    """TREC's `COARSE:fine question` lines as `label<TAB>question` TSVs: the conversion the README
    gives users (the coarse class; one stray byte is latin-1, read with data.encoding)."""
    out = []
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train_5500.label.txt", "TREC_10.label"):
        raw = (SHARED / "trec" / name).read_bytes().decode("latin-1")
        rows = [line.split(" ", 1) for line in raw.splitlines() if line.strip()]
        path = folder / f"trec-{name.split('.')[0].lower()}.tsv"
        path.write_text(
            "".join(f"{head.split(':')[0]}\t{text}\n" for head, text in rows), encoding="utf-8"
        )
        out.append(path)
    return out[0], out[1]


def run_task(task: str, model: str | None, runs: Path, extra: list[str]) -> dict:
    config, metric, label, paper = TASKS[task]
    overrides = [f"run.dir={runs}", "log.progress=false", *extra]
    if model:
        overrides.append(f"model.name={model}")
    if task == "trec":
        train, test = trec_tsv(runs)
        overrides += [f"data.train={train}", f"data.test={test}", "data.encoding=utf-8"]
    start = time.time()
    subprocess.run(
        [sys.executable, "-m", "lorafit", "train", "--config", config, *overrides],
        cwd=REPO,
        check=True,
    )
    wall = time.time() - start
    run = (runs / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    scored = summary.get("test") or _best_eval(summary)
    return {
        "task": task,
        "model": summary["model_name"],
        "metric": label,
        "value": 100 * scored[metric],
        "paper": paper,
        "trainable": summary["params"]["trainable"],
        "wall_s": wall,
        "run": str(run),
        "split": "test" if summary.get("test") else "dev (validation)",
    }


def _best_eval(summary: dict) -> dict:
    """The best checkpoint's scores on the validation split (GLUE's dev set here)."""
    best = summary["best_eval"]
    return {
        "accuracy": best["eval_accuracy"],
        "macro_f1": best["eval_f1"],
        "mcc": best.get("eval_mcc"),
    }


def print_table(rows: list[dict]) -> None:
    print(
        f"\n{'task':<6} {'model':<34} {'split':<17} {'metric':<20} {'lorafit':>8} {'paper':>7} {'trainable':>10} {'wall':>8}"
    )
    for r in rows:
        paper = f"{r['paper']:.1f}" if r["paper"] is not None else "-"
        model = Path(r["model"]).name if os.sep in r["model"] else r["model"]
        trainable = f"{r['trainable']:,}" if isinstance(r["trainable"], int) else "?"
        print(
            f"{r['task']:<6} {model:<34} {r['split']:<17} {r['metric']:<20} {r['value']:>8.1f} {paper:>7} {trainable:>10} {r['wall_s']:>7.0f}s"
        )
    print(
        "paper: LoRA (Hu et al. 2021, Table 2), roberta-base, 0.3M trainable parameters, GLUE dev sets"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument(
        "--model", help="model.name for every task (default: each config's, MiniLM)"
    )
    parser.add_argument("--runs", help="where the runs go (default: a temporary folder)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every task")
    args = parser.parse_args()
    runs_root = Path(args.runs or tempfile.mkdtemp(prefix="lorafit-glue-"))
    print(
        f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset (torch default)')}; runs in {runs_root}"
    )
    rows = []
    for task in args.tasks:
        rows.append(run_task(task, args.model, runs_root / task, args.overrides))
        print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
