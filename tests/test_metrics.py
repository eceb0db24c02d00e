"""Metrics that fit the task: MCC and macro precision/recall, train.metric (auto on imbalanced
classes), balanced class weights, and a sweep's metric reaching its trials' checkpoints."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lorafit.cli import main
from lorafit.config import load_config
from lorafit.errors import UserError
from lorafit.metrics import balanced_class_weights, classification_metrics, format_metrics


def hand_metrics(labels: np.ndarray, preds: np.ndarray, k: int) -> dict:
    """The oracle: MCC and macro precision/recall/F1 from a confusion matrix counted here."""
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    true, predicted, correct, n = cm.sum(1), cm.sum(0), np.trace(cm), cm.sum()
    mcc = (correct * n - true @ predicted) / np.sqrt(
        (n**2 - predicted @ predicted) * (n**2 - true @ true)
    )
    diag = np.diag(cm)
    precision = np.divide(diag, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(diag, true, out=np.zeros(k), where=true > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(k), where=both > 0)
    return {"cm": cm, "mcc": mcc, "precision": precision, "recall": recall, "f1": f1}


@pytest.mark.parametrize("k, n, seed", [(3, 300, 0), (2, 200, 1)])
def test_mcc_and_macro_figures_match_a_hand_computation(k, n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    logits[np.arange(n), labels] += 0.8  # better than chance, not perfect
    names = [f"c{i}" for i in range(k)]
    m = classification_metrics(logits, labels, names)
    want = hand_metrics(labels, logits.argmax(-1), k)
    assert m["confusion_matrix"] == want["cm"].tolist()
    assert 0.1 < want["mcc"] < 0.9 and m["mcc"] == pytest.approx(want["mcc"], abs=1e-12)
    assert m["macro_precision"] == pytest.approx(want["precision"].mean(), abs=1e-12)
    assert m["macro_recall"] == pytest.approx(want["recall"].mean(), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(want["f1"].mean(), abs=1e-12)
    for i, name in enumerate(names):  # the per-class figures are kept
        assert m["per_class"][name]["precision"] == pytest.approx(want["precision"][i], abs=1e-12)
        assert m["per_class"][name]["recall"] == pytest.approx(want["recall"][i], abs=1e-12)
    assert f"MCC {m['mcc']:.4f}   macro precision {m['macro_precision']:.4f}" in format_metrics(m)


def test_mcc_is_zero_when_one_class_is_always_predicted():
    labels = np.array([0, 0, 0, 1])
    m = classification_metrics(np.tile([[2.0, 0.0]], (4, 1)), labels, ["a", "b"])
    assert (m["accuracy"], m["mcc"], m["macro_recall"]) == (0.75, 0.0, 0.5)


def test_balanced_weights_are_rows_over_classes_times_class_rows():
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.array([0] * 6 + [1] * 2 + [2] * 4)
    weights = balanced_class_weights(labels, 3)
    assert weights == pytest.approx([12 / 18, 12 / 6, 12 / 12])
    assert weights == pytest.approx(
        compute_class_weight("balanced", classes=np.arange(3), y=labels)
    )
    # a class the training rows lack: weight 0 (never a target), the others unchanged
    assert balanced_class_weights(labels, 4) == pytest.approx([12 / 24, 12 / 8, 12 / 16, 0.0])


def test_class_weights_refuse_a_teacher_naming_both_keys(tmp_path):
    with pytest.raises(
        UserError, match=r"train\.class_weights: balanced is not used with train\.teacher"
    ):
        load_config(None, ["train.class_weights=balanced", f"train.teacher={tmp_path}"])
    with pytest.raises(UserError, match="train.class_weights: must be none or balanced"):
        load_config(None, ["train.class_weights=inverse"])
    with pytest.raises(UserError, match="train.metric: must be one of auto, eval_accuracy"):
        load_config(None, ["train.metric=eval_kappa"])


# ---------------------------------------------------------------- training runs (tiny model)


@pytest.fixture
def imbalanced_csv(ag_subset, tmp_path):
    """150 rows of class 0 and 30 of each of classes 1-3 (names "0".."3" from the file).

    Four classes, as the tiny model's saved head has (a 2-class file fails to load it: see
    model.py's from_pretrained without ignore_mismatched_sizes)."""
    rows = [ag_subset[ag_subset.label == c].head(150 if c == 0 else 30) for c in range(4)]
    path = tmp_path / "imbalanced.csv"
    pd.concat(rows)[["text", "label"]].sample(frac=1, random_state=0).to_csv(path, index=False)
    return path


