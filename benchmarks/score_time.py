"""Score against wall time: each finished run's headline score and wall minutes, printed and
plotted (the plot `lorafit report` shows in "Score against wall time").

    python benchmarks/score_time.py RUN [RUN ...] [--output docs/agnews66k-time.png]

A run's score is its held-out test figure (`data.test_size` / `data.test`) when it has one,
else its best validation figure; the table says which. Wall time is the run's own whole
command (`summary.json`: wall_time_s, the training loop, plus setup_time_s, what came before its
first step: the data, the model, the activation cache's build; runs made before setup_time_s
was recorded count the loop only), so it describes the machine and threads the run had (its
`threads` and `threads_reason` are printed beside it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lorafit.plots import figure_png, plot_score_vs_time, score_points


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--output", help="write the plot here (PNG)")
    parser.add_argument("--title", default="Score against wall time")
    args = parser.parse_args(argv)
    runs = [Path(r) for r in args.runs]
    missing = [str(r) for r in runs if not (r / "summary.json").is_file()]
    if missing:
        print(
            f"score_time: not finished runs (no summary.json): {', '.join(missing)}",
            file=sys.stderr,
        )
        return 2
    points = score_points(runs)
    print(
        f"{'run':<28} {'model':<22} {'train rows':>10} {'steps':>6} {'minutes':>8} {'score':>8}  split    threads"
    )
    for p in points:
        summary = json.loads((p["dir"] / "summary.json").read_text())
        rows = _train_rows(p["dir"])
        score = f"{100 * p['score']:.2f}%" if p["percent"] else f"{p['score']:.4f}"
        print(
            f"{p['label']:<28} {Path(p['model']).name:<22} {rows:>10} {summary.get('final_step', ''):>6} "
            f"{p['minutes']:>8.1f} {score:>8}  {'test' if p['held_out'] else 'val':<8} "
            f"{summary.get('threads', '?')} ({summary.get('threads_reason', '')})"
        )
    if args.output:
        Path(args.output).write_bytes(figure_png(plot_score_vs_time(points, args.title)))
        print(f"wrote {args.output}")
    return 0


def _train_rows(run: Path) -> str:
    """The training rows the run's train.log reports ("train: N rows"), or '?'."""
    try:
        for line in (run / "train.log").read_text(encoding="utf-8").splitlines():
            if "train: " in line and " rows, tokens per row" in line:
                return f"{int(line.split('train: ')[1].split(' rows')[0]):,}"
    except (OSError, ValueError):
        pass
    return "?"


if __name__ == "__main__":
    sys.exit(main())
