"""Malformed inputs through the real CLI: exit code 2, one line naming the file/row/key and
the fix, no traceback (unless --debug), and no output file created.

Cases: every row of DATA_FILES and CONFIGS, plus the lists in the tests below (69 inputs).
"""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lorafit.cli import main
from lorafit.errors import UserError

from .conftest import ROOT

# ------------------------------------------------------------------ inputs


class _RunsCode:
    """Unpickling this would run `touch <marker>` (the classic __reduce__ attack)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _dataset_pickle(columns: dict) -> bytes:
    from datasets import Dataset

    return pickle.dumps(Dataset.from_dict(columns))


LATIN1 = "text,label\ncaf\xe9 au lait,1\n".encode("latin-1")
BINARY = bytes(range(256)) * 8

# name: (file name, content or a function of tmp_path giving it, fragments the message must hold)
DATA_FILES = {
    "missing label column": (
        "nolabel.csv",
        "text\nhello\n",
        ["nolabel.csv", "cannot tell the label column", "data.label_column"],
    ),
    "missing text column": (
        "notext.csv",
        "body,label\nhello,1\n",
        ["notext.csv", "cannot tell the text column", "data.text_column"],
    ),
    "extra field in a row": (
        "extra.csv",
        "text,label\nhello,1\nworld,2,3\n",
        ["extra.csv", "line 3 has 3 fields", "double quotes"],
    ),
    "extra unnamed column": (
        "unnamed.csv",
        "text,label,\nhello,1,\n",
        ["unnamed.csv", "header column is empty"],
    ),
    "missing field in a row": (
        "fewer.csv",
        "text,label\nhello,1\nworld\n",
        ["fewer.csv", "row 2: the label is empty"],
    ),
    "label out of range": (
        "range.csv",
        "text,label\nhello,1\nworld,7\n",
        ["range.csv", "row 2: label '7' is out of range 0-3", "data.label_names"],
    ),
    "negative label": (
        "negative.csv",
        "text,label\nhello,-1\n",
        ["negative.csv", "row 1: label '-1' is out of range"],
    ),
    "label not a class": (
        "word.csv",
        "text,label\nhello,Politics\n",
        [
            "word.csv",
            "row 1: label 'Politics' is not one of the classes (World, Sports, Business, Sci/Tech)",
        ],
    ),
    "fractional label": (
        "frac.csv",
        "text,label\nhello,1.5\n",
        ["frac.csv", "row 1: label '1.5' is not one of the classes"],
    ),
    "NaN label": (
        "nanlabel.csv",
        "text,label\nhello,\n",
        ["nanlabel.csv", "row 1: the label is empty"],
    ),
    "empty text": (
        "empty_text.csv",
        "text,label\nhello,1\n,2\n",
        ["empty_text.csv", "row 2: the text is empty", "fill it in"],
    ),
    "blank text": (
        "blank.csv",
        "text,label\nhello,1\n   ,2\n",
        ["blank.csv", "row 2: the text is empty"],
    ),
    "null text in jsonl": (
        "null.jsonl",
        '{"text": null, "label": 1}\n',
        ["null.jsonl", "row 1: the text is empty"],
    ),
    "not UTF-8": (
        "latin1.csv",
        LATIN1,
        ["latin1.csv", "line 2 (byte offset 14): byte 0xe9 is not utf-8 text", "data.encoding"],
    ),
    "binary junk": ("junk.csv", BINARY, ["junk.csv", "is not utf-8 text"]),
    "empty file": ("empty.csv", "", ["empty.csv", "the file is empty"]),
    "header only": ("header.csv", "text,label\n", ["header.csv", "has no rows"]),
    "unclosed quote": (
        "quote.csv",
        'text,label\n"hello, 1\nworld,2\n',
        ["quote.csv", "never closed", '("")'],
    ),
    "unquoted embedded newline": (
        "newline.csv",
        "text,label\nfirst line\nsecond line,1\n",
        ["newline.csv", "row 1: the label is empty"],
    ),
    "original AG class 5": (
        "ag.csv",
        '"5","title","description"\n',
        ["ag.csv", "row 1: class '5' is not 1-4"],
    ),
    "malformed jsonl line": (
        "bad.jsonl",
        '{"text": "a", "label": 1}\n{"text": "b", "label"\n',
        ["bad.jsonl", "line 2 is not a JSON object"],
    ),
    "garbage parquet": (
        "garbage.parquet",
        b"PAR0 not a parquet file",
        ["garbage.parquet", "cannot read as parquet"],
    ),
    "spreadsheet": (
        "notes.xlsx",
        b"PK\x03\x04 a zipped workbook",
        ["notes.xlsx", "a spreadsheet", "save it as .csv"],
    ),
    "pickle of the wrong content": (
        "dict.pkl",
        pickle.dumps({"text": ["a"]}),
        ["dict.pkl", "holds a dict, expected a datasets.Dataset"],
    ),
    "pickle that is garbage": (
        "garbage.pkl",
        b"\x80\x05garbage",
        ["garbage.pkl", "only a pickled datasets.Dataset is accepted"],
    ),
    "truncated pickle": (
        "cut.pkl",
        lambda tmp: _dataset_pickle({"text": ["a", "b"], "label": [0, 1]})[:60],
        ["cut.pkl"],
    ),
    "pickle without a text column": (
        "body.pkl",
        lambda tmp: _dataset_pickle({"body": ["a"], "label": [0]}),
        ["body.pkl", "cannot tell the text column", "['body', 'label']", "data.text_column"],
    ),
    "pickle that runs code": (
        "evil.pkl",
        lambda tmp: pickle.dumps(_RunsCode(tmp / "pwned")),
        ["evil.pkl", "refused to load posix.system", "nothing was run"],
    ),
}

# name: (extra CLI arguments (in front of the base overrides), YAML file text or None, fragments)
CONFIGS = {
    "unknown key": (["train.lrr=1"], None, ["unknown key 'train.lrr'", "lorafit train --help"]),
    "wrong type": (["train.batch_size=abc"], None, ["key 'train.batch_size'", "'abc'"]),
    "bad value": (["train.lr=-1"], None, ["train.lr: must be > 0"]),
    "negative checkpoint_every": (
        ["train.checkpoint_every=-1"],
        None,
        ["train.checkpoint_every: must be >= 0"],
    ),
    "keep_last zero": (["train.keep_last=0"], None, ["train.keep_last: must be >= 1"]),
    "override without =": (["train.lr"], None, ["override 'train.lr' is not key=value"]),
    "YAML unknown key": ([], "train:\n  lrr: 1\n", ["bad.yaml", "unknown key 'train.lrr'"]),
    "YAML wrong type": ([], "train:\n  epochs: many\n", ["bad.yaml", "key 'train.epochs'"]),
    "YAML syntax error": (
        [],
        "train:\n  lr: [1\n",
        ["bad.yaml", "not valid YAML (line 3", "fix the syntax"],
    ),
    "YAML list": ([], "- 1\n- 2\n", ["bad.yaml", "holds a list, not a mapping"]),
    "missing config file": (["--config", "nope.yaml"], None, ["nope.yaml not found", "--config"]),
    "layers out of range": (
        ["lora.layers=5"],
        None,
        ["lora.layers: layer 5 is out of range; the model has layers 0-1"],
    ),
    "section layers out of range": (
        ["lora.sections=[{layers: '1-3', r: 2}]"],
        None,
        ["lora.sections[0].layers: layer 3 is out of range"],
    ),
    "target modules the model lacks": (
        ["lora.target_modules=[nope]"],
        None,
        ["lora.target_modules", "nope"],
    ),
    "over budget": (["budget=100"], None, ["budget:", "exceed the budget of 100", "lower lora.r"]),
    "missing model folder": (
        ["model.name=/no/such/model"],
        None,
        ["model.name '/no/such/model': no such folder"],
    ),
    "one class": (
        ["data.label_names=[only]"],
        None,
        ["data.label_names: needs at least 2 classes"],
    ),
}


# ------------------------------------------------------------------ checks


def assert_fails_cleanly(argv: list[str], fragments: list[str], capsys) -> str:
    """Exit 2 and exactly one stderr line `lorafit: error: ...` holding every fragment."""
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("lorafit: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def tree(path: Path) -> dict:
    """Every file under `path` with its size and modification time (to prove nothing changed)."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


