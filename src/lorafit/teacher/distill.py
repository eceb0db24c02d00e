"""The distillation loss, and what the training loop calls to set distillation up.

With w = `train.distill_weight` and T = `train.distill_temperature`, per task:

    classification: (1 - w) * CE  + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))
    multi_label:    (1 - w) * BCE + w * T^2 * mean over labels of
                                    KL(Bernoulli(sigmoid(teacher / T)) || Bernoulli(sigmoid(student / T)))
    regression:     (1 - w) * MSE(student, label) + w * MSE(student, teacher)   (T unused)

The T^2 keeps the soft term's gradients on the scale of the hard term's as T grows (Hinton et
al., 2015). Within a batch, the hard term is the mean over its LABELLED rows (label smoothing
as in `train.label_smoothing` for classes; 0 when the batch has none) and the soft term the
mean over ALL its rows, so an unlabelled row (`unlabeled.labelled_rows`: -100, or NaN for a
value or a multi-label row) contributes only to the soft term, and w keeps its meaning
whatever share of the batch is unlabelled. A multi-label teacher is stored as the log-odds of
its probability per label; a regression teacher as its value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from lorafit.teacher.unlabeled import labelled_rows

if TYPE_CHECKING:
    from lorafit.teacher.logits import Teacher

log = logging.getLogger("lorafit")


def distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor,
    weight: float,
    temperature: float,
    label_smoothing: float = 0.0,
    task: str = "classification",
) -> torch.Tensor:
    """(1 - w) * the hard loss over the labelled rows + w * the soft loss over all rows (above).

    Classification: `teacher_logits` may be logits or log-probabilities (the same distribution
    at any T). Multi-label: the teacher's log-odds per label. Regression: its values [rows, 1].
    Rows without a label (`labelled_rows`) count in the soft term only.
    """
    student = student_logits.float()
    teacher = teacher_logits.float()
    labelled = labelled_rows(labels)
    t = float(temperature)
    if not bool(labelled.any()):
        hard = student.sum() * 0.0  # keeps the graph (and the device) when a batch has no labels
    elif task == "regression":
        hard = F.mse_loss(student[labelled][:, 0], labels[labelled].float())
    elif task == "multi_label":
        hard = F.binary_cross_entropy_with_logits(student[labelled], labels[labelled].float())
    else:
        hard = F.cross_entropy(student[labelled], labels[labelled], label_smoothing=label_smoothing)
    if task == "regression":  # the teacher's value is the target: no distribution to soften
        return (1.0 - weight) * hard + weight * F.mse_loss(student[:, 0], teacher[:, 0])
    if task == "multi_label":  # each label a yes/no: the Bernoulli KL, mean over rows and labels
        soft = _bernoulli_kl(teacher / t, student / t).mean()
    else:
        log_p_student = F.log_softmax(student / t, dim=-1)
        log_p_teacher = F.log_softmax(teacher / t, dim=-1)
        soft = (
            F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="none").sum(-1).mean()
        )
    return (1.0 - weight) * hard + weight * t * t * soft


def _bernoulli_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(sigmoid(teacher)) || Bernoulli(sigmoid(student))) per entry, from log-odds
    (stable at any magnitude: log-sigmoids, never log of a rounded probability)."""
    p = torch.sigmoid(teacher_logits)
    log_p, log_q = F.logsigmoid(teacher_logits), F.logsigmoid(student_logits)
    log_1p, log_1q = F.logsigmoid(-teacher_logits), F.logsigmoid(-student_logits)
    return p * (log_p - log_q) + (1 - p) * (log_1p - log_1q)


@dataclass
class Distillation:
    """The teacher's log-probabilities for every training row, and the loss that uses them."""

    teacher: Teacher
    log_probs: np.ndarray  # [training rows, labels], aligned with the (joined) training table
    weight: float
    temperature: float
    label_smoothing: float = 0.0
    unlabeled: dict = field(default_factory=dict)  # what happened to data.unlabeled's rows
    task: str = "classification"

    def loss(self, student_logits: torch.Tensor, labels: torch.Tensor, rows) -> torch.Tensor:
        teacher = torch.from_numpy(self.log_probs[np.asarray(rows)]).to(student_logits.device)
        return distillation_loss(
            student_logits,
            labels,
            teacher,
            self.weight,
            self.temperature,
            self.label_smoothing,
            self.task,
        )

    def describe(self) -> dict:
        """For model_description.json, summary.json and the model card."""
        return {
            **self.teacher.describe(),
            "distill_weight": self.weight,
            "distill_temperature": self.temperature,  # unused by a regression (describe()["task"])
            "unlabeled": self.unlabeled or None,
        }


