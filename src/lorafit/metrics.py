"""Metrics from a model's outputs and the labels (scikit-learn and scipy do the arithmetic) for
both task shapes, and what the training labels decide: the checkpoint metric of
train.metric=auto, balanced class weights.

    m = task_metrics("classification", logits, labels, ["World", "Sports", ...])
    m = task_metrics("regression", outputs, values, ["score"])   # outputs: [rows, 1]
    eval_values(m)   # {"eval_loss": ..., "eval_accuracy": ...} or {..., "eval_pearson": ...}
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from lorafit.config import Config

log = logging.getLogger("lorafit")

#: train.metric -> what it measures (for the log)
METRIC_NAMES = {
    "eval_accuracy": "accuracy",
    "eval_f1": "macro-F1",
    "eval_mcc": "MCC",
    "eval_precision": "macro precision",
    "eval_recall": "macro recall",
    "eval_loss": "loss",
    "eval_pearson": "Pearson correlation",
    "eval_spearman": "Spearman correlation",
    "eval_macro_f1": "macro-F1 over the labels",
    "eval_micro_f1": "micro-F1 over the labels",
}
#: train.metric=auto: the training split is imbalanced when its largest class has more than
#: this many times the rows of its smallest; accuracy then rewards predicting the big classes,
#: so macro-F1 (every class counts alike) selects the checkpoint instead
IMBALANCE_RATIO = 1.5


def softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=-1).numpy()


def classification_metrics(logits: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict:
    """Loss, accuracy, macro-F1, MCC, macro precision and recall, per-class
    precision/recall/F1/support and the confusion matrix.

    Macro figures are the unweighted means over every class of `label_names` (a class absent
    from both labels and predictions counts as 0). MCC (Matthews correlation, CoLA's metric)
    is in [-1, 1]; 0 when one class is predicted for every row.
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        matthews_corrcoef,
        precision_recall_fscore_support,
    )

    classes = list(range(len(label_names)))
    preds = logits.argmax(-1)
    loss = F.cross_entropy(
        torch.as_tensor(logits, dtype=torch.float32), torch.as_tensor(labels)
    ).item()
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=classes, zero_division=0)
    return {
        "task": "classification",
        "rows": int(len(labels)),
        "loss": loss,
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(
            f1_score(labels, preds, labels=classes, average="macro", zero_division=0)
        ),
        "mcc": float(matthews_corrcoef(labels, preds)),
        "macro_precision": float(np.mean(p)),
        "macro_recall": float(np.mean(r)),
        "label_names": list(label_names),
        "per_class": {
            name: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": confusion_matrix(labels, preds, labels=classes).tolist(),
    }


def regression_metrics(predictions: np.ndarray, labels: np.ndarray, name: str = "value") -> dict:
    """MSE (the loss), RMSE, MAE, Pearson and Spearman correlation and R^2 of predicted values
    against the true ones.

    Spearman is Pearson on the ranks (ties get their average rank, as scipy's). A correlation
    is 0 when the predictions (or the labels) are all alike, where it is undefined; R^2 is
    1 - squared error / the labels' variance (0 for constant labels).
    """
    from scipy.stats import rankdata

    pred = np.asarray(predictions, dtype=np.float64).reshape(-1)
    true = np.asarray(labels, dtype=np.float64).reshape(-1)
    error = pred - true
    mse = float(np.mean(error**2))
    spread = float(np.sum((true - true.mean()) ** 2))
    return {
        "task": "regression",
        "rows": int(len(true)),
        "loss": mse,
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(error))),
        "pearson": _correlation(pred, true),
        "spearman": _correlation(rankdata(pred), rankdata(true)),
        "r2": 1.0 - float(np.sum(error**2)) / spread if spread > 0 else 0.0,
        "label_names": [name],
        "label_mean": float(true.mean()),
        "label_std": float(true.std()),
        "prediction_mean": float(pred.mean()),
        "prediction_std": float(pred.std()),
        # for the scatter plot (lorafit.plots): every row, or an even spread of SCATTER_POINTS
        "points": _points(true, pred),
    }


