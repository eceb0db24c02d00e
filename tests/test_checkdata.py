"""`lorafit check-data` and `lorafit train --dry-run`: the data a run would read, counted, on the
real SMS Spam Collection and on the tiny model's AG News rows; counts compared with pandas."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from lorafit.cli import build_parser, main
from lorafit.config import load_config

from .conftest import ROOT

SMS = (
    Path(os.environ.get("LORAFIT_SHARED_DATA") or ROOT.parent / "shared")
    / "data"
    / "foreign"
    / "sms_spam"
    / "SMSSpamCollection"
)


@pytest.fixture
def sms() -> Path:
    if not SMS.exists():
        pytest.fail(f"{SMS} is missing: the tests need ../shared beside the checkout")
    return SMS


def sms_frame() -> pd.DataFrame:
    return pd.read_csv(
        SMS,
        sep="\t",
        header=None,
        quoting=3,
        names=["label", "text"],
        dtype=str,
        keep_default_na=False,
    )


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sms_counts_match_pandas_and_the_guess_is_said(
    sms, tiny_model, tmp_path, capsys, caplog, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    argv = [
        "check-data",
        f"data.train={sms}",
        f"model.name={tiny_model}",
        "model.max_length=32",
        f"run.dir={tmp_path / 'runs'}",
    ]
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0
    r = json.loads(out)
    truth = sms_frame().label.value_counts()
    assert (truth["ham"], truth["spam"]) == (4827, 747)
    assert {n: s["rows"] for n, s in r["splits"].items()} == {
        "train": 5574 - 1115,
        "validation": 1115,
    }
    assert r["splits"]["validation"]["from"] == "split from data.train (data.val_size=0.2)"
    assert r["columns"] == {
        "text": "1",
        "label": "0",
        "label_columns": None,
        "pairs": False,
        "guessed": ["text_column", "label_column"],
    }
    assert [c["name"] for c in r["classes"]] == ["ham", "spam"]
    for c in r["classes"]:
        assert c["rows"]["train"] + c["rows"]["validation"] == truth[c["name"]]
    train = {c["name"]: c["rows"]["train"] for c in r["classes"]}
    assert r["imbalance_ratio"] == pytest.approx(train["ham"] / train["spam"])
    assert r["metric"] == {
        "setting": "auto",
        "selected": "eval_f1",
        "name": "macro-F1",
    }  # 6.5 > 1.5
    assert (
        "text column '1', label column '0' (guessed" in caplog.text
        and "checkpoint selection: eval_f1" in caplog.text
    )
    assert (
        'row 283 (line 283): a " is a character here, not a CSV quote' in caplog.text
    )  # read as published
    # tokens with the model's tokenizer, untruncated, counted independently over the whole file
    from transformers import AutoTokenizer

    lengths = [
        len(x)
        for x in AutoTokenizer.from_pretrained(str(tiny_model))(sms_frame().text.tolist())[
            "input_ids"
        ]
    ]
    lens = r["lengths"]
    assert (lens["unit"], lens["max_length"]) == ("tokens", 32)
    assert sum(s["truncated"] for s in lens["splits"].values()) == sum(n > 32 for n in lengths)
    assert max(s["max"] for s in lens["splits"].values()) == max(lengths)
    # the text report says the same
    code, text, _ = run(capsys, *argv)
    assert code == 0
    assert re.search(rf"train\s+{train['ham'] + train['spam']:,} rows  {re.escape(str(sms))}", text)
    assert re.search(rf"0  ham\s+{train['ham']:,}\s+{truth['ham'] - train['ham']:,}\n", text)
    assert re.search(rf"1  spam\s+{train['spam']:,}\s+{truth['spam'] - train['spam']:,}\n", text)
    assert "columns: text '1' (guessed), label '0' (guessed)" in text
    assert "train.metric=auto selects eval_f1 (macro-F1)" in text
    assert list(tmp_path.iterdir()) == []  # no run folder, nothing written


def test_tiny_model_rows_and_train_dry_run_print_the_same(
    tiny_overrides, small_csv, tmp_path, capsys
):
    code, out, _ = run(capsys, "check-data", *tiny_overrides)
    assert code == 0
    truth = pd.read_csv(small_csv).label.value_counts().sort_index()
    assert truth.tolist() == [60, 60, 60, 60]
    assert re.search(rf"train\s+200 rows  {re.escape(str(small_csv))}", out)
    assert re.search(
        rf"validation\s+40 rows  split from data.train \(data.val_size=40\): {re.escape(str(small_csv))}",
        out,
    )
    for label, rows in truth.items():
        match = re.search(rf"\n\s+{label}  {label}\s+(\d+)\s+(\d+)\n", out)
        assert match and int(match[1]) + int(match[2]) == rows
    assert (
        "largest/smallest class 1.00 in train; train.metric=auto selects eval_accuracy (accuracy)"
        in out
    )
    assert "text lengths in tokens" in out and "model.max_length=64" in out
    code, dry, _ = run(capsys, "train", "--dry-run", *tiny_overrides)
    assert code == 0 and dry == out
    assert not (tmp_path / "runs").exists()


def test_pairs_are_shown_and_lengths_fall_back_to_characters(tmp_path, capsys):
    rows = pd.DataFrame(
        {
            "premise": [f"a premise sentence number {i} with some words" for i in range(30)],
            "hypothesis": [f"hypothesis {i}" for i in range(30)],
            "label": ["yes", "no", "no"] * 10,
        }
    )
    path = tmp_path / "pairs.csv"
    rows.to_csv(path, index=False)
    import lorafit

    cfg = load_config(
        None,
        [
            f"data.train={path}",
            "data.text_column=[premise,hypothesis]",
            "data.val_size=6",
            "model.name=nobody/not-cached",
            "train.metric=eval_f1",
        ],
    )
    r = lorafit.check_data(cfg)
    assert (
        cfg.data.label_names == [] and cfg.data.label_column is None
    )  # the caller's config is not settled
    assert r["columns"] == {
        "text": ["premise", "hypothesis"],
        "label": "label",
        "label_columns": None,
        "pairs": True,
        "guessed": [],
    }  # by its name
    assert r["metric"]["setting"] == "eval_f1" and r["metric"]["selected"] == "eval_f1"
    assert [(c["name"], c["rows"]["train"] + c["rows"]["validation"]) for c in r["classes"]] == [
        ("no", 20),
        ("yes", 10),
    ]
    lens = r["lengths"]
    assert lens["unit"] == "characters" and "nobody/not-cached" in lens["note"]
    both = (rows.premise + " " + rows.hypothesis).str.len()
    assert max(s["max"] for s in lens["splits"].values()) == both.max()
    from lorafit.checkdata import check_text

    text = check_text(r)
    assert "columns: text pair 'premise' + 'hypothesis', label 'label'\n" in text
    assert (
        "train.metric is set to eval_f1 (macro-F1)" in text and "text lengths in characters" in text
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["check-data", "data.train={bad}"], 'bad.csv: row 1 (line 2): a " closes a quoted field'),
        (["train", "--dry-run", "data.train={bad}"], "set data.quoting: none"),
        (["check-data"], "data.train: no training file"),
        (["check-data", "data.train={sms}", "data.label_column=nope"], "no label column 'nope'"),
        (
            ["check-data", "data.train={sms}", "data.label_names=[ham,eggs]"],
            "label 'spam' is not one of the classes (ham, eggs)",
        ),
        (["train", "--dry-run", "--resume", "runs/x"], "drop --resume"),
    ],
)
def test_bad_data_is_one_line_and_exit_2(sms, argv, message, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.csv"
    bad.write_text('text,label\n"Yes!" he said,pos\nno,neg\n')
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *[a.format(sms=sms, bad=bad) for a in argv])
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [bad]


@pytest.mark.parametrize(
    "argv, shown",
    [(["check-data", "--help"], "usage: lorafit check-data"), (["train", "--help"], "--dry-run")],
)
def test_help(argv, shown, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert shown in out and "data.quoting" in out  # the config keys are listed
