"""Teacher sources, their checks, and the store of their log-probabilities.

A teacher (`train.teacher`) is one or several of:

- a lorafit run directory (`config.yaml` + `checkpoint-best/`), e.g. made by `lorafit teacher`;
- a folder made by `lorafit teacher --ensemble RUN...` (`teacher.json` lists the runs);
- a transformers sequence-classification model folder (`config.json`, weights, tokenizer).

Several members form an ensemble whose prediction is the MEAN OF THE MEMBERS' PROBABILITIES
(as `lorafit ensemble --method mean`), stored as its logarithm.

The teacher's task is the student's (`task`; a run's, or a model folder's `problem_type`),
and what is stored follows it: a classifier's log-probabilities; a multi-label teacher's
LOG-ODDS per label (of the members' mean probability, so one member stores its own logits);
a regression teacher's VALUE (the members' mean) in one column. A cross-fitted teacher
(`lorafit teacher --folds K`) names in teacher.json the rows each member trained on
(`trained_on`); a text is then labelled by the mean of the members that did NOT train on it
(out of fold), and by all members when every one trained on it or none did. Log-probabilities serve as
logits: softmax(log p / T) is the teacher's distribution at temperature T, and for a single
member it equals softmax(logits / T) exactly (a constant shift per row cancels).

Rows are texts, or sentence pairs (a `TextTable` with `pairs`): a member reads a pair as its
tokenizer encodes a text pair. A run member must read the same shape as the student (one text
or a pair, as its `data.text_column`); a cross-fitted member's training rows are compared
whole (both texts of a pair).

Tokenizers: each member reads the texts with ITS OWN tokenizer and max_length, and the store
holds one row of probabilities per row, so a teacher with another vocabulary than the
student's (a 12-layer MPNet teaching MiniLM) is fine. What is refused, with one line, is a
teacher that cannot serve this student: other label names or another number of labels, a
folder without a tokenizer or without a padding token, or a tokenizer that cannot read the
training texts (more than `MAX_UNKNOWN_SHARE` of their tokens become its unknown token).

The store, beside the activation cache (`train.cache_dir`, default `$LORAFIT_CACHE_DIR` or
~/.cache/lorafit/activations):

    <cache_dir>/teacher/<key>/log_probs.npy   float32 [rows, labels] (a regression: [rows, 1]), the texts' order
    <cache_dir>/teacher/<key>/meta.json       rows, labels, members (written last)

`key` = sha256 over the store format, each member's identity (the digest of its checkpoint
or model files, its base model, its max_length) and the rows themselves (`texts_digest`: both
texts of a pair, never the key of a single text). A folder is built
under a temporary name and renamed into place, so a crash never leaves a half store that
looks complete; an unchanged rerun, a resume or a sweep over the student's settings reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lorafit.caches import mark_used
from lorafit.data import TextTable
from lorafit.errors import UserError
from lorafit.model import TOKENIZER_FILES

log = logging.getLogger("lorafit")

STORE_FORMAT = 1
#: the teacher's weights' dtype (`teacher_log_probs(dtype=...)`)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: refuse a teacher tokenizer that maps more than this share of the texts' tokens to unknown
MAX_UNKNOWN_SHARE = 0.5
#: texts the tokenizer check reads
CHECK_ROWS = 256
#: files of a checkpoint or model folder that do not change what it computes
IGNORED_FILES = {"README.md", "lorafit_state.json", ".gitattributes"}


@dataclass
class TeacherMember:
    """One model of a teacher: a lorafit run or a transformers model folder."""

    kind: str  # "run" or "model"
    path: Path
    label_names: list[str] | None  # None: a model folder with generic names (LABEL_0, ...)
    num_labels: int
    max_length: int
    base: str  # the run's model.name, or the folder itself
    params: int | None = None  # total parameters, when the run recorded them
    trained_on: Path | None = None  # the file of the texts it trained on (a cross-fitted teacher)
    text_columns: list[str] | None = None  # a run's data.text_column: [text] or [first, second]
    task: str = "classification"  # classification, multi_label or regression (its outputs' meaning)

    def digest(self) -> str:
        """sha256 of the files that decide the member's outputs (weights, tokenizer, config)."""
        folder = self.path / "checkpoint-best" if self.kind == "run" else self.path
        h = hashlib.sha256(f"{self.kind}\n{self.base}\n{self.max_length}\n".encode())
        if self.kind == "run":  # the model section decides the head and pooling around the weights
            from lorafit.config import config_to_dict, load_config

            model = config_to_dict(load_config(self.path / "config.yaml"))["model"]
            h.update(json.dumps(model, sort_keys=True).encode())
        from lorafit.data import file_digest

        for f in sorted(p for p in folder.iterdir() if p.is_file() and p.name not in IGNORED_FILES):
            h.update(f"{f.name}:{file_digest(f)}\n".encode())
        if self.trained_on is not None:  # which texts it labels depends on it
            h.update(f"trained_on:{file_digest(self.trained_on)}\n".encode())
        return h.hexdigest()

    def trained_rows(self) -> set | None:
        """The rows this member trained on, when its teacher recorded them (else None): texts,
        or (text, pair) tuples for a pair run (as `row_keys`)."""
        if self.trained_on is None:
            return None
        import pandas as pd

        columns = self.text_columns or ["text"]
        try:
            frame = pd.read_json(self.trained_on, lines=True, dtype=False)
            cells = [frame[c].astype(str).tolist() for c in columns]
            return set(cells[0]) if len(cells) == 1 else set(zip(*cells))
        except (OSError, ValueError, KeyError) as e:
            raise UserError(
                f"train.teacher {self.trained_on}: cannot read the texts this member trained on ({_first(e)}); rebuild the teacher"
            ) from None