#: an evaluation keeps at most this many (true, predicted) pairs for its scatter plot
SCATTER_POINTS = 5000


def _points(true: np.ndarray, pred: np.ndarray) -> dict:
    idx = (
        np.linspace(0, len(true) - 1, SCATTER_POINTS).round().astype(int)
        if len(true) > SCATTER_POINTS
        else slice(None)
    )
    return {
        "true": [round(float(v), 5) for v in true[idx]],
        "predicted": [round(float(v), 5) for v in pred[idx]],
    }


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r of two vectors; 0 when either is constant (undefined there)."""
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / norm) if norm > 0 else 0.0


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return torch.sigmoid(torch.as_tensor(logits, dtype=torch.float32)).numpy()


#: the thresholds a multi-label run's tuning tries: 0.01, 0.02, ..., 0.99
THRESHOLD_GRID = np.round(np.arange(1, 100) / 100, 2)


def _f1_counts(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives per label (0/1 arrays [rows, labels])."""
    return (pred & true).sum(0), (pred & ~true).sum(0), (~pred & true).sum(0)


def _f1(tp, fp, fn) -> np.ndarray:
    """F1 = 2tp / (2tp + fp + fn); 0 where a label is neither held nor predicted (scikit-learn's
    zero_division=0)."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def tune_thresholds(
    probs: np.ndarray, labels: np.ndarray, how="global", average: str = "macro"
) -> np.ndarray:
    """The decision threshold of each label ([labels]), from `THRESHOLD_GRID`.

    `how`: a number (that threshold for every label); `global` (the one threshold whose
    `average` F1, macro or micro, is highest); `per_label` (each label's own best F1, which
    is also the best macro-F1). Ties go to the lowest threshold.
    """
    k = probs.shape[1]
    if not isinstance(how, str):
        return np.full(k, float(how))
    true = labels > 0.5
    per_threshold = []  # [grid, labels] F1 per label, or [grid] micro-F1
    for t in THRESHOLD_GRID:
        tp, fp, fn = _f1_counts(probs >= t, true)
        per_threshold.append(
            _f1(tp.sum(), fp.sum(), fn.sum())
            if average == "micro" and how == "global"
            else _f1(tp, fp, fn)
        )
    scores = np.asarray(per_threshold)
    if how == "per_label":
        return THRESHOLD_GRID[scores.argmax(axis=0)]
    overall = scores if scores.ndim == 1 else scores.mean(axis=1)
    return np.full(k, THRESHOLD_GRID[overall.argmax()])


def multilabel_metrics(
    probs: np.ndarray, labels: np.ndarray, label_names: list[str], thresholds
) -> dict:
    """Micro- and macro-F1, micro precision and recall, exact-match accuracy, per-label
    precision / recall / F1 / support, and the binary cross-entropy, of sigmoid probabilities
    [rows, labels] decided at `thresholds` (one per label) against 0/1 labels."""
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_recall_fscore_support,
        precision_score,
        recall_score,
    )

    true = (np.asarray(labels) > 0.5).astype(np.int64)
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (probs.shape[1],))
    pred = (probs >= thresholds[None, :]).astype(np.int64)
    p, r, f, support = precision_recall_fscore_support(true, pred, average=None, zero_division=0)
    clipped = torch.as_tensor(np.clip(probs, 1e-7, 1 - 1e-7), dtype=torch.float64)
    loss = F.binary_cross_entropy(clipped, torch.as_tensor(true, dtype=torch.float64)).item()
    return {
        "task": "multi_label",
        "rows": int(len(true)),
        "loss": loss,
        "micro_f1": float(f1_score(true, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(true, pred, average="macro", zero_division=0)),
        "micro_precision": float(precision_score(true, pred, average="micro", zero_division=0)),
        "micro_recall": float(recall_score(true, pred, average="micro", zero_division=0)),
        "exact_match": float(accuracy_score(true, pred)),
        "labels_per_row": float(true.sum(1).mean()),
        "predicted_per_row": float(pred.sum(1).mean()),
        "thresholds": [float(t) for t in thresholds],
        "label_names": list(label_names),
        "per_class": {
            name: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(support[i]),
                "threshold": float(thresholds[i]),
            }
            for i, name in enumerate(label_names)
        },
    }


def task_metrics(
    task: str, outputs: np.ndarray, labels: np.ndarray, label_names: list[str], thresholds=None
) -> dict:
    """The metrics of `task`: classification from logits [rows, classes] (or log-probabilities),
    regression from the predicted values [rows, 1], multi-label from logits [rows, labels]
    decided at `thresholds` (one per label)."""
    if task == "regression":
        return regression_metrics(np.asarray(outputs)[:, 0], labels, label_names[0])
    if task == "multi_label":
        return multilabel_metrics(sigmoid(outputs), labels, label_names, thresholds)
    return classification_metrics(outputs, labels, label_names)


def eval_values(m: dict) -> dict:
    """The metrics of an evaluation as metrics.jsonl's eval row keys (train.metric's choices)."""
    if m.get("task") == "regression":
        return {
            "eval_loss": m["loss"],
            "eval_pearson": m["pearson"],
            "eval_spearman": m["spearman"],
        }
    if m.get("task") == "multi_label":
        return {
            "eval_loss": m["loss"],
            "eval_macro_f1": m["macro_f1"],
            "eval_micro_f1": m["micro_f1"],
            "eval_exact_match": m["exact_match"],
        }
    return {
        "eval_loss": m["loss"],
        "eval_accuracy": m["accuracy"],
        "eval_f1": m["macro_f1"],
        "eval_mcc": m["mcc"],
        "eval_precision": m["macro_precision"],
        "eval_recall": m["macro_recall"],
    }


#: per task, the figures a table of results shows: (key of a metrics dict, title, key of the
#: eval row in metrics.jsonl)
FIGURES = {
    "classification": [
        ("accuracy", "accuracy", "eval_accuracy"),
        ("macro_f1", "macro-F1", "eval_f1"),
        ("loss", "loss", "eval_loss"),
    ],
    "regression": [
        ("pearson", "Pearson", "eval_pearson"),
        ("spearman", "Spearman", "eval_spearman"),
        ("loss", "MSE", "eval_loss"),
    ],
    "multi_label": [
        ("macro_f1", "macro-F1", "eval_macro_f1"),
        ("micro_f1", "micro-F1", "eval_micro_f1"),
        ("loss", "loss", "eval_loss"),
    ],
}


def headline(m: dict) -> str:
    """One line of an evaluation's main figures (the log's eval lines)."""
    if m.get("task") == "regression":
        return f"loss (MSE) {m['loss']:.4f} Pearson {m['pearson']:.4f} Spearman {m['spearman']:.4f}"
    if m.get("task") == "multi_label":
        shown = sorted(set(m["thresholds"]))
        at = (
            f"threshold {shown[0]:g}"
            if len(shown) == 1
            else f"thresholds {shown[0]:g}-{shown[-1]:g}"
        )
        return (
            f"loss {m['loss']:.4f} macro-F1 {m['macro_f1']:.4f} micro-F1 {m['micro_f1']:.4f} ({at})"
        )
    return f"loss {m['loss']:.4f} accuracy {m['accuracy']:.4f} F1 {m['macro_f1']:.4f} MCC {m['mcc']:.4f}"


def format_metrics(m: dict) -> str:
    """Accuracy, macro-F1, MCC, macro precision/recall, per-class table and confusion matrix as
    text; a regression's figures and the spread of predicted and true values."""
    if m.get("task") == "regression":
        return "\n".join(
            [
                f"rows {m['rows']}   Pearson {m['pearson']:.4f}   Spearman {m['spearman']:.4f}   R^2 {m['r2']:.4f}",
                f"MSE {m['mse']:.4f}   RMSE {m['rmse']:.4f}   MAE {m['mae']:.4f}",
                f"{m['label_names'][0]}: true mean {m['label_mean']:.4f} (sd {m['label_std']:.4f}), "
                f"predicted mean {m['prediction_mean']:.4f} (sd {m['prediction_std']:.4f})",
            ]
        )
    if m.get("task") == "multi_label":
        return _format_multilabel(m)
    names = m["label_names"]
    width = max(10, *(len(n) for n in names))
    lines = [
        f"rows {m['rows']}   accuracy {m['accuracy']:.4f}   macro-F1 {m['macro_f1']:.4f}   loss {m['loss']:.4f}",
        f"MCC {m['mcc']:.4f}   macro precision {m['macro_precision']:.4f}   macro recall {m['macro_recall']:.4f}",
        "",
        f"{'class':<{width}} precision  recall     f1  support",
    ]
    for n in names:
        c = m["per_class"][n]
        lines.append(
            f"{n:<{width}} {c['precision']:9.4f} {c['recall']:7.4f} {c['f1']:6.4f} {c['support']:8d}"
        )
    lines += ["", "confusion matrix (rows = true, columns = predicted)"]
    lines.append(" " * width + "".join(f"{n[:9]:>10}" for n in names))
    for n, row in zip(names, m["confusion_matrix"]):
        lines.append(f"{n:<{width}}" + "".join(f"{v:>10d}" for v in row))
    return "\n".join(lines)


