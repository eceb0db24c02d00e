"""Loaders, the safe unpickler, the split, tokenisation and batching, on real AG News rows."""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pandas as pd
import pytest

from lorafit.config import DataConfig
from lorafit.data import encode, epoch_batches, load_splits, load_table, split_table
from lorafit.errors import UserError

from .conftest import AG_HEAD

AG_NAMES = ["World", "Sports", "Business", "Sci/Tech"]
CFG = DataConfig(label_names=AG_NAMES)


def test_original_ag_csv(ag_subset):
    table = load_table(str(AG_HEAD), CFG)
    raw = pd.read_csv(AG_HEAD, header=None, dtype=str)
    assert len(table) == 2000
    assert table.texts[0] == f"{raw[1][0].strip()} {raw[2][0].strip()}"
    assert table.labels.tolist() == (raw[0].astype(int) - 1).tolist()
    assert set(table.labels) == {0, 1, 2, 3}


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_tabular_formats_agree(ag_subset, tmp_path, suffix):
    rows = ag_subset.head(50)[["text", "label"]].rename(columns={"text": "body", "label": "y"})
    path = tmp_path / f"rows{suffix}"
    {
        ".csv": lambda: rows.to_csv(path, index=False),
        ".parquet": lambda: rows.to_parquet(path),
        ".jsonl": lambda: rows.to_json(path, orient="records", lines=True),
    }[suffix]()
    table = load_table(str(path), DataConfig(text_column="body", label_column="y"))
    assert table.texts == rows.body.tolist()
    assert table.labels.tolist() == rows.y.tolist()


def test_competition_pickle_is_read_without_labels(ag_subset, tmp_path):
    from datasets import Dataset

    path = tmp_path / "test_unlabelled.pkl"
    path.write_bytes(pickle.dumps(Dataset.from_dict({"text": ag_subset.text.head(30).tolist()})))
    table = load_table(str(path), CFG, need_labels=False)
    assert table.texts == ag_subset.text.head(30).tolist()
    assert table.labels is None


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(UserError, match=r"evil.pkl: refused to load posix.system"):
        load_table(str(path), CFG, need_labels=False)
    assert not marker.exists()


def test_pickle_of_wrong_content(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps({"text": ["a"]}))
    with pytest.raises(UserError, match="list.pkl: holds a dict, expected a datasets.Dataset"):
        load_table(str(path), CFG, need_labels=False)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "the file is empty"),
        (
            "body,label\nhello,1\n",
            r"cannot tell the text column \(no text-like column among \['body', 'label'\]\); set data.text_column",
        ),
        ("text,label\nhello,7\n", "row 1: label '7' is out of range 0-3"),
        (
            "text,label\nhello,1\nworld,x\n",
            "row 2: label 'x' is not one of the classes \\(World, Sports, Business, Sci/Tech\\)",
        ),
        ("text,label\nhello,1\n  ,2\n", "row 2: the text is empty"),
        ("text\nhello\n", "cannot tell the label column \\(no label-like column"),
        ('"5","title","desc"\n', "class '5' is not 1-4"),
    ],
)
def test_bad_files_name_file_row_and_fix(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as e:
        load_table(str(path), CFG)
    assert "bad.csv" in str(e.value)


def test_non_utf8_and_missing_file(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ncaf\xe9 news,1\n".encode("latin-1"))
    with pytest.raises(
        UserError,
        match=r"latin1.csv: line 2 \(byte offset 14\): byte 0xe9 is not utf-8 text; set data.encoding",
    ):
        load_table(str(path), CFG)
    with pytest.raises(UserError, match="nope.csv: file not found"):
        load_table(str(tmp_path / "nope.csv"), CFG)


def test_stratified_seeded_split(small_csv):
    table = load_table(str(small_csv), CFG)
    train, val = split_table(table, 40, seed=7)
    again, val2 = split_table(table, 40, seed=7)
    _, other = split_table(table, 40, seed=8)
    assert len(val) == 40 and len(train) == 200
    assert np.bincount(val.labels).tolist() == [10, 10, 10, 10]
    assert val.texts == val2.texts and val.texts != other.texts
    assert not set(val.texts) & set(train.texts)
    _, frac = split_table(table, 0.25, seed=7)
    assert len(frac) == 60


def test_separate_validation_file_and_subset(small_csv):
    splits = load_splits(
        DataConfig(
            train=str(small_csv), validation=str(AG_HEAD), max_train_rows=100, label_names=AG_NAMES
        ),
        seed=0,
    )
    assert len(splits["validation"]) == 2000
    assert len(splits["train"]) == 100
    assert np.bincount(splits["train"].labels).tolist() == [25, 25, 25, 25]


def test_hub_unreachable_fails_fast_with_hint(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.time()
    with pytest.raises(UserError, match="cannot reach the Hugging Face hub .* point data.train"):
        load_table("fancyzhx/ag_news", CFG)
    assert time.time() - start < 5


def test_hub_id_with_configuration(monkeypatch):
    """'nyu-mll/glue:rte' asks the hub for the glue dataset's rte configuration, in the split asked."""
    import datasets

    calls = []

    def load_dataset(name, subset=None, split=None):
        calls.append((name, subset, split))
        return datasets.Dataset.from_dict({"sentence": ["a b", "c d"], "label": [0, 1]})

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    table = load_table(
        "nyu-mll/glue:cola",
        DataConfig(text_column="sentence", label_names=["no", "yes"]),
        split="validation",
    )
    assert calls == [("nyu-mll/glue", "cola", "validation")]
    assert list(table.texts) == ["a b", "c d"]


def _news_with_class_label():
    """AG News as the hub serves it: integer labels, a ClassLabel feature naming them."""
    import datasets

    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["World", "Sports", "Business", "Sci/Tech"]),
        }
    )
    # every class's label written as its id; Sci/Tech (3) first, so sorted names would differ
    rows = {"text": [f"news {i}" for i in range(24)], "label": [3, 0, 1, 2] * 6}
    return datasets.Dataset.from_dict(rows, features=features)