@dataclass
class Teacher:
    """The members of a teacher and what the student is compared against."""

    spec: list[str]
    members: list[TeacherMember]
    _identity: str | None = field(default=None, repr=False)

    @property
    def identity(self) -> str:
        if self._identity is None:
            h = hashlib.sha256()
            for m in self.members:
                h.update(m.digest().encode())
            self._identity = h.hexdigest()
        return self._identity

    @property
    def task(self) -> str:
        return self.members[0].task if self.members else "classification"

    @property
    def combine_rule(self) -> str:
        what = "values" if self.task == "regression" else "probabilities"
        if len(self.members) == 1:
            return "single model"
        if any(m.trained_on is not None for m in self.members):
            return f"cross-fitted: each text, the mean of the {what} of the members that did not train on it"
        return f"mean of the members' {what}"

    def describe(self) -> dict:
        """What the run directory records about its teacher."""
        return {
            "teacher": list(self.spec),
            "members": [
                {
                    "path": str(m.path),
                    "resolved": str(m.path.resolve()),
                    "kind": m.kind,
                    "base_model": m.base,
                    "max_length": m.max_length,
                    "params": m.params,
                    **({"trained_on": str(m.trained_on)} if m.trained_on is not None else {}),
                }
                for m in self.members
            ],
            "combine": self.combine_rule,
            "task": self.task,
            "identity": self.identity[:16],
            "counts_against_budget": False,
        }


# ---------------------------------------------------------------- resolving and checking


def resolve_teacher(
    spec: list[str], label_names: list[str], max_length: int, task: str = "classification"
) -> Teacher:
    """The teacher of `train.teacher`, checked against the student's task and labels (one-line refusals).

    `max_length` is the student's; a model-folder member reads at most that many tokens (and
    no more than its position table holds); a run member uses its own model.max_length.
    """
    members: list[TeacherMember] = []
    for item in spec:
        path = Path(item).expanduser()
        if (path / "teacher.json").is_file():
            runs, trained_on = _ensemble_members(path)
            for run, texts in zip(runs, trained_on):
                members.append(_member(Path(run), item, max_length))
                members[-1].trained_on = texts
        else:
            members.append(_member(path, item, max_length))
    for m in members:
        _check_task(m, task)
        _check_labels(m, label_names)
    return Teacher(list(spec), members)


