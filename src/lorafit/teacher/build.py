"""`lorafit teacher`: a teacher for `train.teacher` in one command.

    lorafit teacher --config configs/agnews_teacher.yaml [key=value ...]   # a teacher run
    lorafit teacher --ensemble runs/a runs/b runs/c [--output DIR]          # an ensemble folder
    lorafit teacher --config configs/agnews_best.yaml --folds 5 [--output DIR]  # cross-fitted

The first is a normal `lorafit train` run whose budget is lifted (a teacher is not
submitted, so its parameters do not count): full fine-tuning (`lora.mode=full`) or a wide
LoRA, on the same labelled rows as the student. Its run directory is a teacher as it is;
`<run.dir>/<run.name>` (e.g. runs/agnews-teacher) is pointed at the newest one.
The second writes a folder holding `teacher.json` (the member runs, absolute paths) and a
README; as `train.teacher` it means the mean of the members' probabilities.

The third, a CROSS-FITTED teacher: the config's training rows (after its validation split
and data.max_train_rows) are cut into K stratified, seeded folds (by class; a regression by
quantile bins of its values, a multi-label run by each row's rarest label, as its validation
split), and K members train, member k on every fold but k, all choosing their checkpoint on
the config's validation rows. The folder holds the members' runs, their training files
(`data/train-<k>.jsonl`, with the config's text column(s) and label column, labels as class
names, values as numbers, label sets as lists of names; members read them with the config's
settled columns and labels, so a sentence-pair config gives pair members) and a
teacher.json that names, per member, the rows it trained on: a text is then labelled by the
members that did NOT train on it (out of fold), so the student's training rows get soft
labels from a model that never saw their labels; texts no member trained on (validation,
unlabelled, test texts) get the mean of all K. An interrupted build resumes: the same
command with the same --output reuses the finished members and finishes an interrupted one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from lorafit.errors import UserError

log = logging.getLogger("lorafit")

#: the budget a teacher run gets: no model lorafit trains comes near it
TEACHER_BUDGET = 10**12


def build_teacher(
    config=None,
    overrides=(),
    *,
    ensemble: list[str] | None = None,
    folds: int | None = None,
    output: str | Path | None = None,
) -> Path:
    """Build a teacher; return the folder to give as `train.teacher`.

    Without `ensemble` or `folds`: train `config` + `overrides` with the budget lifted
    (run.name defaults to 'teacher'). With `ensemble` (two or more finished run directories
    trained on the same classes): write an ensemble folder at `output` (default
    runs/teacher-ensemble-<timestamp>); no `config` or overrides then. With `folds=K`
    (2 or more): a cross-fitted teacher of K runs of `config` at `output` (default
    <run.dir>/<run.name>-folds-<timestamp>), each text labelled by the members that did not
    train on it; the same `output` again resumes an interrupted build.
    """
    if ensemble:
        if config is not None or overrides or folds:
            raise UserError(
                "lorafit teacher --ensemble: takes run directories only; drop --config, --folds and the key=value overrides"
            )
        return write_ensemble(ensemble, output)
    from lorafit.config import as_config
    from lorafit.train import train

    cfg = as_config(config, overrides)
    lifted = [f"budget={TEACHER_BUDGET}"] + (["run.name=teacher"] if cfg.run.name == "run" else [])
    cfg = as_config(cfg, lifted)
    if folds is not None:
        return build_cross_fitted(cfg, folds, output)
    if output is not None:
        raise UserError(
            "lorafit teacher --output: only with --ensemble or --folds; a teacher run goes to run.dir"
        )
    log.info("teacher: training %s (%s) with the budget lifted", cfg.model.name, cfg.lora.mode)
    run_dir = train(cfg)
    link = point_link(run_dir, Path(cfg.run.dir) / cfg.run.name)
    log.info("teacher ready: train.teacher=%s", link or run_dir)
    return run_dir


def point_link(run_dir: Path, link: Path) -> Path | None:
    """`<run.dir>/<run.name>` -> the newest teacher run, so a config can name it (as runs/latest).

    A real file or folder of that name is left alone (None is returned then).
    """
    tmp = link.with_name(f".{link.name}-{run_dir.name}")
    try:
        if link.exists() and not link.is_symlink():
            return None
        tmp.symlink_to(Path(run_dir).name)
        tmp.replace(link)
        return link
    except OSError:
        return None


def write_ensemble(runs: list[str], output: str | Path | None = None) -> Path:
    """An ensemble teacher folder: teacher.json listing `runs` (checked) and a README."""
    from lorafit.rundir import create_run_dir, write_json
    from lorafit.teacher.logits import _check_labels, _check_task, _run_member

    paths = [Path(r).expanduser().resolve() for r in runs]
    if len(paths) < 2 or len(set(paths)) != len(paths):
        raise UserError("lorafit teacher --ensemble: give two or more different run directories")
    for p in paths:
        if not ((p / "config.yaml").is_file() and (p / "checkpoint-best").is_dir()):
            raise UserError(
                f"lorafit teacher --ensemble: {p} is not a finished lorafit run (config.yaml + checkpoint-best/)"
            )
    members = [_run_member(p) for p in paths]
    names = members[0].label_names
    assert names is not None  # a run member's are its config's data.label_names
    for m in members[1:]:
        _check_task(m, members[0].task)
        _check_labels(m, names)
    if output is None:
        folder = create_run_dir("runs", "teacher-ensemble")
    else:
        folder = Path(output)
        if folder.exists():
            raise UserError(f"--output {folder}: already exists; choose a new folder")
        folder.mkdir(parents=True)
    write_json(
        folder / "teacher.json",
        {
            "members": [str(p) for p in paths],
            "label_names": members[0].label_names,
            "combine": "mean of the members' probabilities",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    (folder / "README.md").write_text(
        "# An ensemble teacher (lorafit teacher --ensemble)\n\nUse it as `train.teacher="
        f"{folder}`: the mean of the probabilities of\n\n" + "".join(f"- `{p}`\n" for p in paths)
    )
    return folder


def build_cross_fitted(cfg, folds: int, output: str | Path | None = None) -> Path:
    """K runs of `cfg`, member k trained on every fold of its training rows but k (see above)."""
    from sklearn.model_selection import StratifiedKFold

    from lorafit.config import as_config, config_to_dict
    from lorafit.data import load_splits
    from lorafit.rundir import write_atomic, write_json
    from lorafit.teacher.logits import texts_digest
    from lorafit.train import train

    if not isinstance(folds, int) or folds < 2:
        raise UserError(f"lorafit teacher --folds {folds}: give 2 or more folds (5 is usual)")
    if cfg.train.teacher or cfg.data.unlabeled:
        raise UserError(
            "lorafit teacher --folds: its members train on labels only; set train.teacher=null and data.unlabeled=null"
        )
    # the rows the student will see as training rows: the config's split, before augmentation
    settled = as_config(cfg, ["data.augment=null", "data.test=null"]).data
    splits = load_splits(settled, cfg.train.seed)  # settles its columns and classes
    train_rows, validation = splits["train"], splits["validation"]
    if len(train_rows) < 2 * folds:
        raise UserError(
            f"{cfg.data.train}: {len(train_rows)} training rows cannot make --folds {folds}; use fewer folds or more rows"
        )
    assert train_rows.labels is not None  # the training split is labelled
    strata = fold_strata(train_rows.labels, cfg.task, folds)
    if cfg.task == "classification":
        counts = np.bincount(strata)
        if counts[counts > 0].min() < folds:
            raise UserError(
                f"{cfg.data.train}: a class has only {counts[counts > 0].min()} training rows, fewer than "
                f"--folds {folds}; use fewer folds or more rows"
            )
    plan = {
        "folds": folds,
        "seed": cfg.train.seed,
        "config": config_to_dict(cfg),
        "texts": texts_digest(train_rows.texts, train_rows.pairs),
        "rows": len(train_rows),
    }
    folder = _folds_folder(cfg, output, plan)
    data = folder / "data"
    data.mkdir(exist_ok=True)
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=cfg.train.seed)
    files = [data / f"train-{k}.jsonl" for k in range(folds)]
    val_file = data / "validation.jsonl"
    tables = [train_rows.subset(np.sort(keep)) for keep, _ in split.split(train_rows.texts, strata)]
    for path, table in [(val_file, validation), *zip(files, tables)]:
        if not path.exists():  # a resumed build keeps the files its members trained on
            write_atomic(
                path,
                _rows_frame(table, settled).to_json(
                    orient="records", lines=True, force_ascii=False
                ),
            )
    members = []
    for k in range(folds):
        member_cfg = as_config(
            cfg,
            [
                f"data.train={files[k]}",
                f"data.validation={val_file}",
                "data.max_train_rows=null",
                f"run.dir={folder}",
                f"run.name=fold-{k}",
            ],
        )
        member_cfg.data = _read_as_written(member_cfg.data, settled)
        done, interrupted = _fold_runs(folder, k)
        if done:
            log.info("teacher fold %d/%d: reusing %s", k + 1, folds, done)
            members.append(done)
            continue
        log.info(
            "teacher fold %d/%d: training on %d of %d rows",
            k + 1,
            folds,
            len(tables[k]),
            len(train_rows),
        )
        members.append(train(resume=interrupted) if interrupted else train(member_cfg))
    write_json(
        folder / "teacher.json",
        {
            "members": [str(Path(m).resolve()) for m in members],
            "trained_on": [str(f.relative_to(folder)) for f in files],
            "label_names": list(cfg.data.label_names),
            "task": cfg.task,
            "combine": f"each text: the mean of the {'values' if cfg.task == 'regression' else 'probabilities'} of the members that did not train on it (all members for texts none trained on)",
            "folds": folds,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    (folder / "README.md").write_text(
        f"# A cross-fitted teacher (lorafit teacher --folds {folds})\n\nUse it as `train.teacher={folder}`. "
        f"Member k trained on data/train-k.jsonl ({len(train_rows)} rows less fold k) and chose its checkpoint "
        "on data/validation.jsonl; a text is labelled by the members that did not train on it.\n\n"
        + "".join(f"- `{m}`\n" for m in members)
    )
    point_link(folder, Path(cfg.run.dir) / cfg.run.name)
    log.info("teacher ready: train.teacher=%s", folder)
    return folder


def fold_strata(labels: np.ndarray, task: str, folds: int) -> np.ndarray:
    """What the K folds are stratified by: the class; a regression's quantile bin of its value,
    a multi-label row's rarest label (as `data.tables` stratifies a split), groups smaller than
    K merged; one group (plain seeded folds) when neither can be made."""
    from lorafit.data.tables import rarest_label_strata, value_strata

    if task == "classification":
        return np.asarray(labels)
    strata = (
        value_strata(labels, len(labels) // folds)
        if task == "regression"
        else rarest_label_strata(labels)
    )
    if strata is None:
        return np.zeros(len(labels), dtype=np.int64)
    sizes = np.bincount(strata)
    return np.where(sizes[strata] >= folds, strata, sizes.size)  # the small groups: one more group


#: the label column of a member's file when the config reads one 0/1 column per label
SETS_COLUMN = "labels"


def _rows_frame(table, data):
    """A member's rows under the config's settled text column(s) and label column: labels as
    their class names, a regression's values as numbers, a multi-label row as the list of its
    labels' names (read back the same whatever the label format)."""
    import pandas as pd

    from lorafit.config import text_columns

    columns = text_columns(data.text_column)
    cells = {columns[0]: table.texts}
    if table.pairs is not None:
        cells[columns[1]] = table.pairs
    task = data._task
    if task == "regression":
        cells[data.label_column] = [float(v) for v in table.labels]
    elif task == "multi_label":
        names = list(data.label_names)
        cells[data.label_column or SETS_COLUMN] = [
            [names[k] for k in np.flatnonzero(row > 0.5)] for row in table.labels
        ]
    else:
        cells[data.label_column] = [data.label_names[i] for i in table.labels]
    return pd.DataFrame(cells)