def _format_multilabel(m: dict) -> str:
    names = m["label_names"]
    width = max(10, *(len(n) for n in names))
    lines = [
        f"rows {m['rows']}   macro-F1 {m['macro_f1']:.4f}   micro-F1 {m['micro_f1']:.4f}   loss {m['loss']:.4f}",
        f"micro precision {m['micro_precision']:.4f}   micro recall {m['micro_recall']:.4f}   "
        f"exact match {m['exact_match']:.4f}   labels a row: true {m['labels_per_row']:.2f}, predicted {m['predicted_per_row']:.2f}",
        "",
        f"{'label':<{width}} precision  recall     f1  support  threshold",
    ]
    for n in names:
        c = m["per_class"][n]
        lines.append(
            f"{n:<{width}} {c['precision']:9.4f} {c['recall']:7.4f} {c['f1']:6.4f} {c['support']:8d} {c['threshold']:10.2f}"
        )
    return "\n".join(lines)


def class_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows of each class id 0..n_classes-1 (0 for a class without rows)."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)


def imbalance_ratio(counts: np.ndarray) -> float:
    """Rows of the largest class over rows of the smallest (inf when a class has none)."""
    return float(counts.max() / counts.min()) if counts.min() > 0 else float("inf")


def resolve_metric(cfg: Config, labels: np.ndarray) -> str:
    """Settle train.metric=auto from the training labels, in place; log what selects and why.

    auto is eval_accuracy on balanced classes and eval_f1 (macro-F1) when the largest class
    has more than IMBALANCE_RATIO times the rows of the smallest. Written into `cfg` before
    the run's config.yaml is saved, so a resume and later commands read the choice.
    """
    metric = cfg.train.metric
    if metric == "auto" and cfg.task == "regression":
        metric, why = "eval_pearson", "a regression (train.metric=auto)"
    elif metric == "auto" and cfg.task == "multi_label":
        metric, why = (
            "eval_macro_f1",
            "a multi-label run: every label counts alike (train.metric=auto)",
        )
    elif metric == "auto":
        ratio = imbalance_ratio(class_counts(labels, len(cfg.data.label_names)))
        imbalanced = ratio > IMBALANCE_RATIO
        metric = "eval_f1" if imbalanced else "eval_accuracy"
        why = (
            f"classes {'imbalanced' if imbalanced else 'balanced'}, largest/smallest {ratio:.2f} "
            f"{'>' if imbalanced else '<='} {IMBALANCE_RATIO} (train.metric=auto)"
        )
    else:
        why = f"set by train.metric={metric}"
    cfg.train.metric = metric
    log.info("checkpoint selection: %s (%s): %s", metric, METRIC_NAMES[metric], why)
    return metric


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn's 'balanced' weights: rows / (n_classes x rows of the class).

    A class without training rows gets 0: no target is ever of that class, so its weight is
    never used (scikit-learn refuses such a class instead).
    """
    counts = class_counts(labels, n_classes)
    return np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
