"""`lorafit teacher`: a teacher for `train.teacher` in one command.

    lorafit teacher --config configs/agnews_teacher.yaml [key=value ...]   # a teacher run
    lorafit teacher --ensemble runs/a runs/b runs/c [--output DIR]          # an ensemble folder

The first is a normal `lorafit train` run whose budget is lifted (a teacher is not
submitted, so its parameters do not count): full fine-tuning (`lora.mode=full`) or a wide
LoRA, on the same labelled rows as the student. Its run directory is a teacher as it is;
`<run.dir>/<run.name>` (e.g. runs/agnews-teacher) is pointed at the newest one.
The second writes a folder holding `teacher.json` (the member runs, absolute paths) and a
README; as `train.teacher` it means the mean of the members' probabilities.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lorafit.errors import UserError

log = logging.getLogger("lorafit")

#: the budget a teacher run gets: no model lorafit trains comes near it
TEACHER_BUDGET = 10**12


def build_teacher(
    config=None, overrides=(), *, ensemble: list[str] | None = None, output: str | Path | None = None
) -> Path:
    """Build a teacher; return the folder to give as `train.teacher`.

    Without `ensemble`: train `config` + `overrides` with the budget lifted (run.name
    defaults to 'teacher'). With `ensemble` (two or more finished run directories trained on
    the same classes): write an ensemble folder at `output` (default
    runs/teacher-ensemble-<timestamp>); no `config` or overrides then.
    """
    if ensemble:
        if config is not None or overrides:
            raise UserError("lorafit teacher --ensemble: takes run directories only; drop --config and the key=value overrides")
        return write_ensemble(ensemble, output)
    from lorafit.config import as_config
    from lorafit.train import train

    cfg = as_config(config, overrides)
    lifted = [f"budget={TEACHER_BUDGET}"] + (["run.name=teacher"] if cfg.run.name == "run" else [])
    cfg = as_config(cfg, lifted)
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
    from lorafit.teacher.logits import _check_labels, _run_member

    paths = [Path(r).expanduser().resolve() for r in runs]
    if len(paths) < 2 or len(set(paths)) != len(paths):
        raise UserError("lorafit teacher --ensemble: give two or more different run directories")
    for p in paths:
        if not ((p / "config.yaml").is_file() and (p / "checkpoint-best").is_dir()):
            raise UserError(f"lorafit teacher --ensemble: {p} is not a finished lorafit run (config.yaml + checkpoint-best/)")
    members = [_run_member(p) for p in paths]
    for m in members[1:]:
        _check_labels(m, members[0].label_names)
    if output is None:
        folder = create_run_dir("runs", "teacher-ensemble")
    else:
        folder = Path(output)
        if folder.exists():
            raise UserError(f"--output {folder}: already exists; choose a new folder")
        folder.mkdir(parents=True)
    write_json(folder / "teacher.json", {
        "members": [str(p) for p in paths],
        "label_names": members[0].label_names,
        "combine": "mean of the members' probabilities",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    (folder / "README.md").write_text(
        "# An ensemble teacher (lorafit teacher --ensemble)\n\nUse it as `train.teacher="
        f"{folder}`: the mean of the probabilities of\n\n" + "".join(f"- `{p}`\n" for p in paths)
    )
    return folder