def _run(tmp_path):
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    config = yaml.safe_load((run / "config.yaml").read_text())
    summary = json.loads((run / "summary.json").read_text())
    return run, [r for r in rows if r["kind"] == "eval"], config, summary


def _on(overrides, data):
    return [o for o in overrides if not o.startswith("data.train=")] + [f"data.train={data}"]


def test_auto_selects_by_accuracy_on_balanced_classes(tiny_overrides, tmp_path):
    assert main(["train", *tiny_overrides]) == 0  # 60 rows of each of 4 classes
    run, evals, config, summary = _run(tmp_path)
    assert config["train"]["metric"] == "eval_accuracy" and summary["metric"] == "eval_accuracy"
    log = (run / "train.log").read_text()
    assert (
        "checkpoint selection: eval_accuracy (accuracy): classes balanced, largest/smallest 1.00 <= 1.5 (train.metric=auto)"
        in log
    )
    assert "class weights" not in log  # train.class_weights defaults to none
    for key in ("eval_mcc", "eval_precision", "eval_recall", "eval_f1", "eval_accuracy"):
        assert all(-1 <= r[key] <= 1 for r in evals), key


def test_auto_selects_macro_f1_on_imbalanced_classes_and_balanced_weights_weigh_the_loss(
    tiny_overrides, imbalanced_csv, tmp_path, monkeypatch
):
    """train.metric=auto -> eval_f1; each training loss is the weighted mean computed here."""
    calls = []
    cross_entropy = torch.nn.functional.cross_entropy

    def recording(logits, labels, **kw):
        loss = cross_entropy(logits, labels, **kw)
        if "label_smoothing" in kw:  # the training loop's call (evaluation passes none)
            calls.append((logits.detach().double(), labels.clone(), loss.item()))
        return loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", recording)
    assert (
        main(["train", *_on(tiny_overrides, imbalanced_csv), "train.class_weights=balanced"]) == 0
    )
    run, evals, config, summary = _run(tmp_path)
    assert config["train"]["metric"] == "eval_f1" and summary["metric"] == "eval_f1"
    assert config["data"]["label_names"] == ["0", "1", "2", "3"]
    log = (run / "train.log").read_text()
    # 40 validation rows split off (stratified): 125, 25, 25 and 25 training rows are left
    assert (
        "checkpoint selection: eval_f1 (macro-F1): classes imbalanced, largest/smallest 5.00 > 1.5 (train.metric=auto)"
        in log
    )
    w = np.array([200 / (4 * 125), 200 / (4 * 25), 200 / (4 * 25), 200 / (4 * 25)])  # 0.4, 2, 2, 2
    shown = "0 125 rows x 0.400, 1 25 rows x 2.000, 2 25 rows x 2.000, 3 25 rows x 2.000"
    assert (
        f"class weights (train.class_weights=balanced, rows / (classes x class rows)): {shown}"
        in log
    )
    assert len(calls) == 12  # train.max_steps
    for logits, labels, loss in calls:
        per_row = torch.logsumexp(logits, -1) - logits.gather(1, labels[:, None])[:, 0]
        weight = torch.as_tensor(w)[labels]
        assert loss == pytest.approx(((weight * per_row).sum() / weight.sum()).item(), rel=1e-5)
    assert summary["best_step"] == max(evals, key=lambda r: r["eval_f1"])["step"]