def _ensemble_members(folder: Path) -> tuple[list[str], list[Path | None]]:
    """The member runs of an ensemble folder, and the file of texts each trained on (or None)."""
    try:
        spec = json.loads((folder / "teacher.json").read_text())
        members = spec["members"]
        trained_on = spec.get("trained_on") or [None] * len(members)
        if len(trained_on) != len(members):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise UserError(
            f"train.teacher {folder}: teacher.json is damaged; rebuild it with `lorafit teacher --ensemble RUN...`"
        ) from None
    if not members:
        raise UserError(
            f"train.teacher {folder}: teacher.json lists no runs; rebuild it with `lorafit teacher --ensemble RUN...`"
        )
    files = [None if t is None else folder / t for t in trained_on]
    for f in files:
        if f is not None and not f.is_file():
            raise UserError(
                f"train.teacher {folder}: {f} (the texts a member trained on) is missing; rebuild the teacher"
            )
    return [m if Path(m).is_absolute() else str(folder / m) for m in members], files


def _member(path: Path, given: str, student_max_length: int) -> TeacherMember:
    if (path / "config.yaml").is_file() and (path / "checkpoint-best").is_dir():
        return _run_member(path)
    if (path / "config.json").is_file():
        return _model_member(path, student_max_length)
    if (path / "config.yaml").is_file():
        raise UserError(
            f"train.teacher {given}: the run has no checkpoint-best/ (not finished?); finish it "
            "with `lorafit train --resume` or choose another teacher"
        )
    what = (
        "no such folder"
        if not path.exists()
        else "not a lorafit run (config.yaml + checkpoint-best/), a `lorafit teacher --ensemble` folder (teacher.json) or a transformers model folder (config.json)"
    )
    raise UserError(
        f"train.teacher {given}: {what}; build one with `lorafit teacher --config FILE`"
    )


def _run_member(path: Path) -> TeacherMember:
    from lorafit.config import load_config, text_columns

    cfg = load_config(path / "config.yaml")
    params = None
    try:
        params = json.loads((path / "summary.json").read_text())["params"]["total"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    names = list(cfg.data.label_names)
    outputs = 1 if cfg.task == "regression" else len(names)
    member = TeacherMember(
        "run", path, names, outputs, cfg.model.max_length, cfg.model.name, params
    )
    member.text_columns = text_columns(cfg.data.text_column) or None
    member.task = cfg.task
    return member


def _model_member(path: Path, student_max_length: int) -> TeacherMember:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        raise UserError(
            f"train.teacher {path}: config.json is not readable JSON; give a transformers model folder"
        ) from None
    id2label = config.get("id2label") or {}
    num = len(id2label) if id2label else int(config.get("num_labels", 2))
    names = [str(id2label[k]) for k in sorted(id2label, key=int)] if id2label else []
    generic = all(re.fullmatch(r"LABEL_\d+", n) for n in names)
    positions = int(config.get("max_position_embeddings") or 0)
    # RoBERTa-style models start positions after the padding index (1 unless the config says
    # otherwise, as transformers' defaults for these types): leave room for it
    pad = config.get("pad_token_id")
    offset = (
        (1 if pad is None else int(pad)) + 1 if config.get("model_type") in OFFSET_POSITIONS else 0
    )
    limit = positions - offset
    max_length = min(student_max_length, limit) if limit > 8 else student_max_length
    member = TeacherMember("model", path, None if generic else names, num, max_length, str(path))
    member.task = MODEL_TASKS.get(
        config.get("problem_type"), "regression" if num == 1 else "classification"
    )
    return member


#: model types whose position ids start after the padding index (RoBERTa's layout)
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "mpnet", "camembert")

#: a transformers config's `problem_type` -> the task its outputs serve (None: by num_labels,
#: as transformers decides its loss: one output is a regression)
MODEL_TASKS = {
    "regression": "regression",
    "multi_label_classification": "multi_label",
    "single_label_classification": "classification",
}


def _check_task(member: TeacherMember, task: str) -> None:
    """Refuse a teacher whose outputs mean another thing than the student's (a classifier for a
    regression, a softmax for a multi-label run, ...)."""
    if member.task != task:
        raise UserError(
            f"train.teacher {member.path}: it is a {member.task} model, the student a {task} "
            f"(task: {task}); use a teacher trained for the same task"
        )