def _read_as_written(member, data):
    """A member's data config reading the files `_rows_frame` wrote: the settled columns and
    labels, UTF-8 (a multi-label config's 0/1 columns written as one column of label lists)."""
    import dataclasses

    sets = data._task == "multi_label" and data.label_columns is not None
    out = dataclasses.replace(
        member,
        text_column=data.text_column,
        label_column=SETS_COLUMN if sets else data.label_column,
        label_columns=None,
        label_names=list(data.label_names),
        label_format=data.label_format,
        encoding="utf-8",
    )
    out._task = (
        data._task
    )  # an instance attribute (Config sets it), not a field: replace() drops it
    return out


def _folds_folder(cfg, output, plan: dict) -> Path:
    """A new folder, or `output` again when it holds the same plan (resume)."""
    import json

    from lorafit.rundir import create_run_dir, write_json

    if output is None:
        folder = create_run_dir(cfg.run.dir, f"{cfg.run.name}-folds")
    else:
        folder = Path(output)
        if folder.exists():
            try:
                same = json.loads((folder / "plan.json").read_text()) == json.loads(
                    json.dumps(plan, default=str)
                )
            except (OSError, ValueError):
                same = False
            if not same:
                raise UserError(
                    f"--output {folder}: already exists and is not an unfinished build of this teacher "
                    "(same config, rows and --folds); choose a new folder"
                )
            log.info("teacher: resuming the cross-fitted build in %s", folder)
            return folder
        folder.mkdir(parents=True)
    write_json(folder / "plan.json", plan)
    return folder


def _fold_runs(folder: Path, k: int) -> tuple[Path | None, Path | None]:
    """(finished run, interrupted run) of member k in `folder`, the newest of each kind."""
    runs = sorted(folder.glob(f"fold-{k}-*"))
    done = [r for r in runs if (r / "summary.json").is_file() and (r / "checkpoint-best").is_dir()]
    resumable = [
        r for r in runs if (r / "checkpoints").is_dir() and not (r / "summary.json").exists()
    ]
    return (done[-1] if done else None), (resumable[-1] if resumable and not done else None)