def scripted_logits(labels: np.ndarray, i: int) -> np.ndarray:
    """Predictions whose figures disagree: the i-th evaluation's best is accuracy (and loss)
    at i=2 (0.65), MCC at i=1 (0.56 against 0 and 0.23); i=0 predicts the big class only."""
    preds = labels.copy()
    zeros, others = np.flatnonzero(labels == 0), np.flatnonzero(labels != 0)
    if i == 0:
        preds[:] = 0
    elif i == 1:
        preds[zeros[5:]] = 1
    else:
        preds[others[1:]] = 0
    return 4.0 * np.eye(4)[preds]


def test_eval_mcc_selects_the_checkpoint_with_the_best_mcc(
    tiny_overrides, imbalanced_csv, tmp_path, monkeypatch
):
    """The tiny random model predicts one class throughout (MCC 0 at every evaluation), so its
    evaluations are scripted: the real metrics of predictions on the real validation labels;
    selection, checkpoint, metrics.jsonl and summary.json are training's own."""
    module = sys.modules["lorafit.train"]  # `lorafit.train` is also the function's name
    calls = []

    def evaluate_split(model, encoded, cfg, pad_id, accelerator, prefix=None):
        calls.append(encoded)
        logits = scripted_logits(encoded.labels, min(len(calls) - 1, 2))
        return classification_metrics(logits, encoded.labels, cfg.data.label_names)

    monkeypatch.setattr(module, "evaluate_split", evaluate_split)
    assert (
        main(
            [
                "train",
                *_on(tiny_overrides, imbalanced_csv),
                "train.metric=eval_mcc",
                "train.patience=null",
            ]
        )
        == 0
    )
    run, evals, config, summary = _run(tmp_path)
    assert config["train"]["metric"] == "eval_mcc" and summary["metric"] == "eval_mcc"
    assert (
        "checkpoint selection: eval_mcc (MCC): set by train.metric=eval_mcc"
        in (run / "train.log").read_text()
    )
    assert [r["step"] for r in evals] == [4, 8, 12]
    best = max(evals, key=lambda r: r["eval_mcc"])
    assert best["step"] == 8 != max(evals, key=lambda r: r["eval_accuracy"])["step"]
    assert summary["best_step"] == 8 and summary["best_value"] == best["eval_mcc"] == pytest.approx(
        5 / 9
    )
    assert [r["is_best"] for r in evals] == [True, True, False]
    assert summary["best_eval"]["eval_precision"] == best["eval_precision"]


# ---------------------------------------------------------------- sweeps


def test_a_sweep_trains_its_trials_by_its_metric(tiny_model, small_csv, tmp_path, monkeypatch):
    from lorafit.search import load_sweep, sweep

    from .test_sweep import tiny_base, write_sweep

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    base = tiny_base(tiny_model, small_csv)
    base["train"].update(max_steps=4, metric="eval_accuracy")  # the sweep's metric wins
    path = write_sweep(
        tmp_path / "f1.yaml",
        base=base,
        dir=str(tmp_path / "sweeps"),
        metric="eval_f1",
        grid={"lora.r": [2]},
    )
    result = sweep(path)
    with open(result["leaderboard_csv"]) as f:
        (row,) = list(csv.DictReader(f))
    config = yaml.safe_load((tmp_path / row["run_dir"] / "config.yaml").read_text())
    summary = json.loads((tmp_path / row["run_dir"] / "summary.json").read_text())
    assert config["train"]["metric"] == "eval_f1" and summary["metric"] == "eval_f1"
    assert float(row["val_f1"]) == summary["best_eval"]["eval_f1"]
    assert float(row["val_mcc"]) == summary["best_eval"]["eval_mcc"]
    # the new metrics rank sweeps too; test_accuracy keeps checkpoints by eval_accuracy
    for metric, kept in [
        ("eval_mcc", "eval_mcc"),
        ("eval_recall", "eval_recall"),
        ("test_accuracy", "eval_accuracy"),
    ]:
        plan = load_sweep(
            write_sweep(tmp_path / "m.yaml", base=base, metric=metric, grid={"lora.r": [2]})
        )
        assert plan.trials[0].config.train.metric == kept, metric
