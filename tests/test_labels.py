"""Labels as users write them: the class list from the training file, label -> id, and the
user's names in every output (evaluate, predict, the merged export), end to end on real rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from lorafit.cli import main
from lorafit.config import DataConfig
from lorafit.data import class_names, label_ids, load_splits, load_table
from lorafit.errors import UserError

NAMES = ["World", "Sports", "Business", "Sci/Tech"]


def test_string_labels_sorted_integers_numerically():
    assert class_names(["spam", "ham", "ham"], "f") == ["ham", "spam"]
    assert class_names([10, 9, 2, 10], "f") == ["2", "9", "10"]  # not '10' < '2'
    assert class_names(["1.0", 2.0, "3"], "f") == ["1", "2", "3"]  # floats written for integers


def test_given_names_fix_the_order_and_add_absent_classes():
    assert class_names(["b", "a"], "f", given=["c", "b", "a"]) == ["c", "b", "a"]
    with pytest.raises(UserError, match=r"f: row 2: label 'd' is not one of the classes \(a, b\)"):
        class_names(["a", "d"], "f", given=["a", "b"])


def test_one_class_and_empty_label_are_refused_with_the_row():
    with pytest.raises(
        UserError, match="every row has the label 'ham'; a classifier needs at least 2"
    ):
        class_names(["ham", "ham"], "f")
    with pytest.raises(UserError, match="f: row 3: the label is empty"):
        class_names(["ham", "spam", " "], "f")


def test_integer_names_map_by_value_never_by_position():
    # trained on labels 1-4 without names: '1' is the class named 1 (id 0), never id 1
    assert label_ids(["1", "4", 2], "f", ["1", "2", "3", "4"]).tolist() == [0, 3, 1]
    with pytest.raises(UserError, match=r"label '0' is not one of the classes \(1, 2, 3, 4\)"):
        label_ids(["0"], "f", ["1", "2", "3", "4"])
    # names for integer labels (AG News): integers are ids, names are names
    assert label_ids(["2", "World", 3], "f", NAMES).tolist() == [2, 0, 3]
    with pytest.raises(UserError, match=r"row 1: label '4' is out of range 0-3"):
        label_ids(["4"], "f", NAMES)


def test_integer_labels_compare_as_numbers():
    """'07', '+10' and '7.0' (a float column written as text) are the classes 7 and 10."""
    assert label_ids(["07", "+10", "7.0", 10], "f.csv", ["7", "10"]).tolist() == [0, 1, 0, 1]
    assert label_ids(["7", "10"], "f.csv", ["07", "10"]).tolist() == [
        0,
        1,
    ]  # names given as written


def test_load_splits_settles_columns_classes_and_format(tmp_path):
    path = tmp_path / "mail.csv"
    pd.DataFrame(
        {
            "body": [f"message number {i} with some words" for i in range(40)],
            "kind": ["spam" if i % 4 == 0 else "ham" for i in range(40)],
        }
    ).to_csv(path, index=False)
    cfg = DataConfig(train=str(path), val_size=8)
    splits = load_splits(cfg, seed=0)
    assert (cfg.text_column, cfg.label_column) == ("body", "kind")
    assert cfg.label_names == ["ham", "spam"] and cfg.label_format == "names"
    frame = pd.read_csv(path)
    by_text = dict(zip(frame.body, frame.kind))
    for split in splits.values():
        assert [cfg.label_names[i] for i in split.labels] == [by_text[t] for t in split.texts]
    ag = DataConfig(train=str(path), val_size=8, label_names=["spam", "ham"])
    load_splits(ag, seed=0)
    assert ag.label_names == ["spam", "ham"] and ag.label_format == "names"


def test_integer_labels_with_names_are_written_as_ids(small_csv):
    cfg = DataConfig(train=str(small_csv), val_size=40, label_names=NAMES)
    load_splits(cfg, seed=0)
    assert cfg.label_format == "ids" and cfg.label_names == NAMES
    plain = DataConfig(train=str(small_csv), val_size=40)
    load_splits(plain, seed=0)  # integer labels 0-3 without names: named by themselves
    assert plain.label_names == ["0", "1", "2", "3"] and plain.label_format == "names"


def test_two_integer_classes_make_a_two_class_model(tmp_path, ag_subset):
    # issue 27: a 0/1 file without data.label_names trained a 4-class AG News model
    rows = ag_subset[ag_subset.label < 2].groupby("label").head(30)
    path = tmp_path / "binary.csv"
    rows[["text", "label"]].to_csv(path, index=False)
    cfg = DataConfig(train=str(path), val_size=10)
    load_splits(cfg, seed=0)
    assert cfg.label_names == ["0", "1"]


def test_evaluation_file_with_an_unseen_label_names_it_and_the_row(tmp_path):
    path = tmp_path / "dev.csv"
    pd.DataFrame(
        {"text": ["a text here", "another text", "third one"], "label": ["ham", "spam", "eggs"]}
    ).to_csv(path, index=False)
    cfg = DataConfig(text_column="text", label_column="label", label_names=["ham", "spam"])
    with pytest.raises(
        UserError, match=r"dev.csv: row 3: label 'eggs' is not one of the classes \(ham, spam\)"
    ):
        load_table(str(path), cfg)
    # predict needs no labels: a label it cannot read is ignored, not refused
    assert load_table(str(path), cfg, need_labels=False).labels is None


@pytest.mark.parametrize("empty", ["", "nan"])
def test_empty_label_column_is_no_labels_for_predict(tmp_path, empty):
    path = tmp_path / "test.csv"
    path.write_text(f"text,label\nfirst text,{empty}\nsecond text,{empty}\n")
    cfg = DataConfig(text_column="text", label_column="label", label_names=["ham", "spam"])
    assert load_table(str(path), cfg, need_labels=False).labels is None


@pytest.fixture(scope="module")
def string_label_run(tiny_model, ag_subset, tmp_path_factory):
    """A tiny run trained on string labels (the AG News topics written as words)."""
    root = tmp_path_factory.mktemp("strings")
    rows = ag_subset.groupby("label").head(50).sample(frac=1, random_state=1)
    frame = pd.DataFrame(
        {"headline": rows.text.to_numpy(), "topic": [NAMES[i].lower() for i in rows.label]}
    )
    train = root / "news.csv"
    frame.to_csv(train, index=False)
    args = [
        "train",
        f"model.name={tiny_model}",
        f"data.train={train}",
        "data.val_size=40",
        "model.max_length=48",
        "train.max_steps=6",
        "train.eval_every=3",
        "train.batch_size=16",
        "log.progress=false",
        f"run.dir={root / 'runs'}",
    ]
    assert main(args) == 0
    (run,) = [p for p in (root / "runs").iterdir() if p.name != "latest"]
    return run, frame, root


def test_run_speaks_the_users_labels(string_label_run, capsys):
    run, frame, root = string_label_run
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert saved["label_names"] == ["business", "sci/tech", "sports", "world"]  # sorted
    assert (saved["text_column"], saved["label_column"], saved["label_format"]) == (
        "headline",
        "topic",
        "names",
    )
    assert main(["export", str(run), "--merged", str(root / "merged")]) == 0
    model_config = json.loads((root / "merged" / "config.json").read_text())
    assert model_config["id2label"] == {
        "0": "business",
        "1": "sci/tech",
        "2": "sports",
        "3": "world",
    }
    summary = json.loads((run / "summary.json").read_text())
    assert summary["label_names"] == saved["label_names"]

    dev = root / "dev.csv"
    frame.head(30).to_csv(dev, index=False)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--input", str(dev), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert list(metrics["per_class"]) == saved["label_names"]
    assert sum(c["support"] for c in metrics["per_class"].values()) == 30
    truth = frame.head(30).topic.value_counts()
    assert {
        k: v["support"] for k, v in metrics["per_class"].items() if v["support"]
    } == truth.to_dict()

    out = root / "pred.csv"
    assert main(["predict", str(run), "--input", str(dev), "--output", str(out)]) == 0
    written = pd.read_csv(out)
    assert list(written.columns) == ["ID", "Label"] and set(written.Label) <= set(
        saved["label_names"]
    )
    ids = root / "pred-ids.csv"
    assert (
        main(
            [
                "predict",
                str(run),
                "--input",
                str(dev),
                "--output",
                str(ids),
                "--label-format",
                "ids",
            ]
        )
        == 0
    )
    as_ids = pd.read_csv(ids)
    assert [saved["label_names"][i] for i in as_ids.Label] == written.Label.tolist()


def test_predict_passes_an_id_column_and_needs_no_labels(string_label_run):
    run, frame, root = string_label_run
    src = root / "unlabelled.tsv"
    part = frame.head(12).assign(topic="", key=[f"row-{i:03d}" for i in range(12)])
    part[["key", "headline", "topic"]].to_csv(src, sep="\t", index=False)
    out = root / "with-ids.csv"
    assert (
        main(["predict", str(run), "--input", str(src), "--output", str(out), "--id-column", "key"])
        == 0
    )
    written = pd.read_csv(out)
    assert list(written.columns) == ["key", "Label"] and written.key.tolist() == part.key.tolist()


def test_ensemble_speaks_the_users_labels_and_passes_ids(string_label_run):
    import shutil

    run, frame, root = string_label_run
    twin = root / "twin"
    if not twin.exists():
        shutil.copytree(run, twin)  # the same weights: the ensemble must label as the run does
    src = root / "ens-input.csv"
    frame.head(12).assign(key=[f"k{i}" for i in range(12)]).to_csv(src, index=False)
    single = root / "ens-single.csv"
    assert main(["predict", str(run), "--input", str(src), "--output", str(single)]) == 0
    out = root / "ens.csv"
    assert (
        main(
            [
                "ensemble",
                str(run),
                str(twin),
                "--input",
                str(src),
                "--output",
                str(out),
                "--id-column",
                "key",
            ]
        )
        == 0
    )
    written = pd.read_csv(out)
    assert list(written.columns) == ["key", "Label"] and written.key.tolist() == [
        f"k{i}" for i in range(12)
    ]
    assert written.Label.tolist() == pd.read_csv(single).Label.tolist()
    ids = root / "ens-ids.csv"
    assert (
        main(
            [
                "ensemble",
                str(run),
                str(twin),
                "--input",
                str(src),
                "--output",
                str(ids),
                "--label-format",
                "ids",
            ]
        )
        == 0
    )
    names = yaml.safe_load((run / "config.yaml").read_text())["data"]["label_names"]
    assert [names[i] for i in pd.read_csv(ids).Label] == written.Label.tolist()


def test_predict_texts_in_memory_matches_the_file(string_label_run):
    import lorafit

    run, frame, root = string_label_run
    texts = frame.headline.head(10).tolist()
    result = lorafit.predict(run, texts=texts)
    assert result["rows"] == 10 and result["probabilities"].shape == (10, 4)
    src = root / "ten.csv"
    frame.head(10).to_csv(src, index=False)
    out = root / "ten-pred.csv"
    lorafit.predict(run, str(src), str(out))
    assert pd.read_csv(out).Label.tolist() == result["labels"]
    np.testing.assert_allclose(result["probabilities"].sum(1), 1, atol=1e-5)
    with pytest.raises(UserError, match="this run reads single texts"):
        lorafit.predict(run, texts=texts, pairs=texts)


def test_competition_format_keeps_integer_ids(tiny_overrides, tmp_path):
    # AG News configs: integer labels 0-3 named by data.label_names -> ID,Label with ids
    names = "data.label_names=[World,Sports,Business,Sci/Tech]"
    assert main(["train", *tiny_overrides, names]) == 0
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["label_format"] == "ids"
    out = tmp_path / "sub.csv"
    assert main(["predict", str(run), "--input", "sample-test", "--output", str(out)]) == 0
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["ID", "Label"] and sub.Label.dtype.kind == "i"
    assert sub.ID.tolist() == list(range(len(sub))) and set(sub.Label) <= {0, 1, 2, 3}
    named = tmp_path / "named.csv"
    assert (
        main(
            [
                "predict",
                str(run),
                "--input",
                "sample-test",
                "--output",
                str(named),
                "--label-format",
                "names",
            ]
        )
        == 0
    )
    assert [NAMES[i] for i in sub.Label] == pd.read_csv(named).Label.tolist()