@pytest.fixture
def base(tiny_model, small_csv, tmp_path) -> list[str]:
    return [
        f"model.name={tiny_model}",
        f"data.train={small_csv}",
        "data.test=null",
        "data.val_size=40",
        "data.label_names=[World,Sports,Business,Sci/Tech]",
        "train.max_steps=2",
        "log.progress=false",
        f"run.dir={tmp_path / 'runs'}",
    ]


@pytest.fixture(scope="module")
def finished_run(tiny_model, small_csv, tmp_path_factory) -> Path:
    from lorafit.train import train

    parent = tmp_path_factory.mktemp("finished")
    return train(
        None,
        [
            f"model.name={tiny_model}",
            f"data.train={small_csv}",
            "data.test=null",
            "data.val_size=40",
            "model.max_length=64",
            "train.max_steps=4",
            "train.eval_every=2",
            "log.progress=false",
            f"run.dir={parent}",
        ],
    )


# ------------------------------------------------------------------ training inputs


@pytest.mark.parametrize("name", DATA_FILES)
def test_bad_training_file(name, base, tmp_path, capsys):
    filename, content, fragments = DATA_FILES[name]
    content = content(tmp_path) if callable(content) else content
    path = tmp_path / filename
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    assert_fails_cleanly(["train", *base, f"data.train={path}"], fragments, capsys)
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "pwned").exists()  # the malicious pickle ran nothing


