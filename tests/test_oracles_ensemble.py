"""Independent oracle for ensembles (issue 30): fitted weights against a brute-force search of
the simplex, and the ensemble's accuracy and macro-F1 against scikit-learn and a hand count.

Three members of clearly different quality (good, middling, noise) are written as the
probability files `lorafit ensemble` reads back (the run directory's contract), so the
weighted ensemble runs end to end on arrays this file chose; every expected number is
computed here with numpy (log-likelihood, simplex grid, weighted mean) or scikit-learn.
"""

from __future__ import annotations

import glob
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from lorafit.ensemble import ensemble, fit_weights
from lorafit.metrics import classification_metrics
from lorafit.train import train

from .conftest import AG_LABELS

CLASSES = 4
STEP = 0.01  # the brute-force grid: every (a, b, c) on the simplex in steps of 1/100


def members_probabilities(labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """good (right on ~80% of rows, confident), middling (~55%), noise; float32, rows sum to 1."""
    rng = np.random.default_rng(seed)
    out = []
    for right, sharpness in ((0.8, 6.0), (0.55, 3.0), (0.0, 1.0)):
        logits = rng.normal(size=(len(labels), CLASSES))
        hit = rng.random(len(labels)) < right
        logits[np.arange(len(labels))[hit], labels[hit]] += sharpness
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        out.append(p.astype(np.float32))
    return out


def mean_log_likelihood(probs: list[np.ndarray], labels: np.ndarray, w: np.ndarray) -> float:
    rows = np.arange(len(labels))
    mixed = sum(wm * p[rows, labels].astype(np.float64) for wm, p in zip(w, probs))
    return float(np.log(mixed).mean())


def brute_force_weights(probs: list[np.ndarray], labels: np.ndarray) -> tuple[np.ndarray, float]:
    n = round(1 / STEP)
    best, best_w = -np.inf, None
    for i, j in itertools.product(range(n + 1), repeat=2):
        if i + j <= n:
            w = np.array([i, j, n - i - j]) / n
            value = mean_log_likelihood(probs, labels, w)
            if value > best:
                best, best_w = value, w
    return best_w, best


def hand_macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    scores = []
    for c in range(CLASSES):
        tp = np.sum((predicted == c) & (labels == c))
        fp = np.sum((predicted == c) & (labels != c))
        fn = np.sum((predicted != c) & (labels == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def test_fitted_weights_are_the_simplex_optimum_and_sum_to_one():
    labels = np.random.default_rng(3).integers(0, CLASSES, 400)
    probs = members_probabilities(labels, seed=4)
    w = fit_weights(probs, labels)
    grid_w, grid_best = brute_force_weights(probs, labels)
    assert w.sum() == pytest.approx(1.0, abs=1e-9) and np.all(w >= 0)
    # the optimum is inside the simplex (no member is useless), so a grid point is close by
    assert 0.05 < grid_w[1] < 0.95 and grid_w[0] > grid_w[1] > grid_w[2]
    np.testing.assert_allclose(w, grid_w, atol=2 * STEP)
    assert mean_log_likelihood(probs, labels, w) >= grid_best - 1e-9


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def runs(tiny_model, small_csv, tmp_path_factory) -> tuple[list[Path], Path, Path]:
    """Three tiny finished runs sharing one validation file, and a labelled input file."""
    rows = pd.read_csv(small_csv)
    folder = tmp_path_factory.mktemp("ensemble-oracle")
    rows.iloc[:64].to_csv(folder / "train.csv", index=False)
    rows.iloc[64:124].to_csv(folder / "val.csv", index=False)
    rows.iloc[124:224].to_csv(folder / "input.csv", index=False)
    base = [
        AG_LABELS,
        f"model.name={tiny_model}",
        f"data.train={folder / 'train.csv'}",
        f"data.validation={folder / 'val.csv'}",
        "model.max_length=64",
        "train.max_steps=2",
        "train.eval_every=2",
        "train.batch_size=16",
        "train.mixed_precision=no",
        "log.progress=false",
        f"run.dir={folder / 'runs'}",
    ]
    members = [
        train(None, [*base, f"train.lr={lr}", f"run.name=m{i}"])
        for i, lr in enumerate((1e-3, 3e-3, 1e-2))
    ]
    return members, folder / "val.csv", folder / "input.csv"


def _replace_saved(run: Path, stem: str, probs: np.ndarray) -> None:
    (path,) = glob.glob(str(run / "predictions" / f"{stem}-*.csv"))
    frame = pd.DataFrame(probs, columns=[f"prob_{i}" for i in range(CLASSES)])
    frame.insert(0, "Label", probs.argmax(-1))
    frame.insert(0, "ID", np.arange(len(probs)))
    frame.to_csv(path, index=False, float_format="%.9g")  # float32 round-trips exactly


def test_weighted_ensemble_end_to_end_against_brute_force_and_sklearn(runs, tmp_path):
    members, val_csv, input_csv = runs
    val_labels = pd.read_csv(val_csv).label.to_numpy().copy()
    input_labels = pd.read_csv(input_csv).label.to_numpy().copy()
    # a first call predicts and saves every member's probabilities; they are then replaced
    ensemble(members, str(input_csv), str(tmp_path / "first.csv"), method="weighted", device="cpu")
    val_probs = members_probabilities(val_labels, seed=10)
    input_probs = members_probabilities(input_labels, seed=11)
    for run, v, p in zip(members, val_probs, input_probs):
        _replace_saved(run, "validation", v)
        _replace_saved(run, input_csv.stem, p)

    result = ensemble(
        members, str(input_csv), str(tmp_path / "sub.csv"), method="weighted", device="cpu"
    )

    weights = np.array([m["weight"] for m in result["members"]])
    grid_w, grid_best = brute_force_weights(val_probs, val_labels)
    assert weights.sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(weights, grid_w, atol=2 * STEP)
    assert weights[0] > weights[1] > weights[2]
    v = result["validation"]
    assert v["rows"] == len(val_labels)
    assert v["log_likelihood"] == pytest.approx(
        mean_log_likelihood(val_probs, val_labels, weights), abs=1e-6
    )
    assert v["log_likelihood"] >= grid_best - 1e-6
    assert v["log_likelihood_uniform"] == pytest.approx(
        mean_log_likelihood(val_probs, val_labels, np.full(3, 1 / 3)), abs=1e-6
    )
    val_mixed = sum(w * p.astype(np.float64) for w, p in zip(weights, val_probs))
    assert v["accuracy"] == pytest.approx(accuracy_score(val_labels, val_mixed.argmax(1)))

    mixed = sum(w * p.astype(np.float64) for w, p in zip(weights, input_probs))
    predicted = mixed.argmax(1)
    assert result["accuracy"] == pytest.approx(accuracy_score(input_labels, predicted))
    for m, p in zip(result["members"], input_probs):
        assert m["accuracy"] == pytest.approx(accuracy_score(input_labels, p.argmax(1)))
    # integer labels in the training file: the submission writes class ids
    assert pd.read_csv(tmp_path / "sub.csv").Label.tolist() == predicted.tolist()
    names = AG_LABELS.split("=")[1].strip("[]").split(",")

    # lorafit's metrics of the ensemble's probabilities: scikit-learn's and a hand count agree
    metrics = classification_metrics(np.log(mixed), input_labels, names)
    macro_f1 = f1_score(
        input_labels, predicted, average="macro", labels=list(range(CLASSES)), zero_division=0
    )
    assert metrics["accuracy"] == pytest.approx(accuracy_score(input_labels, predicted))
    assert (
        metrics["macro_f1"]
        == pytest.approx(macro_f1)
        == pytest.approx(hand_macro_f1(input_labels, predicted))
    )
