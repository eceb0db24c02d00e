"""The command line: parse arguments, call one library function per subcommand, print.

    lorafit train --config configs/agnews_roberta_latent.yaml train.lr=3e-4
    lorafit describe --config configs/agnews_roberta_latent.yaml
    lorafit predict RUN_DIR --input test.pkl --output submission.csv
    lorafit evaluate RUN_DIR --input labelled.csv

A `UserError` prints as one line and exits 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings

from lorafit.errors import UserError


def _config_epilog() -> str:
    from lorafit.config import config_reference

    rows = config_reference()
    width = max(len(k) for k, _, _ in rows)
    lines = ["config keys (set in the YAML file or as key=value after the options):"]
    lines += [f"  {k:<{width}}  {h} [default {d}]" for k, d, h in rows]
    return "\n".join(lines)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (default: the built-in defaults)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=3e-4")


# Each subcommand: a function that adds its parser and sets `func`, which takes the parsed
# arguments, calls one library function and prints. Add new ones to COMMANDS.


def _train(sub, fmt):
    p = sub.add_parser("train", help="train a LoRA classifier; writes a run directory", epilog=_config_epilog(), formatter_class=fmt)
    _add_config_args(p)

    def run(args):
        from lorafit.train import train

        print(f"run directory: {train(args.config, args.overrides)}")

    p.set_defaults(func=run)


def _describe(sub, fmt):
    p = sub.add_parser("describe", help="parameter counts and LoRA settings, without training", epilog=_config_epilog(), formatter_class=fmt)
    _add_config_args(p)
    p.add_argument("--output-dir", help="also write model_description.json/.txt into this folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    def run(args):
        from lorafit.params import describe, description_text

        d = describe(args.config, args.overrides, output_dir=args.output_dir)
        print(json.dumps(d, indent=2) if args.json else description_text(d).rstrip())

    p.set_defaults(func=run)


def _predict(sub, fmt):
    p = sub.add_parser("predict", help="label a file with a run's best checkpoint (submission CSV)")
    p.add_argument("run_dir", help="run directory made by `lorafit train` (e.g. runs/latest)")
    p.add_argument("--input", required=True, help="file to label (.csv, .parquet, .jsonl, .pkl) or sample-test")
    p.add_argument("--output", help="submission CSV path (default: RUN_DIR/submission-<input>.csv, never overwritten)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")

    def run(args):
        from lorafit.metrics import format_metrics
        from lorafit.predict import predict

        result = predict(args.run_dir, args.input, args.output, batch_size=args.batch_size, overwrite=args.overwrite)
        print(f"wrote {result['rows']} predictions to {result['output']}")
        print(f"probabilities: {result['probabilities']}")
        if "metrics" in result:
            print(format_metrics(result["metrics"]))

    p.set_defaults(func=run)


def _evaluate(sub, fmt):
    p = sub.add_parser("evaluate", help="accuracy, macro-F1, per-class scores and confusion matrix on a labelled file")
    p.add_argument("run_dir", help="run directory made by `lorafit train`")
    p.add_argument("--input", required=True, help="labelled file")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    def run(args):
        from lorafit.metrics import format_metrics
        from lorafit.predict import evaluate

        m = evaluate(args.run_dir, args.input, batch_size=args.batch_size)
        print(json.dumps(m, indent=2) if args.json else format_metrics(m))

    p.set_defaults(func=run)


COMMANDS = [_train, _describe, _predict, _evaluate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorafit",
        description="Budgeted LoRA fine-tuning of text encoders for classification.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub, argparse.RawDescriptionHelpFormatter)
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("lorafit").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        args.func(args)
        return 0
    except UserError as e:
        if args.debug:
            raise
        print(f"lorafit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lorafit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