@pytest.mark.parametrize("where", ["saved", "hub"])
def test_class_label_names_name_the_classes_in_id_order(where, tmp_path, monkeypatch):
    """Without data.label_names, a dataset's ClassLabel names the classes, in its id order (not
    sorted: World stays 0 as the competition's ids need); the ids still read as ids."""
    import datasets

    ds = _news_with_class_label()
    if where == "saved":
        datasets.DatasetDict({"train": ds, "test": ds.select(range(8))}).save_to_disk(
            str(tmp_path / "news")
        )
        source = str(tmp_path / "news")
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(datasets, "load_dataset", lambda name, subset=None, split=None: ds)
        source = "someone/news"
    cfg = DataConfig(train=source, val_size=8)
    splits = load_splits(cfg, seed=0)
    assert cfg.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert cfg.label_format == "ids"  # written as ids: predictions keep them unless asked
    by_text = dict(zip(ds["text"], ds["label"]))
    for table in splits.values():
        assert [by_text[t] for t in table.texts] == list(table.labels)
    # given names still win, and a plain file (no ClassLabel) still sorts its labels
    cfg = DataConfig(train=source, val_size=8, label_names=["w", "s", "b", "t"])
    load_splits(cfg, seed=0)
    assert cfg.label_names == ["w", "s", "b", "t"]
    ds.to_pandas().to_csv(tmp_path / "plain.csv", index=False)
    cfg = DataConfig(train=str(tmp_path / "plain.csv"), val_size=8)
    load_splits(cfg, seed=0)
    assert cfg.label_names == ["0", "1", "2", "3"]


def test_encode_truncates_and_counts(tiny_model, ag_subset):
    from transformers import AutoTokenizer

    from lorafit.data import TextTable

    tok = AutoTokenizer.from_pretrained(tiny_model)
    long = " ".join(ag_subset.text.head(20))
    enc = encode(tok, TextTable(["short news", long], np.array([0, 1]), "x"), max_length=16)
    assert enc.truncated == 1
    assert len(enc.ids[1]) == 16
    assert enc.ids[1][0] == tok.bos_token_id and enc.ids[1][-1] == tok.eos_token_id
    assert enc.ids[0] == tok("short news")["input_ids"]


def test_length_grouped_batches_cover_each_row_once():
    lengths = np.random.default_rng(0).integers(5, 120, size=1000)
    batches = epoch_batches(lengths, 32, seed=1, epoch=0, group_by_length=True)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    pad = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)
    plain = epoch_batches(lengths, 32, seed=1, epoch=0, group_by_length=False)
    pad_plain = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in plain)
    assert pad < pad_plain / 5
    again = epoch_batches(lengths, 32, seed=1, epoch=0, group_by_length=True)
    assert all((a == b).all() for a, b in zip(batches, again))


def test_split_seed_fixes_the_held_out_rows_across_training_seeds(small_csv):
    def held_out(seed, split_seed=None):
        cfg = DataConfig(
            train=str(small_csv),
            val_size=20,
            test_size=20,
            split_seed=split_seed,
            max_train_rows=50,
        )
        splits = load_splits(cfg, seed=seed)
        return {name: sorted(t.texts) for name, t in splits.items()}

    assert (
        held_out(1, split_seed=7) == held_out(2, split_seed=7) == held_out(7)
    )  # the split's own seed
    assert held_out(1) != held_out(2)  # unset: train.seed decides, as before
    from lorafit.config import load_config

    with pytest.raises(UserError, match="key 'data.split_seed'"):
        load_config(None, ["data.split_seed=1.5"])
    with pytest.raises(ValueError, match="data.split_seed: must be a whole number"):
        DataConfig(train=str(small_csv), split_seed=True)
