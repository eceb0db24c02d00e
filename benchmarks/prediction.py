"""Prediction, whole process: the usual recipe against `lorafit predict`, per dtype.

    python benchmarks/prediction.py RUN_DIR                      # the 7,600-row workload
    python benchmarks/prediction.py RUN_DIR --input FILE --dtypes auto fp32 int8
    python benchmarks/prediction.py RUN_DIR --skip-usual         # only lorafit's rows

Each row is one fresh process, timed from its start to its exit (imports, model load,
tokenising, the forward, writing the output), as a user waits for it:

- **usual recipe**: what the competition's starter notebook does after training. The run's
  base model with its head, the LoRA adapter loaded with `PeftModel.from_pretrained` (not
  merged), fp32, texts tokenised with `Dataset.map(batched=True)` and `padding=True` (each
  row padded to the longest of its 1,000-row map batch, truncated at the tokenizer's 512:
  `usual_recipe.tokenise`),
  `Trainer.predict` in batches of 8, the `ID,Label` CSV written with pandas.
- **`lorafit predict RUN_DIR --input COPY --dtype D`** for each `--dtypes` entry, on a fresh
  copy of the input (a copy with the same bytes would reuse the saved probabilities).

It prints each row's thread count (the usual recipe: torch's default; lorafit: what its `auto`
chose, from its log), wall time, its ratio to the usual recipe (the issue's goal: 15x) and its
labels' agreement with lorafit's fp32 labels (int8's is the figure to read before using it).
Run it alone on the machine: two cores, and the usual recipe takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The usual recipe, run as its own process (`python -c`): argv = run dir, input, output.
USUAL = r"""
import sys
run, source, output, here = sys.argv[1:5]
sys.path.insert(0, here)
import pandas as pd, numpy as np, torch
from peft import PeftModel
from transformers import AutoTokenizer, Trainer, TrainingArguments, DataCollatorWithPadding
from lorafit.config import load_config
from lorafit.heads import install_head
from lorafit.model import _load_weights, load_model_config
import tempfile

cfg = load_config(f"{run}/config.yaml")
model_config = load_model_config(cfg)
base = _load_weights(cfg, model_config)  # the base model, as from_pretrained gives it
install_head(base, cfg.model.head, cfg.model.head_rank, model_config, cfg.model.pooling)
model = PeftModel.from_pretrained(base, f"{run}/checkpoint-best").eval()
tokenizer = AutoTokenizer.from_pretrained(f"{run}/checkpoint-best")
texts = pd.read_csv(source)[cfg.data.text_column].fillna("").astype(str).tolist()
from usual_recipe import tokenise  # Dataset.map, 1,000 rows a batch, padding=True, truncation=True

dataset = tokenise(tokenizer, texts)
with tempfile.TemporaryDirectory() as out_dir:
    args = TrainingArguments(output_dir=out_dir, per_device_eval_batch_size=8, report_to="none", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer))
    logits = trainer.predict(dataset).predictions
pd.DataFrame({"ID": np.arange(len(texts)), "Label": logits.argmax(-1)}).to_csv(output, index=False)
print(f"threads {torch.get_num_threads()}", file=sys.stderr)
"""


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    """(wall seconds, stderr) of a command run to its end; its output shown only when it fails."""
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return seconds, done.stderr


def threads_of(stderr: str) -> str:
    """The thread count `lorafit predict` logged (`threads for prediction: 2 of 2 usable ...`)."""
    found = re.search(r"threads for prediction: (\d+)", stderr)
    return found[1] if found else "?"


def labels_of(path: Path) -> np.ndarray:
    return pd.read_csv(path)["Label"].to_numpy()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument(
        "--input",
        help="a CSV with the run's text column (default: the 7,600-row workload of common.py)",
    )
    parser.add_argument("--dtypes", nargs="+", default=["auto", "fp32", "int8"])
    parser.add_argument(
        "--skip-usual", action="store_true", help="leave out the usual recipe (minutes)"
    )
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    if args.input is None:
        from common import load_benchmark_data

        data = load_benchmark_data()
        args.input = str(Path(tempfile.gettempdir()) / "lorafit-prediction-workload.csv")
        pd.DataFrame({"text": data.predict_texts, "label": data.predict_labels}).to_csv(
            args.input, index=False
        )
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    rows, labels = [], {}
    with tempfile.TemporaryDirectory(prefix="lorafit-prediction-") as tmp:
        tmp = Path(tmp)
        if not args.skip_usual:
            out = tmp / "usual.csv"
            seconds, err = timed(
                [
                    sys.executable,
                    "-c",
                    USUAL,
                    args.run_dir,
                    args.input,
                    str(out),
                    str(Path(__file__).resolve().parent),
                ],
                env,
            )
            labels["usual"] = labels_of(out)
            threads = re.findall(r"threads (\d+)", err)[
                -1
            ]  # torch's default unless OMP_NUM_THREADS is set
            rows.append(
                {
                    "recipe": "usual recipe (PEFT unmerged, map padding, batch 8, fp32)",
                    "seconds": seconds,
                    "threads": threads,
                }
            )
            print(f"usual recipe: {seconds:.1f} s", flush=True)
        for dtype in args.dtypes:
            # a name of its own: `predict` reuses the probabilities it saved for a file of
            # the same name and bytes; they are removed from the run afterwards
            copy = tmp / f"bench-{os.getpid()}-{time.time_ns()}-{dtype}{Path(args.input).suffix}"
            shutil.copyfile(args.input, copy)
            out = tmp / f"lorafit-{dtype}.csv"
            cmd = [
                sys.executable,
                "-m",
                "lorafit",
                "predict",
                args.run_dir,
                "--input",
                str(copy),
                "--output",
                str(out),
                "--dtype",
                dtype,
                "--label-format",
                "ids",
            ]
            seconds, err = timed(cmd, env)
            for saved in (Path(args.run_dir) / "predictions").glob(f"{copy.stem}-*.csv"):
                saved.unlink()
            labels[dtype] = labels_of(out)
            rows.append(
                {
                    "recipe": f"lorafit predict --dtype {dtype}",
                    "seconds": seconds,
                    "threads": threads_of(err),
                }
            )
            print(f"lorafit predict --dtype {dtype}: {seconds:.1f} s", flush=True)

    reference = labels.get("fp32")
    usual = rows[0]["seconds"] if not args.skip_usual else None
    print(f"\n{'recipe':<58} {'threads':>7} {'seconds':>8} {'vs usual':>9} {'labels = fp32':>14}")
    for row, key in zip(rows, labels):
        row["vs_usual"] = usual / row["seconds"] if usual else None
        row["agreement_with_fp32"] = (
            float((labels[key] == reference).mean()) if reference is not None else None
        )
        ratio = f"{row['vs_usual']:.1f}x" if usual else "-"
        agree = f"{row['agreement_with_fp32']:.2%}" if reference is not None else "-"
        print(
            f"{row['recipe']:<58} {row['threads']:>7} {row['seconds']:>8.1f} {ratio:>9} {agree:>14}"
        )
    result = {"input": args.input, "rows": len(next(iter(labels.values()))), "results": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
