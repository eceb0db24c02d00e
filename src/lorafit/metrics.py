"""Classification metrics from logits and labels (scikit-learn does the arithmetic), and what
the training labels decide: the checkpoint metric of train.metric=auto, balanced class weights."""

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


def format_metrics(m: dict) -> str:
    """Accuracy, macro-F1, MCC, macro precision/recall, per-class table and confusion matrix as text."""
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
    if metric == "auto":
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
