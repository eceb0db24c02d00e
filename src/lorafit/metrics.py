"""Classification metrics from logits and labels (scikit-learn does the arithmetic)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=-1).numpy()


def classification_metrics(logits: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict:
    """Loss, accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
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
        "label_names": list(label_names),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": confusion_matrix(labels, preds, labels=classes).tolist(),
    }


def format_metrics(m: dict) -> str:
    """Accuracy, macro-F1, per-class table and confusion matrix as text."""
    names = m["label_names"]
    width = max(10, *(len(n) for n in names))
    lines = [
        f"rows {m['rows']}   accuracy {m['accuracy']:.4f}   macro-F1 {m['macro_f1']:.4f}   loss {m['loss']:.4f}",
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
