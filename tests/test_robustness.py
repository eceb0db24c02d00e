"""`evaluate --perturb` and training-time augmentation (`data.augment`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lorafit.augment import augment_table, training_splits
from lorafit.cli import main
from lorafit.config import load_config
from lorafit.data import TextTable, load_splits
from lorafit.perturb import perturb_texts
from lorafit.robustness import evaluate_perturbed


@pytest.fixture
def trained(tiny_overrides, tmp_path):
    assert main(["train", *tiny_overrides, "data.test=null"]) == 0
    return tmp_path / "runs" / "latest"


@pytest.fixture
def labelled(ag_subset, tmp_path):
    rows = ag_subset.groupby("label").head(25)[["text", "label"]]
    path = tmp_path / "labelled.csv"
    rows.to_csv(path, index=False)
    return path


def test_perturbed_scores_match_scoring_the_perturbed_file(trained, labelled, tmp_path):
    result = evaluate_perturbed(
        trained, str(labelled), "typo,word_dropout", rate=0.3, seed=5, device="cpu", dtype="fp32"
    )
    assert set(result["perturbed"]) == {"typo", "word_dropout"} and result["rows"] == 100
    # the clean score is `lorafit evaluate`'s
    clean = json.loads(
        _cli_json(["evaluate", str(trained), "--input", str(labelled), "--json", "--dtype", "fp32"])
    )
    assert result["clean"]["accuracy"] == clean["accuracy"]
    assert result["clean"]["loss"] == pytest.approx(clean["loss"], abs=1e-5)
    # each perturbed score is that of a file holding the same perturbed texts
    frame = pd.read_csv(labelled)
    copy = tmp_path / "typo.csv"
    frame.assign(text=perturb_texts(frame.text.tolist(), "typo", 0.3, seed=5)).to_csv(
        copy, index=False
    )
    by_file = json.loads(
        _cli_json(["evaluate", str(trained), "--input", str(copy), "--json", "--dtype", "fp32"])
    )
    assert result["perturbed"]["typo"]["loss"] == pytest.approx(by_file["loss"], abs=1e-5)
    assert result["perturbed"]["typo"]["accuracy_change"] == pytest.approx(
        by_file["accuracy"] - clean["accuracy"]
    )
    (saved,) = (trained / "evaluations").glob("labelled-*-perturb-r0.3-s5.json")
    assert (
        json.loads(saved.read_text())["perturbed"]["typo"]["accuracy"]
        == result["perturbed"]["typo"]["accuracy"]
    )


def _cli_json(argv):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


def test_cli_prints_a_table_and_rejects_bad_kinds(trained, labelled, capsys):
    def evaluate(*perturb: str) -> int:
        return main(["evaluate", str(trained), "--input", str(labelled), "--perturb", *perturb])

    assert evaluate("synonym", "--rate", "0.2") == 0
    out = capsys.readouterr().out
    assert "clean" in out and "synonym" in out and "rate 0.2" in out
    assert evaluate("shout") == 2
    assert "--perturb: unknown kind 'shout'" in capsys.readouterr().err
    assert evaluate("typo", "--rate", "1.5") == 2
    assert "--rate 1.5: must be in (0, 1]" in capsys.readouterr().err


def test_augment_replaces_a_seeded_share_of_rows(ag_subset):
    table = TextTable(ag_subset.text.tolist()[:400], ag_subset.label.to_numpy()[:400], "x")
    cfg = load_config(
        None, ["data.augment=typo,word_swap", "data.augment_rate=0.3", "data.augment_share=0.25"]
    ).data
    out = augment_table(table, cfg, seed=1)
    changed = [i for i, (a, b) in enumerate(zip(table.texts, out.texts)) if a != b]
    assert (
        80 <= len(changed) <= 100
    )  # 100 rows chosen; a perturbation can leave a short text as it was
    assert np.array_equal(out.labels, table.labels) and len(out) == len(table)
    assert augment_table(table, cfg, seed=1).texts == out.texts  # reproducible
    assert augment_table(table, cfg, seed=2).texts != out.texts
    off = load_config(None, []).data
    assert augment_table(table, off, seed=1) is table  # off by default


def test_augment_touches_training_rows_only(small_csv):
    base = [f"data.train={small_csv}", "data.val_size=40", "data.test=null"]
    plain = load_splits(load_config(None, base).data, 42)
    cfg = load_config(
        None, [*base, "data.augment=mixed", "data.augment_share=1.0", "data.augment_rate=0.5"]
    )
    augmented = training_splits(cfg.data, 42)
    assert augmented["validation"].texts == plain["validation"].texts
    assert np.array_equal(augmented["train"].labels, plain["train"].labels)
    same = sum(a == b for a, b in zip(plain["train"].texts, augmented["train"].texts))
    assert same < len(plain["train"]) * 0.05


def test_bad_augment_kind_names_the_key():
    from lorafit.errors import UserError

    with pytest.raises(UserError, match=r"data.augment: unknown kind 'caps'"):
        load_config(None, ["data.augment=typo,caps"])
    with pytest.raises(UserError, match=r"data.augment_share: must be in \(0, 1\]"):
        load_config(None, ["data.augment=typo", "data.augment_share=0"])
