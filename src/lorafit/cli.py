"""The command line: parse arguments, call one library function per subcommand, print.

    lorafit train --config configs/agnews_roberta_latent.yaml train.lr=3e-4
    lorafit check-data --config configs/agnews_roberta_latent.yaml   (or train --dry-run)
    lorafit describe --config configs/agnews_roberta_latent.yaml
    lorafit predict RUN_DIR --input test.pkl --output submission.csv
    lorafit evaluate RUN_DIR --input labelled.csv
    lorafit plots RUN_DIR / lorafit log RUN_DIR / lorafit report RUN_DIR... --output report.html
    lorafit sweep configs/sweeps/minilm_layer_ranges.yaml --parallel 2
    lorafit ensemble RUN_A RUN_B --input test.pkl --method weighted
    lorafit export RUN_DIR --merged OUT
    lorafit cache [KEY... | --older-than DAYS] [--dry-run]

A `UserError` prints as one line and exits 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys

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
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=3e-4"
    )


# Each subcommand: a function that adds its parser and sets `func`, which takes the parsed
# arguments, calls one library function and prints. Add new ones to COMMANDS.


def _train(sub, fmt):
    p = sub.add_parser(
        "train",
        help="train a LoRA classifier; writes a run directory",
        epilog=_config_epilog(),
        formatter_class=fmt,
    )
    _add_config_args(p)
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a killed run from its newest checkpoint, with its own config.yaml "
        "(no --config or overrides); a new run never replaces an existing folder",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="read and check the data as `lorafit check-data` does, then stop: no model, nothing written",
    )
    p.add_argument(
        "--threads",
        metavar="N|auto",
        help="CPU threads, the same as train.threads=N (default auto; see train.threads below)",
    )

    def run(args):
        if args.dry_run:
            from lorafit.checkdata import check_data, check_text

            if args.resume:
                raise UserError(
                    "train --dry-run checks the data of a new run; drop --resume (or run check-data --config RUN_DIR/config.yaml)"
                )
            print(check_text(check_data(args.config, args.overrides)))
            return
        from lorafit.train import train

        overrides = [*args.overrides, *([f"train.threads={args.threads}"] if args.threads else [])]
        print(f"run directory: {train(args.config, overrides, resume=args.resume)}")

    p.set_defaults(func=run)


def _check_data(sub, fmt):
    p = sub.add_parser(
        "check-data",
        help="read and check a run's data as train would (splits, columns, classes, lengths); trains nothing",
        description="Read the data with the same config as `lorafit train` and print each split's source and "
        "rows, the text and label columns (and whether guessed), the classes with their rows per split, the "
        "imbalance and the checkpoint metric train.metric selects, and the text lengths (tokens when the "
        "model's tokenizer loads offline). Loads no model weights and writes nothing; bad data exits 2.",
        epilog=_config_epilog(),
        formatter_class=fmt,
    )
    _add_config_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    def run(args):
        from lorafit.checkdata import check_data, check_text

        result = check_data(args.config, args.overrides)
        print(json.dumps(result, indent=2) if args.json else check_text(result))

    p.set_defaults(func=run)


def _describe(sub, fmt):
    p = sub.add_parser(
        "describe",
        help="parameter counts and LoRA settings, without training",
        epilog=_config_epilog(),
        formatter_class=fmt,
    )
    _add_config_args(p)
    p.add_argument("--output-dir", help="also write model_description.json/.txt into this folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    def run(args):
        from lorafit.params import describe, description_text

        d = describe(args.config, args.overrides, output_dir=args.output_dir)
        print(json.dumps(d, indent=2) if args.json else description_text(d).rstrip())

    p.set_defaults(func=run)


def _add_dtype_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtype",
        choices=["auto", "fp32", "bf16", "int8"],
        default="auto",
        help="weights' dtype for inference: auto = bf16 where the processor computes it natively "
        "(GPU, or a CPU with AVX512-BF16/AMX), else fp32; int8 (CPU only, opt-in): the encoder's "
        "linear layers quantised, faster, a few labels in a hundred differ from fp32's",
    )


def _add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        metavar="N|auto",
        help="CPU threads: auto (default) = the usable cores less those other processes keep busy, "
        "looked at again as it runs; OMP_NUM_THREADS / MKL_NUM_THREADS win when set",
    )


def _add_column_args(p: argparse.ArgumentParser) -> None:
    """--text-column / --label-column: the input's columns, when not the run's data.text_column / data.label_column."""
    p.add_argument(
        "--text-column",
        metavar="NAME",
        help="the input's text column, or FIRST,SECOND for a pair (default: the run's data.text_column)",
    )
    p.add_argument(
        "--label-column",
        metavar="NAME",
        help="the input's label column (default: the run's data.label_column, e.g. label)",
    )


def _predict(sub, fmt):
    p = sub.add_parser("predict", help="label a file with a run's best checkpoint (submission CSV)")
    p.add_argument("run_dir", help="run directory made by `lorafit train` (e.g. runs/latest)")
    p.add_argument(
        "--input",
        required=True,
        help="file to label (.csv, .tsv, .txt, .parquet, .jsonl, .json, .pkl, a save_to_disk folder) or sample-test",
    )
    p.add_argument(
        "--output",
        help="submission CSV path (default: RUN_DIR/submission-<input>.csv, never overwritten)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    _add_dtype_arg(p)
    _add_threads_arg(p)
    _add_column_args(p)
    _add_output_args(p)

    def run(args):
        from lorafit.metrics import format_metrics
        from lorafit.predict import predict

        result = predict(
            args.run_dir,
            args.input,
            args.output,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            dtype=args.dtype,
            text_column=args.text_column,
            label_column=args.label_column,
            id_column=args.id_column,
            label_format=args.label_format,
            threads=args.threads,
        )
        print(f"wrote {result['rows']} predictions to {result['output']}")
        print(f"probabilities: {result['probabilities']}")
        if "metrics" in result:
            print(format_metrics(result["metrics"]))

    p.set_defaults(func=run)


def _evaluate(sub, fmt):
    p = sub.add_parser(
        "evaluate",
        help="accuracy, macro-F1, per-class scores and confusion matrix on a labelled file",
    )
    p.add_argument("run_dir", help="run directory made by `lorafit train`")
    p.add_argument("--input", required=True, help="labelled file")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_dtype_arg(p)
    _add_threads_arg(p)
    p.add_argument(
        "--perturb",
        metavar="KIND[,KIND]",
        help="also score perturbed copies: word_dropout, word_swap, typo, synonym, mixed",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0.1,
        help="with --perturb: share of the words changed (default 0.1)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="with --perturb: seed of the perturbations (default 0)"
    )
    _add_column_args(p)

    def run(args):
        from lorafit.metrics import format_metrics
        from lorafit.predict import evaluate

        columns = {
            "text_column": args.text_column,
            "label_column": args.label_column,
            "threads": args.threads,
        }
        if args.perturb:
            from lorafit.robustness import evaluate_perturbed, format_robustness

            r = evaluate_perturbed(
                args.run_dir,
                args.input,
                args.perturb,
                rate=args.rate,
                seed=args.seed,
                batch_size=args.batch_size,
                dtype=args.dtype,
                **columns,
            )
            print(json.dumps(r, indent=2) if args.json else format_robustness(r))
            return
        m = evaluate(
            args.run_dir, args.input, batch_size=args.batch_size, dtype=args.dtype, **columns
        )
        print(json.dumps(m, indent=2) if args.json else format_metrics(m))

    p.set_defaults(func=run)


# ---- issue 3: the experiment workflow (plots, log, report, sweep, ensemble, export)


def _plots(sub, fmt):
    p = sub.add_parser("plots", help="(re)draw a run's plots into RUN_DIR/plots/")
    p.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="run directories made by `lorafit train`"
    )

    def run(args):
        from lorafit.plots import write_plots

        for run_dir in args.run_dirs:
            for path in write_plots(run_dir):
                print(path)

    p.set_defaults(func=run)


def _log(sub, fmt):
    p = sub.add_parser(
        "log", help="regenerate RUN_DIR/training_log.txt from metrics.jsonl and summary.json"
    )
    p.add_argument(
        "run_dir", help="run directory made by `lorafit train` (finished or interrupted)"
    )

    def run(args):
        from lorafit.runlog import write_training_log

        print(f"wrote {write_training_log(args.run_dir)}")

    p.set_defaults(func=run)


def _report(sub, fmt):
    p = sub.add_parser("report", help="one static HTML page comparing runs (images embedded)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories to compare")
    p.add_argument(
        "--output", default="report.html", help="HTML file to write (default: report.html)"
    )
    p.add_argument("--leaderboard", metavar="CSV", help="a sweep's leaderboard.csv to show as well")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")

    def run(args):
        from lorafit.report import write_report

        print(f"wrote {write_report(args.run_dirs, args.output, args.leaderboard, args.overwrite)}")

    p.set_defaults(func=run)


def _sweep(sub, fmt):
    p = sub.add_parser(
        "sweep",
        help="search a sweep file's configs with Optuna (budgeted, pruned); write a leaderboard",
        description="Run a sweep file's study: a grid (and/or runs) or search spaces sampled by "
        "TPE, random, QMC or GP. Configs over budget are counted, never trained; a pruner stops "
        "trailing trials. The study lives in <dir>/<name>/study.db (or storage:); run the same "
        "command again to continue, or --worker on other machines to join. Writes "
        "leaderboard.csv / .md in <dir>/<name>/. See configs/sweeps/ for examples.",
    )
    p.add_argument(
        "sweep_file", metavar="SWEEP.yaml", help="sweep file: base, grid, runs and/or search"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="overrides for the base config of every trial",
    )
    p.add_argument(
        "--parallel", type=int, help="local worker processes (default: one per --gpus id, else 1)"
    )
    p.add_argument(
        "--gpus", help="GPU ids, e.g. 0,1: worker i gets CUDA_VISIBLE_DEVICES=gpus[i mod N]"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="only list the grid's trials (parameters, budget) or the search space",
    )
    p.add_argument(
        "--worker",
        action="store_true",
        help="join the study as one more worker (same file and storage)",
    )

    def run(args):
        from lorafit.search import plan_text, sweep

        result = sweep(
            args.sweep_file,
            args.overrides,
            parallel=args.parallel,
            gpus=args.gpus,
            dry_run=args.dry_run,
            worker=args.worker,
        )
        if args.dry_run:
            print(plan_text(result["plan"], result["status"]))
            return
        print(result["leaderboard_md"].read_text().rstrip())
        print(f"\nleaderboard: {result['leaderboard_csv']} and {result['leaderboard_md']}")

    p.set_defaults(func=run)


def _add_output_args(p) -> None:
    """--id-column and --label-format, shared by predict and ensemble."""
    p.add_argument(
        "--id-column",
        metavar="NAME",
        help="pass this input column through as the first output column (default: ID = row number from 0)",
    )
    p.add_argument(
        "--label-format",
        choices=["names", "ids"],
        help="write class names or ids 0..K-1 (default: the run's data.label_format; auto resolves to ids "
        "for integer labels with data.label_names, as the competition's ID,Label wants, else names)",
    )


def _ensemble(sub, fmt):
    p = sub.add_parser("ensemble", help="combine several runs' predictions into one submission CSV")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="two or more run directories")
    p.add_argument(
        "--input",
        required=True,
        help="file to label (.csv, .tsv, .txt, .parquet, .jsonl, .json, .pkl, a save_to_disk folder) or sample-test",
    )
    p.add_argument(
        "--output",
        help="submission CSV (default: ./ensemble-<method>-<input>.csv, never overwritten)",
    )
    p.add_argument(
        "--method",
        choices=["mean", "weighted", "vote"],
        default="mean",
        help="mean of probabilities (default); weighted: weights fitted on the shared validation "
        "split (max. log-likelihood); vote: majority, ties by mean probability",
    )
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    _add_dtype_arg(p)
    _add_threads_arg(p)
    _add_column_args(p)
    _add_output_args(p)

    def run(args):
        from lorafit.ensemble import ensemble, format_result

        result = ensemble(
            args.run_dirs,
            args.input,
            args.output,
            args.method,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            dtype=args.dtype,
            text_column=args.text_column,
            label_column=args.label_column,
            id_column=args.id_column,
            label_format=args.label_format,
            threads=args.threads,
        )
        print(format_result(result))

    p.set_defaults(func=run)


def _export(sub, fmt):
    p = sub.add_parser(
        "export", help="save a run's best checkpoint with LoRA merged in (plain transformers)"
    )
    p.add_argument("run_dir", help="run directory made by `lorafit train`")
    p.add_argument(
        "--merged",
        required=True,
        metavar="OUT",
        help="folder to write; AutoModelForSequenceClassification.from_pretrained(OUT) loads it",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT")

    def run(args):
        from lorafit.export import export_merged

        print(f"wrote {export_merged(args.run_dir, args.merged, overwrite=args.overwrite)}")

    p.set_defaults(func=run)


def _plan(sub, fmt):
    p = sub.add_parser(
        "plan",
        help="configurations that fit a parameter budget, best spenders marked",
        epilog=_config_epilog(),
        formatter_class=fmt,
    )
    _add_config_args(p)
    p.add_argument(
        "--budget", type=int, help="trainable-parameter budget (default: the config's budget)"
    )
    p.add_argument(
        "--top",
        type=int,
        default=15,
        help="rows to show, each counted exactly (0 = all; ~0.3 s a row)",
    )
    p.add_argument(
        "--sort",
        default="spend",
        help="spend (best first), trainable, encoder, coverage, rank or head",
    )
    p.add_argument(
        "--heads",
        default="full,linear,lowrank:16",
        help="heads to try; lowrank:K / dense_lora:K set the rank",
    )
    p.add_argument(
        "--ranks", default="1-64", help="LoRA ranks to try: a range 1-64 or a list 4,8,16"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def run(args):
        from lorafit.plan import plan, plan_text

        result = plan(
            args.config,
            args.overrides,
            budget=args.budget,
            top=args.top,
            sort=args.sort,
            heads=args.heads,
            ranks=args.ranks,
        )
        print(json.dumps(result, indent=2) if args.json else plan_text(result))

    p.set_defaults(func=run)


def _bench(sub, fmt):
    p = sub.add_parser(
        "bench",
        help="measure training and prediction speed, padding, MFU, memory and accuracy here",
        epilog=_config_epilog(),
        formatter_class=fmt,
    )
    _add_config_args(p)
    p.add_argument(
        "--predict-input",
        help="file to label for the prediction figures (default: data.validation, else data.test)",
    )
    p.add_argument(
        "--dtype",
        action="append",
        choices=["auto", "fp32", "bf16"],
        help="prediction dtype; repeat to compare (default: auto)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="prediction batch size")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def run(args):
        from lorafit.bench import bench_text, run_bench

        result = run_bench(
            args.config,
            args.overrides,
            predict_input=args.predict_input,
            dtypes=tuple(args.dtype or ["auto"]),
            batch_size=args.batch_size,
        )
        print(json.dumps(result, indent=2) if args.json else bench_text(result))

    p.set_defaults(func=run)


def _teacher(sub, fmt):
    p = sub.add_parser(
        "teacher",
        help="build a teacher for train.teacher: a run with the budget lifted, or an ensemble folder",
        description="With --config: train it (full fine-tuning with lora.mode=full, or a wide LoRA) with "
        "the budget lifted; the run directory is the teacher. With --ensemble RUN...: write a folder "
        "whose teacher is the mean of those runs' probabilities. With --config and --folds K: a "
        "cross-fitted teacher, K runs each trained on all training rows but one fold, each text "
        "labelled by the members that did not train on it.",
        epilog=_config_epilog(),
        formatter_class=fmt,
    )
    _add_config_args(p)
    p.add_argument(
        "--ensemble",
        nargs="+",
        metavar="RUN_DIR",
        help="two or more finished runs to combine instead of training",
    )
    p.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="with --config: a cross-fitted teacher of K runs (5 is usual)",
    )
    p.add_argument(
        "--output",
        help="with --ensemble or --folds: the folder to write (default: runs/teacher-ensemble-<timestamp>, "
        "<run.dir>/<run.name>-folds-<timestamp>); with --folds the same folder again resumes an interrupted build",
    )

    def run(args):
        from lorafit.teacher import build_teacher

        folder = build_teacher(
            args.config,
            args.overrides,
            ensemble=args.ensemble,
            folds=args.folds,
            output=args.output,
        )
        print(f"teacher: {folder}\nuse it with: lorafit train --config FILE train.teacher={folder}")

    p.set_defaults(func=run)


def _cache(sub, fmt):
    p = sub.add_parser(
        "cache",
        help="list the stores kept between runs (activation caches, teacher logits); remove on request",
        description="Without KEY or --older-than: list the stores under the cache folder (train.cache_dir's "
        "default: $LORAFIT_CACHE_DIR or ~/.cache/lorafit/activations), newest use first. With them: remove those.",
    )
    p.add_argument(
        "keys", nargs="*", metavar="KEY", help="stores to remove, by the key the listing shows"
    )
    p.add_argument("--dir", help="the cache folder, if a config sets train.cache_dir")
    p.add_argument(
        "--older-than", type=float, metavar="DAYS", help="remove every store not used for DAYS days"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="show what would be removed, remove nothing"
    )
    p.add_argument("--json", action="store_true", help="print JSON rows instead of the table")

    def run(args):
        from lorafit.caches import format_size, format_table, list_caches, remove_caches

        if not args.keys and args.older_than is None:
            stores = list_caches(args.dir)
            print(
                json.dumps([s.row() for s in stores], indent=2)
                if args.json
                else format_table(stores)
            )
            return
        gone = remove_caches(args.dir, args.keys, args.older_than, dry_run=args.dry_run)
        if args.json:
            print(json.dumps([s.row() for s in gone], indent=2))
            return
        for s in gone:
            print(
                f"{'would remove' if args.dry_run else 'removed'} {s.kind} {s.key} ({format_size(s.size)})"
            )
        print(
            f"{len(gone)} stores, {format_size(sum(s.size for s in gone))}{' (dry run)' if args.dry_run else ''}"
        )

    p.set_defaults(func=run)


COMMANDS = [
    _train,
    _check_data,
    _describe,
    _predict,
    _evaluate,
    _plots,
    _log,
    _report,
    _sweep,
    _ensemble,
    _export,
    _plan,
    _bench,
    _teacher,
    _cache,
]


def version_text() -> str:
    """`lorafit 0.1.0 (Python 3.12.3, torch 2.13.0, transformers 5.25.0, peft 0.21.0)`: read
    from the installed packages' metadata, so nothing heavy is imported."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from lorafit import __version__

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{n} {installed(n)}" for n in ("torch", "transformers", "peft"))
    return f"lorafit {__version__} (Python {platform.python_version()}, {libraries})"


class _Version(argparse.Action):
    """`--version`: one unwrapped line, looked up only when asked for."""

    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorafit",
        description="Budgeted LoRA fine-tuning of text encoders for classification.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument(
        "--version",
        action=_Version,
        help="print lorafit's version and those of the libraries it runs on, then exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub, argparse.RawDescriptionHelpFormatter)
    return parser


# commands that only read a run's files: transformers stays unloaded
_FILE_COMMANDS = {"plots", "log", "report", "cache"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help and argument errors exit here, fast
    from lorafit.console import console

    try:
        with console(libraries=args.command not in _FILE_COMMANDS):
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
    except OSError as e:  # a full disk or read-only folder the library did not name itself
        if args.debug or e.errno not in _DISK_ERRORS:
            raise
        print(
            f"lorafit: error: {e.filename or 'writing output'}: {e.strerror}; free disk space or choose a writable folder",
            file=sys.stderr,
        )
        return 2


_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


if __name__ == "__main__":
    sys.exit(main())
