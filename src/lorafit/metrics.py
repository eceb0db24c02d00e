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
    loss = F.cross_entropy(torch.as_tensor(logits, dtype=torch.float32), torch.as_tensor(labels)).item()
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=classes, zero_division=0)
    return {
        "task": "classification",
        "rows": int(len(labels)),
        "loss": loss,
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, labels=classes, average="macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(labels, preds)),
        "macro_precision": float(np.mean(p)),
        "macro_recall": float(np.mean(r)),
        "label_names": list(label_names),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
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
    idx = np.linspace(0, len(true) - 1, SCATTER_POINTS).round().astype(int) if len(true) > SCATTER_POINTS else slice(None)
    return {"true": [round(float(v), 5) for v in true[idx]], "predicted": [round(float(v), 5) for v in pred[idx]]}


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r of two vectors; 0 when either is constant (undefined there)."""
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / norm) if norm > 0 else 0.0


def task_metrics(task: str, outputs: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict:
    """The metrics of `task`: classification from logits [rows, classes] (or log-probabilities),
    regression from the predicted values [rows, 1]."""
    if task == "regression":
        return regression_metrics(np.asarray(outputs)[:, 0], labels, label_names[0])
    return classification_metrics(outputs, labels, label_names)


def eval_values(m: dict) -> dict:
    """The metrics of an evaluation as metrics.jsonl's eval row keys (train.metric's choices)."""
    if m.get("task") == "regression":
        return {"eval_loss": m["loss"], "eval_pearson": m["pearson"], "eval_spearman": m["spearman"]}
    return {
        "eval_loss": m["loss"], "eval_accuracy": m["accuracy"], "eval_f1": m["macro_f1"],
        "eval_mcc": m["mcc"], "eval_precision": m["macro_precision"], "eval_recall": m["macro_recall"],
    }


#: per task, the figures a table of results shows: (key of a metrics dict, title); the eval
#: row's key is `EVAL_KEYS[key]`
FIGURES = {
    "classification": [("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("loss", "loss")],
    "regression": [("pearson", "Pearson"), ("spearman", "Spearman"), ("loss", "MSE")],
}
EVAL_KEYS = {
    "loss": "eval_loss", "accuracy": "eval_accuracy", "macro_f1": "eval_f1", "mcc": "eval_mcc",
    "macro_precision": "eval_precision", "macro_recall": "eval_recall", "pearson": "eval_pearson",
    "spearman": "eval_spearman",
}


def headline(m: dict) -> str:
    """One line of an evaluation's main figures (the log's eval lines)."""
    if m.get("task") == "regression":
        return f"loss (MSE) {m['loss']:.4f} Pearson {m['pearson']:.4f} Spearman {m['spearman']:.4f}"
    return f"loss {m['loss']:.4f} accuracy {m['accuracy']:.4f} F1 {m['macro_f1']:.4f} MCC {m['mcc']:.4f}"


def format_metrics(m: dict) -> str:
    """Accuracy, macro-F1, MCC, macro precision/recall, per-class table and confusion matrix as
    text; a regression's figures and the spread of predicted and true values."""
    if m.get("task") == "regression":
        return "\n".join([
            f"rows {m['rows']}   Pearson {m['pearson']:.4f}   Spearman {m['spearman']:.4f}   R^2 {m['r2']:.4f}",
            f"MSE {m['mse']:.4f}   RMSE {m['rmse']:.4f}   MAE {m['mae']:.4f}",
            f"{m['label_names'][0]}: true mean {m['label_mean']:.4f} (sd {m['label_std']:.4f}), "
            f"predicted mean {m['prediction_mean']:.4f} (sd {m['prediction_std']:.4f})",
        ])
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
        lines.append(f"{n:<{width}} {c['precision']:9.4f} {c['recall']:7.4f} {c['f1']:6.4f} {c['support']:8d}")
    lines += ["", "confusion matrix (rows = true, columns = predicted)"]
    lines.append(" " * width + "".join(f"{n[:9]:>10}" for n in names))
    for n, row in zip(names, m["confusion_matrix"]):
        lines.append(f"{n:<{width}}" + "".join(f"{v:>10d}" for v in row))
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