def _check_labels(member: TeacherMember, label_names: list[str]) -> None:
    want = list(label_names)
    if member.task == "regression":  # one value whatever the column is called
        if member.num_labels != 1:
            raise UserError(
                f"train.teacher {member.path}: it has {member.num_labels} outputs; a regression teacher has one"
            )
        return
    if member.num_labels != len(want):
        raise UserError(
            f"train.teacher {member.path}: it predicts {member.num_labels} labels, the student "
            f"{len(want)} ({', '.join(want)}); use a teacher trained on the same classes"
        )
    if member.label_names is not None and member.label_names != want:
        raise UserError(
            f"train.teacher {member.path}: its labels {member.label_names} differ from the "
            f"student's data.label_names {want}; use a teacher trained on the same classes in the same order"
        )


def check_tokenizer(tokenizer, texts: list[str], where: Path) -> None:
    """Refuse a tokenizer that cannot pad, or that reads most of the texts as unknown tokens."""
    if tokenizer.pad_token_id is None:
        raise UserError(
            f"train.teacher {where}: its tokenizer has no padding token; give a teacher whose tokenizer pads"
        )
    sample = [t for t in texts[:CHECK_ROWS] if t.strip()]
    if not sample:
        return
    ids = tokenizer(sample, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    if sum(not x for x in ids) > MAX_UNKNOWN_SHARE * len(sample):
        raise UserError(
            f"train.teacher {where}: its tokenizer reads most training texts as no tokens at all (an "
            "empty or foreign vocabulary); use a teacher whose tokenizer fits the texts"
        )
    unk = tokenizer.unk_token_id
    total = sum(len(x) for x in ids)
    unknown = sum(t == unk for x in ids for t in x) if unk is not None else 0
    if total and unknown / total > MAX_UNKNOWN_SHARE:
        raise UserError(
            f"train.teacher {where}: its tokenizer reads {100 * unknown / total:.0f}% of the training "
            "texts' tokens as unknown (another vocabulary or language); use a teacher whose tokenizer fits the texts"
        )


# ---------------------------------------------------------------- computing


def load_member(member: TeacherMember, device: str, dtype: str = "fp32"):
    """(model in eval mode, tokenizer) of a member, its weights in `dtype` (fp32 or bf16)."""
    if member.kind == "run":
        from lorafit.predict import load_run_model

        model, tokenizer, _ = load_run_model(member.path, device, dtype)
        return model, tokenizer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not any((member.path / name).is_file() for name in TOKENIZER_FILES):
        # transformers would otherwise build an empty tokenizer that reads every text as nothing
        raise UserError(
            f"train.teacher {member.path}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); "
            "save the teacher's tokenizer into the folder (tokenizer.save_pretrained)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(member.path)
    except (OSError, ValueError, TypeError) as e:
        raise UserError(
            f"train.teacher {member.path}: cannot load its tokenizer ({_first(e)}); the folder needs the tokenizer files"
        ) from None
    try:
        model = AutoModelForSequenceClassification.from_pretrained(member.path, dtype=DTYPES[dtype])
    except (OSError, ValueError) as e:
        raise UserError(
            f"train.teacher {member.path}: cannot load it as a sequence classifier ({_first(e)})"
        ) from None
    return model.to(device).eval(), tokenizer


def _first(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def member_log_probs(
    member: TeacherMember,
    rows: TextTable | list[str],
    device: str,
    batch_size: int,
    dtype: str = "fp32",
) -> np.ndarray:
    """One member's outputs for `rows`, as the store holds them (`as_stored`): its own tokenizer
    and max_length; a pair encoded as its tokenizer encodes a text pair."""
    from lorafit.data import encode
    from lorafit.predict import infer_logits

    rows = as_rows(rows)
    check_shape(member, rows)
    model, tokenizer = load_member(member, device, dtype)
    check_tokenizer(
        tokenizer, rows.texts[:CHECK_ROWS] + (rows.pairs or [])[:CHECK_ROWS], member.path
    )
    table = TextTable(
        list(rows.texts), None, str(member.path), None if rows.pairs is None else list(rows.pairs)
    )
    encoded = encode(tokenizer, table, member.max_length)
    logits = infer_logits(model, encoded, batch_size, tokenizer.pad_token_id, device)
    return as_stored(logits, member.task)


def as_stored(logits: np.ndarray, task: str = "classification") -> np.ndarray:
    """A model's raw outputs as the store holds them: a classifier's log-probabilities; a
    multi-label model's log-odds and a regression's values as they are."""
    if task != "classification":
        return np.asarray(logits, dtype=np.float32)
    return torch.log_softmax(torch.from_numpy(logits).double(), dim=-1).float().numpy()


def combine(
    log_probs: list[np.ndarray], use: np.ndarray | None = None, task: str = "classification"
) -> np.ndarray:
    """The members' stored outputs combined (one member: itself): the log of the mean of their
    probabilities (classification); the log-odds of the mean of their probabilities per label
    (multi-label); the mean of their values (regression).

    `use` [members, rows] (bool): which members count for each row (out of fold); a row no
    member counts for takes them all.
    """
    if len(log_probs) == 1:
        return log_probs[0]
    stack = torch.from_numpy(np.stack(log_probs)).double()
    shape = stack.shape[:2]
    in_use = (
        torch.ones(shape, dtype=torch.bool)
        if use is None
        else torch.from_numpy(np.asarray(use, dtype=bool)).clone()
    )
    in_use[:, ~in_use.any(dim=0)] = True
    counted = torch.log(in_use.sum(dim=0).double())[:, None]
    if task == "regression":
        return (
            ((stack * in_use[:, :, None]).sum(0) / in_use.sum(0).double()[:, None]).float().numpy()
        )

    def log_mean(log_values):  # log of the mean over the counted members, from logs
        return (
            torch.logsumexp(log_values.masked_fill(~in_use[:, :, None], float("-inf")), dim=0)
            - counted
        )

    if task == "multi_label":  # log mean p - log mean (1 - p), each from log-sigmoids
        return (
            (
                log_mean(torch.nn.functional.logsigmoid(stack))
                - log_mean(torch.nn.functional.logsigmoid(-stack))
            )
            .float()
            .numpy()
        )
    return log_mean(stack).float().numpy()


def out_of_fold(teacher: Teacher, rows: TextTable | list[str]) -> np.ndarray | None:
    """[members, rows]: True where the member did not train on the row (None: no member says)."""
    if all(m.trained_on is None for m in teacher.members):
        return None
    keys = row_keys(as_rows(rows))
    use = np.ones((len(teacher.members), len(keys)), dtype=bool)
    for i, m in enumerate(teacher.members):
        seen = m.trained_rows()
        if seen is not None:
            use[i] = [k not in seen for k in keys]
    return use


def as_rows(rows: TextTable | list[str]) -> TextTable:
    """A `TextTable` of `rows`: a table as it is (pairs kept), a list of single texts wrapped."""
    return rows if isinstance(rows, TextTable) else TextTable(list(rows), None, "texts")


def row_keys(rows: TextTable) -> list:
    """What identifies each row: its text, or the (text, pair) tuple of a sentence pair."""
    return list(rows.texts) if rows.pairs is None else list(zip(rows.texts, rows.pairs))


def check_shape(member: TeacherMember, rows: TextTable) -> None:
    """Refuse a run member that reads single texts for sentence pairs, or the reverse."""
    if member.kind != "run" or member.text_columns is None:
        return
    want, got = len(member.text_columns), 1 if rows.pairs is None else 2
    if want != got:
        shape = {1: "single texts", 2: "sentence pairs"}
        raise UserError(
            f"train.teacher {member.path}: it was trained on {shape[want]}, the student reads {shape[got]}; "
            "use a teacher trained with the same kind of data.text_column"
        )


# ---------------------------------------------------------------- the store


def texts_digest(texts: list[str], pairs: list[str] | None = None) -> str:
    """sha256 of the rows: each text length-prefixed; sentence pairs behind their own tag, so a
    pair (a, b) never shares a digest with the single text a, nor with any list of single texts."""
    h = hashlib.sha256()
    if pairs is not None:
        if len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        h.update(
            b"pairs\0"
        )  # single texts start with a length: these bytes would mean a 2^48-byte text
    for t in texts if pairs is None else (t for row in zip(texts, pairs) for t in row):
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def store_key(teacher: Teacher, rows: TextTable | list[str], dtype: str = "fp32") -> str:
    rows = as_rows(rows)
    lengths = [m.max_length for m in teacher.members]
    fields = {
        "format": STORE_FORMAT,
        "teacher": teacher.identity,
        "max_length": lengths,
        "dtype": dtype,
    }
    if teacher.task != "classification":  # what the numbers mean; a classifier's key is as it was
        fields["task"] = teacher.task
    head = json.dumps(fields)
    return hashlib.sha256((head + texts_digest(rows.texts, rows.pairs)).encode()).hexdigest()[:32]


def store_path(
    teacher: Teacher, rows: TextTable | list[str], cache_dir: Path, dtype: str = "fp32"
) -> Path:
    return Path(cache_dir) / "teacher" / store_key(teacher, rows, dtype)


def teacher_log_probs(
    teacher: Teacher,
    rows: TextTable | list[str],
    cache_dir: Path,
    device: str = "cpu",
    batch_size: int = 64,
    accelerator=None,
    dtype: str = "fp32",
) -> np.ndarray:
    """The teacher's log-probabilities for `rows` (a multi-label teacher's log-odds, a regression
    teacher's values: `as_stored`): from the store, or computed once and stored.

    `rows` is a list of texts, or a `TextTable` whose sentence pairs (`pairs`) are read too.

    `dtype` is the teacher's weights' (fp32, or bf16: a run under bf16 mixed precision, about
    2.5x faster on a CPU with native bf16); it is part of the store's key. With several
    processes the main one computes while the others wait, then all read.
    """
    rows = as_rows(rows)
    path = store_path(teacher, rows, cache_dir, dtype)
    main = accelerator is None or accelerator.is_local_main_process
    if main and not (path / "meta.json").is_file():
        _build(teacher, rows, path, device, batch_size, dtype)
    else:
        log.info("teacher logits: reusing %s (%d rows)", path, len(rows))
        mark_used(path)  # `lorafit cache` shows the last use
    if accelerator is not None:
        accelerator.wait_for_everyone()
    out = np.load(path / "log_probs.npy")
    if out.shape[0] != len(rows):
        raise UserError(
            f"{path}: holds {out.shape[0]} rows, expected {len(rows)}; delete the folder and run again"
        )
    return out


def _build(
    teacher: Teacher, rows: TextTable, path: Path, device: str, batch_size: int, dtype: str = "fp32"
) -> None:
    log.info(
        "teacher logits: computing %d rows with %d model(s) in %s into %s",
        len(rows),
        len(teacher.members),
        dtype,
        path,
    )
    # the teacher's loading (a head's initialisation) must not move the student's random streams
    with torch.random.fork_rng(devices=[]):
        parts = [
            member_log_probs(m, rows, device, batch_size, dtype=dtype) for m in teacher.members
        ]
    use = out_of_fold(teacher, rows)
    if use is not None:
        held = int((~use).any(axis=0).sum())
        log.info(
            "teacher logits: cross-fitted, %d of %d rows labelled out of fold (by the members that did not train on them), "
            "%d by all %d members",
            held,
            len(rows),
            len(rows) - held,
            len(teacher.members),
        )
    values = combine(parts, use, teacher.task).astype(np.float32)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        np.save(partial / "log_probs.npy", values)
        meta = {
            "format": STORE_FORMAT,
            "rows": len(rows),
            "labels": int(values.shape[1]),
            "dtype": dtype,
            **teacher.describe(),
        }
        (partial / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(partial, path)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        if (path / "meta.json").is_file():  # another process finished the same store first
            return
        raise UserError(
            f"{path}: cannot write the teacher's logits ({e.strerror or e}); free disk space or set train.cache_dir"
        ) from None