@pytest.mark.parametrize("name", CONFIGS)
def test_bad_config(name, base, tmp_path, capsys, monkeypatch):
    extra, yaml_text, fragments = CONFIGS[name]
    monkeypatch.chdir(tmp_path)
    if yaml_text is not None:
        (tmp_path / "bad.yaml").write_text(yaml_text)
        extra = ["--config", str(tmp_path / "bad.yaml"), *extra]
    options = [a for a in extra if a.startswith("--") or a.endswith(".yaml")]
    assert_fails_cleanly(
        ["train", *options, *base, *[a for a in extra if a not in options]], fragments, capsys
    )
    assert not (tmp_path / "runs").exists()


def test_bad_training_folders(base, tmp_path, capsys):
    """A file where the run folder should go, an unwritable place, a missing data folder."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_fails_cleanly(
        ["train", *base, f"run.dir={blocker}"],
        [str(blocker), "cannot create a run directory", "writable run.dir"],
        capsys,
    )
    assert_fails_cleanly(
        ["train", *base, "run.dir=/proc/lorafit-runs"],
        ["run.dir /proc/lorafit-runs", "writable run.dir"],
        capsys,
    )
    assert_fails_cleanly(
        ["train", *base, f"data.train={tmp_path}"], [str(tmp_path), "is a folder"], capsys
    )
    assert_fails_cleanly(
        ["train", *base, f"data.train={tmp_path / 'gone.csv'}"],
        ["gone.csv: file not found"],
        capsys,
    )
    assert blocker.read_text() == "not a folder" and not (tmp_path / "runs").exists()


def test_bad_resume(finished_run, tmp_path, capsys):
    assert_fails_cleanly(
        ["train", "--resume", str(finished_run), "train.lr=1"],
        ["--resume", "drop --config and the key=value overrides"],
        capsys,
    )
    assert_fails_cleanly(
        ["train", "--resume", str(tmp_path)], [str(tmp_path), "missing config.yaml"], capsys
    )
    assert_fails_cleanly(
        ["train", "--resume", str(tmp_path / "none")], ["none: no such run directory"], capsys
    )


# ------------------------------------------------------------------ prediction inputs


def damaged_copy(run: Path, tmp_path: Path, damage: str) -> Path:
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    if damage == "no checkpoint":
        shutil.rmtree(copy / "checkpoint-best")
    elif damage == "damaged adapter":
        (copy / "checkpoint-best" / "adapter_model.safetensors").write_bytes(
            b"\x08\x00\x00\x00\x00\x00\x00\x00{bad"
        )
    elif damage == "broken config":
        (copy / "config.yaml").write_text("model: [unclosed\n")
    elif damage == "interrupted":
        shutil.rmtree(copy / "checkpoint-best")
        (copy / "summary.json").unlink()
    elif damage == "no tokenizer":  # transformers would build an empty vocabulary and go on
        for f in (copy / "checkpoint-best").iterdir():
            if f.name.startswith(("tokenizer", "vocab", "merges", "special_tokens")):
                f.unlink()
    return copy


@pytest.mark.parametrize(
    "damage, fragments",
    [
        ("no checkpoint", ["missing checkpoint-best", "train it again"]),
        (
            "damaged adapter",
            ["checkpoint-best: damaged or incomplete checkpoint", "train the run again"],
        ),
        ("broken config", ["config.yaml: not valid YAML", "fix the syntax"]),
        ("interrupted", ["the run was interrupted", "lorafit train --resume"]),
        ("no tokenizer", ["checkpoint-best: incomplete checkpoint (no tokenizer files"]),
    ],
)
def test_run_directory_with_missing_or_damaged_files(
    finished_run, tmp_path, capsys, damage, fragments
):
    from .conftest import AG_HEAD

    run = damaged_copy(finished_run, tmp_path, damage)
    before = tree(run)
    out = tmp_path / "submission.csv"
    assert_fails_cleanly(
        ["predict", str(run), "--input", str(AG_HEAD), "--output", str(out)],
        [str(run), *fragments],
        capsys,
    )
    assert not out.exists() and tree(run) == before


def test_bad_prediction_inputs(finished_run, small_csv, tmp_path, capsys):
    """Bad --input files and bad --output paths: nothing written anywhere."""
    before = tree(finished_run)
    out = tmp_path / "submission.csv"
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("text\nsome news\n")
    bad_label = tmp_path / "bad_label.csv"
    bad_label.write_text("text,label\nsome news,9\n")
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_RunsCode(tmp_path / "pwned")))
    run = str(finished_run)
    cases = [
        (
            ["predict", run, "--input", str(tmp_path / "none.csv"), "--output", str(out)],
            ["none.csv: file not found"],
        ),
        (  # evaluate needs the labels; predict ignores them with a warning (test below)
            ["evaluate", run, "--input", str(bad_label)],
            ["bad_label.csv: row 1: label '9' is not one of the classes"],
        ),
        (
            ["predict", run, "--input", str(evil), "--output", str(out)],
            ["evil.pkl: refused to load posix.system"],
        ),
        (
            ["evaluate", run, "--input", str(unlabelled)],
            ["unlabelled.csv: no label column 'label'"],
        ),
        (
            ["predict", "/no/such/run", "--input", str(small_csv)],
            ["/no/such/run: no such run directory"],
        ),
    ]
    for argv, fragments in cases:
        assert_fails_cleanly(argv, fragments, capsys)
    assert not out.exists() and not (tmp_path / "pwned").exists()
    assert tree(finished_run) == before  # no predictions/ cache, no evaluations/ file


def test_predict_ignores_labels_it_cannot_read(finished_run, tmp_path, caplog):
    """predict never needs labels: one it cannot map is named in a warning, the rows are
    predicted, and no metrics are claimed."""
    import lorafit

    bad_label = tmp_path / "bad_label.csv"
    bad_label.write_text("text,label\nsome news,9\nmore news,1\n")
    out = tmp_path / "sub.csv"
    result = lorafit.predict(finished_run, str(bad_label), str(out))
    assert result["rows"] == 2 and "metrics" not in result
    assert pd.read_csv(out).shape == (2, 2)
    assert any(
        "row 1" in r.message and "label column is ignored" in r.message for r in caplog.records
    )


def test_bad_output_paths(finished_run, small_csv, tmp_path, capsys):
    before = tree(finished_run)
    existing = tmp_path / "existing.csv"
    existing.write_text("ID,Label\n0,1\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    run, data = str(finished_run), str(small_csv)
    cases = [
        (existing, [], ["existing.csv: already exists", "--overwrite"]),
        (tmp_path / "missing" / "sub.csv", [], ["folder", "does not exist", "create it"]),
        (a_file / "sub.csv", [], ["a-file is a file, not a folder"]),
        (tmp_path, [], [str(tmp_path), "is a folder", "give a file path"]),
        (Path("/dev/full"), ["--overwrite"], ["/dev/full: is not a regular file"]),
        (
            Path("/proc/lorafit-submission.csv"),
            [],
            ["/proc/lorafit-submission.csv", "cannot write", "writable folder"],
        ),
    ]
    for output, flags, fragments in cases:
        assert_fails_cleanly(
            ["predict", run, "--input", data, "--output", str(output), *flags], fragments, capsys
        )
    assert existing.read_text() == "ID,Label\n0,1\n" and a_file.read_text() == "x"
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)  # never replaced by a regular file
    # the probabilities cache may be written before the submission fails; nothing else is
    assert {p for p in tree(finished_run) if "predictions" not in p.parts} == {
        p for p in before if "predictions" not in p.parts
    }


# ------------------------------------------------------------------ the real process


def test_debug_shows_the_traceback(base, tmp_path):
    path = tmp_path / "range.csv"
    path.write_text("text,label\nhello,7\n")
    with pytest.raises(UserError, match="out of range"):
        main(["--debug", "train", *base, f"data.train={path}"])


@pytest.mark.slow
def test_real_processes_print_one_line(base, tmp_path):
    """Under `python -m lorafit` (real logging setup): one stderr line, or a traceback with --debug."""
    semi = tmp_path / "range.csv"
    semi.write_text("text,label\nhello,7\n")
    yaml = tmp_path / "bad.yaml"
    yaml.write_text("train:\n  lr: [1\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {
        "data": ["train", *base, f"data.train={semi}"],
        "yaml": ["train", "--config", str(yaml), *base],
        "debug": ["--debug", "train", *base, f"data.train={semi}"],
    }
    procs = {
        k: subprocess.Popen(
            [sys.executable, "-m", "lorafit", *a],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, a in runs.items()
    }
    done = {k: (p.wait(timeout=600), p.communicate()) for k, p in procs.items()}
    for key in ("data", "yaml"):
        code, (out, err) = done[key]
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith("lorafit: error: ") and "Traceback" not in err
    code, (_, err) = done["debug"]
    assert code == 1 and "Traceback" in err and "out of range" in err
    assert not (tmp_path / "runs").exists()
