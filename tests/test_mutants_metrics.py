"""metrics.py's text and its two squashing functions, pinned against text written out by hand
and against numpy (mutation testing: `scripts/mutation.sh metrics`).

The rendering is what `lorafit evaluate`, the end of `lorafit train` and the training log
print: a changed column, digit or label is a changed contract, so every line is compared
whole. The metric dicts are written by hand here, not computed by metrics.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from lorafit.metrics import format_metrics, sigmoid, softmax


def test_softmax_rows_against_numpy_including_large_logits():
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 0.0], [-5.0, 0.0, 5.0]])
    shifted = logits - logits.max(axis=1, keepdims=True)  # the stable form, by hand
    expected = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    got = softmax(logits)
    assert got.dtype == np.float32 and got.shape == (3, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
    assert got[1, 0] == pytest.approx(0.5) and got[1, 2] == pytest.approx(0.0, abs=1e-30)


def test_sigmoid_against_numpy():
    logits = np.array([[-30.0, -1.0, 0.0], [1.0, 4.0, 30.0]])
    got = sigmoid(logits)
    assert got.dtype == np.float32 and got.shape == (2, 3)
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-logits)), rtol=1e-6, atol=1e-12)


def test_classification_text_line_by_line():
    m = {
        "task": "classification",
        "rows": 7,
        "accuracy": 0.714285,
        "macro_f1": 0.7,
        "loss": 0.61234,
        "mcc": 0.56789,
        "macro_precision": 0.72222,
        "macro_recall": 0.70001,
        "label_names": ["ham", "spam or scam texts"],
        "per_class": {
            "ham": {"precision": 0.8, "recall": 0.66666, "f1": 0.72727, "support": 3},
            "spam or scam texts": {"precision": 0.6, "recall": 0.75, "f1": 0.66667, "support": 4},
        },
        "confusion_matrix": [[2, 1], [1, 3]],
    }
    # the first column is as wide as the longest class name (18), at least 10
    expected = [
        "rows 7   accuracy 0.7143   macro-F1 0.7000   loss 0.6123",
        "MCC 0.5679   macro precision 0.7222   macro recall 0.7000",
        "",
        "class              precision  recall     f1  support",
        "ham                   0.8000  0.6667 0.7273        3",
        "spam or scam texts    0.6000  0.7500 0.6667        4",
        "",
        "confusion matrix (rows = true, columns = predicted)",
        # column heads: the first 9 characters of each name, right-aligned in 10
        "                         ham spam or s",
        "ham                        2         1",
        "spam or scam texts         1         3",
    ]
    assert format_metrics(m).split("\n") == expected


def test_classification_text_with_short_names_keeps_ten_columns():
    m = {
        "task": "classification",
        "rows": 2,
        "accuracy": 1.0,
        "macro_f1": 1.0,
        "loss": 0.0,
        "mcc": 1.0,
        "macro_precision": 1.0,
        "macro_recall": 1.0,
        "label_names": ["a", "b"],
        "per_class": {
            "a": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
            "b": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
        },
        "confusion_matrix": [[1, 0], [0, 1]],
    }
    lines = format_metrics(m).split("\n")
    assert lines[3] == "class      precision  recall     f1  support"
    assert lines[4] == "a             1.0000  1.0000 1.0000        1"
    assert lines[8:] == [
        "                   a         b",
        "a                  1         0",
        "b                  0         1",
    ]


def test_regression_text_line_by_line():
    m = {
        "task": "regression",
        "rows": 1500,
        "pearson": 0.85821,
        "spearman": 0.85569,
        "r2": 0.7212,
        "mse": 0.53211,
        "rmse": 0.72946,
        "mae": 0.55556,
        "label_names": ["similarity"],
        "label_mean": 2.36418,
        "label_std": 1.49999,
        "prediction_mean": 2.40004,
        "prediction_std": 1.30002,
    }
    assert format_metrics(m).split("\n") == [
        "rows 1500   Pearson 0.8582   Spearman 0.8557   R^2 0.7212",
        "MSE 0.5321   RMSE 0.7295   MAE 0.5556",
        "similarity: true mean 2.3642 (sd 1.5000), predicted mean 2.4000 (sd 1.3000)",
    ]


def test_multilabel_text_line_by_line():
    m = {
        "task": "multi_label",
        "rows": 40,
        "macro_f1": 0.48561,
        "micro_f1": 0.59761,
        "loss": 0.09123,
        "micro_precision": 0.61,
        "micro_recall": 0.58555,
        "exact_match": 0.425,
        "labels_per_row": 1.175,
        "predicted_per_row": 1.0249,
        "label_names": ["joy", "admiration"],
        "per_class": {
            "joy": {
                "precision": 0.5,
                "recall": 0.25,
                "f1": 0.33333,
                "support": 8,
                "threshold": 0.3,
            },
            "admiration": {
                "precision": 0.7,
                "recall": 0.875,
                "f1": 0.77778,
                "support": 16,
                "threshold": 0.455,
            },
        },
    }
    assert format_metrics(m).split("\n") == [
        "rows 40   macro-F1 0.4856   micro-F1 0.5976   loss 0.0912",
        "micro precision 0.6100   micro recall 0.5856   exact match 0.4250   labels a row: true 1.18, predicted 1.02",
        "",
        "label      precision  recall     f1  support  threshold",
        "joy           0.5000  0.2500 0.3333        8       0.30",
        "admiration    0.7000  0.8750 0.7778       16       0.46",
    ]


def test_multilabel_text_keeps_ten_columns_for_short_names():
    row = {"precision": 1.0, "recall": 0.5, "f1": 0.66667, "support": 2, "threshold": 0.5}
    m = {
        "task": "multi_label",
        "rows": 2,
        "macro_f1": 0.5,
        "micro_f1": 0.5,
        "loss": 0.1,
        "micro_precision": 1.0,
        "micro_recall": 0.5,
        "exact_match": 0.5,
        "labels_per_row": 1.0,
        "predicted_per_row": 0.5,
        "label_names": ["joy", "sad"],
        "per_class": {"joy": row, "sad": row},
    }
    lines = format_metrics(m).split("\n")
    assert lines[3] == "label      precision  recall     f1  support  threshold"
    assert lines[4] == "joy           1.0000  0.5000 0.6667        2       0.50"


@pytest.mark.parametrize(
    "thresholds, shown",
    [([0.5, 0.5, 0.5], "threshold 0.5"), ([0.7, 0.25, 0.5, 0.25], "thresholds 0.25-0.7")],
)
def test_multilabel_headline_shows_one_threshold_or_their_range(thresholds, shown):
    from lorafit.metrics import headline

    m = {
        "task": "multi_label",
        "loss": 0.12345,
        "macro_f1": 0.4,
        "micro_f1": 0.55556,
        "thresholds": thresholds,
    }
    assert headline(m) == f"loss 0.1235 macro-F1 0.4000 micro-F1 0.5556 ({shown})"
