"""Distillation on the offline proxy: the student alone, with a teacher, with a teacher and unlabelled texts.

    cd /work/main && OMP_NUM_THREADS=2 python benchmarks/distill.py \
        --seeds 42,43,44 --out runs/distill

(nothing else running on the machine; `--precision bf16` where the CPU computes bf16.)

Data, from `../shared/data/ag_news/train_subset.csv` (23,696 real rows), written to
`--out`/data/ once: a stratified, seeded (seed 0) HOLDOUT of `--holdout-rows` rows that no
model trains on or selects a checkpoint with (every accuracy below is on it); an UNLABELLED
pool of `--unlabeled-rows` other rows whose labels are thrown away; the rest is the
LABELLED file both teacher and students train on, less `--val-rows` VALIDATION rows (seed 0)
that every run selects its checkpoint on. Every seed trains on the same texts, so the
teacher's logits for them are computed once and reused by every student. `--unlabeled holdout` uses the holdout texts themselves as the
unlabelled texts instead: transductive use of the file to be predicted, as the competition
allows (its labels are never read).

Models: one teacher, `lorafit teacher --config --teacher-config` (default
configs/agnews_teacher.yaml, all-mpnet-base-v2 fully fine-tuned) on the labelled file with
the first seed, or an existing one with `--teacher RUN_DIR`, which may be a `lorafit teacher
--ensemble` folder (scored as `lorafit ensemble --method mean`: the mean of its members'
probabilities; its training time and trainable parameters are its members' sums; `--recipes
student` needs no teacher, so the students alone can be trained first and ensembled into the
teacher of the next command); then, per seed, three students
from `--student-config` (default configs/agnews_distill.yaml, MiniLM under the budget):

- `student`: no teacher (train.teacher=null, data.unlabeled=null), i.e. agnews_best;
- `teacher`: with the teacher, no unlabelled texts;
- `teacher+unlabeled`: with the teacher and the unlabelled texts.

Times, reported separately: the teacher's training; the teacher's inference over each
student's training texts (the logit store, built before the student starts and then
reused); each student's training (summary.json wall time: the loop and its evaluations).
Accuracies: clean and perturbed (`evaluate --perturb mixed`, rate `--rate`, seed 0) on the
holdout, for the teacher and every student; the mean over seeds with the standard error,
and the paired gains over `student`. Rows go to `--out`/results.jsonl; a markdown table is
printed. The `student` recipe does not depend on the teacher: to compare a second teacher on
the same `--out`, `--reuse-students` takes a seed's `student` row from results.jsonl instead
of training it again, when that run's config is the one this command would train (run.* aside),
and scores it again on the holdout. Smoke test (a couple of minutes, figures meaningless):

    OMP_NUM_THREADS=1 python benchmarks/distill.py --seeds 1,2,3 --train-rows 160 \
        --holdout-rows 120 --unlabeled-rows 120 --val-rows 40 --max-length 32 \
        --out /tmp/distill-smoke --teacher-config configs/agnews_best.yaml \
        --teacher-overrides lora.r=4 train.max_steps=5 \
        --student-overrides train.max_steps=5 train.eval_every=5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "ag_news" / "train_subset.csv"
RECIPES = ("student", "teacher", "teacher+unlabeled")


def write_data(args) -> dict[str, Path]:
    """holdout.csv, unlabelled.csv (text only) and labelled.csv under --out/data/ (seed 0)."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    folder = Path(args.out) / "data"
    paths = {k: folder / f"{k}.csv" for k in ("holdout", "unlabelled", "labelled", "validation")}
    if all(p.exists() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    if args.teacher_split:  # the existing teacher's own split: holdout = its validation rows
        teacher_splits = _run_splits(Path(args.teacher))
        holdout = pd.DataFrame(
            {
                "text": teacher_splits["validation"].texts,
                "label": teacher_splits["validation"].labels,
            }
        )
        labelled = pd.DataFrame(
            {"text": teacher_splits["train"].texts, "label": teacher_splits["train"].labels}
        )
        unlabelled = holdout.iloc[:0]
    else:
        frame = pd.read_csv(args.data)[["text", "label"]]
        rest, holdout = train_test_split(
            frame, test_size=args.holdout_rows, random_state=0, stratify=frame.label
        )
        labelled, unlabelled = train_test_split(
            rest, test_size=args.unlabeled_rows, random_state=0, stratify=rest.label
        )
    labelled, validation = train_test_split(
        labelled, test_size=args.val_rows, random_state=0, stratify=labelled.label
    )
    holdout.to_csv(paths["holdout"], index=False)
    validation.to_csv(paths["validation"], index=False)
    unlabelled[["text"]].to_csv(paths["unlabelled"], index=False)
    labelled.to_csv(paths["labelled"], index=False)
    return paths


def _run_splits(run_dir: Path) -> dict:
    """The training and validation rows a run was trained and selected on (its config, its seed)."""
    from lorafit.config import load_config
    from lorafit.data import load_splits

    cfg = load_config(run_dir / "config.yaml")
    return load_splits(cfg.data, cfg.train.seed)


def shared_overrides(args, data: dict[str, Path], seed: int, name: str) -> list[str]:
    rows = [f"data.max_train_rows={args.train_rows}"] if args.train_rows else []
    return [
        f"data.train={data['labelled']}",
        f"data.validation={data['validation']}",
        "data.test=null",
        *rows,
        f"model.max_length={args.max_length}",
        f"train.seed={seed}",
        f"train.mixed_precision={args.precision}",
        "log.progress=false",
        f"run.dir={args.out}",
        f"run.name={name}",
    ]


def score(run_dir: Path, holdout: Path, args) -> dict:
    """Clean and perturbed accuracy on the holdout (an ensemble teacher: its members' mean probabilities)."""
    from lorafit.robustness import evaluate_perturbed

    members = ensemble_members(run_dir)
    if members:
        return score_ensemble(members, holdout, args)
    r = evaluate_perturbed(
        run_dir,
        str(holdout),
        args.perturb,
        rate=args.rate,
        seed=0,
        batch_size=128,
        dtype=args.score_dtype,
    )
    kind = args.perturb.split(",")[0]
    return {
        "accuracy": r["clean"]["accuracy"],
        "perturbed_accuracy": r["perturbed"][kind]["accuracy"],
    }


def ensemble_members(teacher: Path) -> list[Path] | None:
    """The member runs of a `lorafit teacher --ensemble` folder, as train.teacher reads them (None for a single run)."""
    from lorafit.teacher.logits import _ensemble_members

    return (
        [Path(m) for m in _ensemble_members(teacher)[0]]
        if (teacher / "teacher.json").is_file()
        else None
    )


def score_ensemble(members: list[Path], holdout: Path, args) -> dict:
    """`lorafit ensemble --method mean` on the holdout and on the perturbed copy `evaluate --perturb` scores."""
    import pandas as pd

    from lorafit.ensemble import ensemble
    from lorafit.robustness import perturbed_texts

    kind = args.perturb.split(",")[0]
    frame = pd.read_csv(holdout)
    perturbed = holdout.with_name(f"{holdout.stem}-{kind}-r{args.rate:g}-s0.csv")
    frame.assign(text=perturbed_texts(frame.text.tolist(), kind, args.rate, 0)).to_csv(
        perturbed, index=False
    )
    out = Path(args.out) / "teacher-ensemble-predictions.csv"
    acc = {
        name: ensemble(
            members,
            str(path),
            str(out),
            "mean",
            batch_size=128,
            overwrite=True,
            dtype=args.score_dtype,
        )["accuracy"]
        for name, path in (("accuracy", holdout), ("perturbed_accuracy", perturbed))
    }
    out.unlink()
    return acc


def build_teacher_run(args, data) -> dict:
    """The teacher's row: trained here (timed) or before (the time its run, or its members' runs,
    recorded; an ensemble's parameters and times are its members' sums), scored on the holdout."""
    started = time.time()
    if args.teacher:
        run_dir = Path(args.teacher)
    else:
        from lorafit.teacher import build_teacher

        seed = int(args.seeds.split(",")[0])
        run_dir = build_teacher(
            args.teacher_config,
            [*shared_overrides(args, data, seed, "bench-teacher-model"), *args.teacher_overrides],
        )
    train_s = time.time() - started
    runs = ensemble_members(run_dir) or [run_dir]
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    if args.teacher:
        train_s = float(sum(s.get("wall_time_s", float("nan")) for s in summaries))
    return {
        "run_dir": str(run_dir),
        "trainable": sum(s["params"]["trainable"] for s in summaries),
        "members": len(runs),
        "train_s": train_s,
        **score(run_dir, data["holdout"], args),
    }


def student_config(args, data, seed: int, recipe: str, teacher: Path | None):
    """The config a recipe's student trains with (`student` needs no teacher)."""
    from lorafit.config import as_config

    extra = {
        "student": ["train.teacher=null", "data.unlabeled=null"],
        "teacher": [f"train.teacher={teacher}", "data.unlabeled=null"],
        "teacher+unlabeled": [f"train.teacher={teacher}", f"data.unlabeled={data[args.unlabeled]}"],
    }[recipe]
    name = "bench-" + recipe.replace("+", "-")
    return as_config(
        args.student_config,
        [*shared_overrides(args, data, seed, name), *args.student_overrides, *extra],
    )


def run_student(args, data, seed: int, recipe: str, teacher: Path) -> dict:
    """Train one student; the teacher's inference is timed apart (the store is built first)."""
    from lorafit.data import load_splits
    from lorafit.teacher import prepare_distillation
    from lorafit.train import train

    cfg = student_config(args, data, seed, recipe, teacher)
    teacher_s = 0.0
    if cfg.train.teacher:
        started = time.time()
        prepare_distillation(cfg, load_splits(cfg.data, cfg.train.seed))  # fills the logit store
        teacher_s = time.time() - started
    run_dir = train(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "recipe": recipe,
        "seed": seed,
        "run_dir": str(run_dir),
        "trainable": summary["params"]["trainable"],
        "steps": summary["final_step"],
        "student_s": summary["wall_time_s"],
        "teacher_inference_s": round(teacher_s, 1),
        "val_accuracy": (summary.get("best_eval") or {}).get("eval_accuracy"),
        "unlabeled": (summary.get("teacher") or {}).get("unlabeled"),
        **score(run_dir, data["holdout"], args),
    }


def reused_student(args, data, seed: int) -> dict | None:
    """An earlier `student` row of --out/results.jsonl for this seed whose run has this config (run.* aside)."""
    from lorafit.config import config_to_dict, load_config
    from lorafit.data import load_splits
    from lorafit.metrics import resolve_metric

    results = Path(args.out) / "results.jsonl"
    if not results.exists():
        return None
    cfg = student_config(args, data, seed, "student", None)
    # settled as a run records it: columns, classes, label format, train.metric=auto
    resolve_metric(cfg, load_splits(cfg.data, cfg.train.seed)["train"].labels)
    wanted = config_to_dict(cfg)
    wanted.pop("run")
    for line in results.read_text().splitlines():
        row = json.loads(line)
        if (
            row.get("recipe") != "student"
            or row.get("seed") != seed
            or not Path(row["run_dir"], "summary.json").exists()
        ):
            continue
        had = config_to_dict(load_config(Path(row["run_dir"]) / "config.yaml"))
        had.pop("run")
        if had == wanted:
            return {**row, "reused": True, **score(Path(row["run_dir"]), data["holdout"], args)}
    return None


def mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def markdown(rows: list[dict], teacher: dict | None) -> str:
    lines = [
        "| model | seeds | trainable | train time (s) | teacher inference (s) | holdout acc | perturbed acc | gain over student (acc / perturbed) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    if teacher:  # None when only the students alone were trained
        lines.append(
            f"| teacher ({teacher['run_dir']}) | 1 | {teacher['trainable']:,} | {teacher['train_s']:.0f} | - | "
            f"{100 * teacher['accuracy']:.2f} | {100 * teacher['perturbed_accuracy']:.2f} | - |"
        )
    base = {r["seed"]: r for r in rows if r["recipe"] == "student"}
    for recipe in RECIPES:
        mine = [r for r in rows if r["recipe"] == recipe]
        if not mine:
            continue
        acc, acc_se = mean_se([100 * r["accuracy"] for r in mine])
        pert, pert_se = mean_se([100 * r["perturbed_accuracy"] for r in mine])
        gain = "-"
        paired = [r for r in mine if r["seed"] in base]
        if recipe != "student" and paired:
            g, g_se = mean_se([100 * (r["accuracy"] - base[r["seed"]]["accuracy"]) for r in paired])
            p, p_se = mean_se(
                [
                    100 * (r["perturbed_accuracy"] - base[r["seed"]]["perturbed_accuracy"])
                    for r in paired
                ]
            )
            gain = f"{g:+.2f} ± {g_se:.2f} / {p:+.2f} ± {p_se:.2f}"
        lines.append(
            f"| {recipe} | {len(mine)} | {mine[0]['trainable']:,} | {np.mean([r['student_s'] for r in mine]):.0f} | "
            f"{np.mean([r['teacher_inference_s'] for r in mine]):.0f} | {acc:.2f} ± {acc_se:.2f} | {pert:.2f} ± {pert_se:.2f} | {gain} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--seeds",
        default="42,43,44",
        help="student seeds (the teacher trains once, with the first)",
    )
    p.add_argument(
        "--recipes", default=",".join(RECIPES), help=f"comma list of {', '.join(RECIPES)}"
    )
    p.add_argument("--student-config", default=str(REPO / "configs" / "agnews_distill.yaml"))
    p.add_argument("--student-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--teacher-config", default=str(REPO / "configs" / "agnews_teacher.yaml"))
    p.add_argument("--teacher-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--teacher",
        help="an existing teacher run (skips training one; its time is its summary's wall time)",
    )
    p.add_argument(
        "--teacher-split",
        action="store_true",
        help="with --teacher: the holdout is the teacher run's own validation rows, the labelled rows its "
        "training rows, and the unlabelled texts the holdout's (transductive; --unlabeled holdout)",
    )
    p.add_argument(
        "--reuse-students",
        action="store_true",
        help="take each seed's `student` row from --out/results.jsonl when its run has the same config "
        "(e.g. a second teacher on the same data) instead of training it again",
    )
    p.add_argument(
        "--unlabeled",
        choices=["unlabelled", "holdout"],
        default="unlabelled",
        help="unlabelled texts: the pool split off the data (default) or the holdout itself (transductive)",
    )
    p.add_argument("--holdout-rows", type=int, default=3_000)
    p.add_argument("--unlabeled-rows", type=int, default=4_000)
    p.add_argument(
        "--val-rows",
        type=int,
        default=2_000,
        help="validation rows (checkpoint choice), the same for every seed",
    )
    p.add_argument(
        "--train-rows", type=int, help="cap on the training rows (data.max_train_rows); default all"
    )
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument(
        "--precision", default="auto", help="train.mixed_precision of every run (no = fp32)"
    )
    p.add_argument(
        "--score-dtype",
        default="auto",
        help="weights' dtype when scoring the holdout: fp32, bf16 or auto",
    )
    p.add_argument("--perturb", default="mixed")
    p.add_argument("--rate", type=float, default=0.2)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--out", default=str(REPO / "runs" / "distill"))
    return p.parse_args(argv)


def main(argv=None) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)
    if args.teacher_split:
        if not args.teacher:
            sys.exit("distill: --teacher-split needs --teacher RUN_DIR")
        args.unlabeled = "holdout"
    data = write_data(args)
    teacher = None  # the student alone needs none
    if set(args.recipes.split(",")) - {"student"}:
        teacher = build_teacher_run(args, data)
        print(json.dumps({"teacher": teacher}), flush=True)
    rows = []
    with open(Path(args.out) / "results.jsonl", "a") as f:
        f.write(
            json.dumps({"teacher": teacher, "omp_threads": os.environ.get("OMP_NUM_THREADS")})
            + "\n"
        )
        for seed in [int(s) for s in args.seeds.split(",")]:
            for recipe in args.recipes.split(","):
                row = (
                    reused_student(args, data, seed)
                    if recipe == "student" and args.reuse_students
                    else None
                )
                if row is not None:
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    continue
                row = run_student(args, data, seed, recipe, teacher and Path(teacher["run_dir"]))
                rows.append(row)
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(json.dumps(row), flush=True)
    print(markdown(rows, teacher))


if __name__ == "__main__":
    main()