def prepare_distillation(cfg, splits: dict, accelerator=None) -> Distillation | None:
    """Set up `train.teacher` (and `data.unlabeled`): None when no teacher is configured.

    Checks the teacher against the student, computes (or reuses) its log-probabilities for
    the training rows and for the unlabelled texts, keeps the confident unlabelled rows and
    appends them to `splits["train"]` with the label `UNLABELED`. The validation (and test)
    split is never touched: it was split from the labelled rows before, and unlabelled texts
    equal to a validation text are dropped. Runs before the run directory exists, so a
    refusal leaves nothing behind.
    """
    if not cfg.train.teacher:
        return None
    from lorafit.flops import resolve_precision
    from lorafit.teacher.logits import resolve_teacher, teacher_log_probs
    from lorafit.teacher.unlabeled import join_unlabeled, load_unlabeled, select_unlabeled

    teacher = resolve_teacher(
        cfg.train.teacher, list(cfg.data.label_names), cfg.model.max_length, cfg.task
    )
    unlabeled = (
        load_unlabeled(cfg.data, splits) if cfg.data.unlabeled else None
    )  # bad files fail first
    cache_dir = teacher_cache_dir(cfg)
    device = str(accelerator.device) if accelerator is not None else "cpu"
    batch = cfg.train.eval_batch_size
    # the teacher runs in bf16 when the student trains under bf16 autocast (a CPU or GPU with bf16)
    precision = (
        accelerator.mixed_precision
        if accelerator is not None
        else resolve_precision(cfg.train.mixed_precision)
    )
    dtype = "bf16" if precision == "bf16" else "fp32"
    train = splits["train"]
    log_probs = teacher_log_probs(
        teacher, train, cache_dir, device, batch, accelerator, dtype
    )  # pairs too
    _log_teacher_fit(log_probs, train.labels, cfg.task)
    report: dict[str, Any] = {}
    if unlabeled is not None:
        table, report = unlabeled
        u_log_probs = teacher_log_probs(
            teacher, table, cache_dir, device, batch, accelerator, dtype
        )
        keep, report = select_unlabeled(
            u_log_probs, len(train), cfg.data, cfg.train.seed, report, cfg.task
        )
        splits["train"] = join_unlabeled(train, table, keep)
        log_probs = np.concatenate([log_probs, u_log_probs[keep]])
    return Distillation(
        teacher,
        log_probs,
        cfg.train.distill_weight,
        cfg.train.distill_temperature,
        cfg.train.label_smoothing,
        report,
        cfg.task,
    )


def teacher_cache_dir(cfg) -> Path:
    from lorafit.caches import cache_root

    return cache_root(cfg.train.cache_dir)


def _log_teacher_fit(outputs: np.ndarray, labels, task: str) -> None:
    """How well the teacher fits the labelled training rows: accuracy, Pearson, or micro-F1 at 0.5."""
    if labels is None or not len(labels):
        return
    if task == "regression":
        r = float(np.corrcoef(outputs[:, 0].astype(np.float64), labels.astype(np.float64))[0, 1])
        log.info("teacher: Pearson %.4f on the %d labelled training rows", r, len(labels))
    elif task == "multi_label":
        yes, truth = outputs > 0, labels > 0.5  # log-odds > 0: probability > 0.5
        tp = int((yes & truth).sum())
        f1 = 2 * tp / max(int(yes.sum()) + int(truth.sum()), 1)
        log.info(
            "teacher: micro-F1 %.4f (threshold 0.5) on the %d labelled training rows",
            f1,
            len(labels),
        )
    else:
        acc = float((outputs.argmax(-1) == labels).mean())
        log.info(
            "teacher: %.2f%% accuracy on the %d labelled training rows", 100 * acc, len(labels)
        )
