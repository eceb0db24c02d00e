"""The distillation loss, and what the training loop calls to set distillation up.

    loss = (1 - w) * CE + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))

with w = `train.distill_weight` and T = `train.distill_temperature`. The T^2 keeps the KL
term's gradients on the scale of the cross-entropy's as T grows (Hinton et al., 2015).
Within a batch, CE is the mean over its LABELLED rows (label smoothing as in
`train.label_smoothing`; 0 when the batch has none) and KL the mean over ALL its rows, so an
unlabelled row (label `UNLABELED` = -100) contributes only to the KL term, and w keeps its
meaning whatever share of the batch is unlabelled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lorafit.teacher.unlabeled import UNLABELED

log = logging.getLogger("lorafit")


def distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor,
    weight: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """(1 - w) * CE over the labelled rows + w * T^2 * KL(teacher_T || student_T) over all rows.

    `teacher_logits` may be logits or log-probabilities (the same distribution at any T).
    Rows labelled `UNLABELED` (-100) count in the KL term only.
    """
    student = student_logits.float()
    labelled = labels != UNLABELED
    if bool(labelled.any()):
        ce = F.cross_entropy(student[labelled], labels[labelled], label_smoothing=label_smoothing)
    else:
        ce = student.sum() * 0.0  # keeps the graph (and the device) when a batch has no labels
    t = float(temperature)
    log_p_student = F.log_softmax(student / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="none").sum(-1).mean()
    return (1.0 - weight) * ce + weight * t * t * kl


@dataclass
class Distillation:
    """The teacher's log-probabilities for every training row, and the loss that uses them."""

    teacher: object  # lorafit.teacher.logits.Teacher
    log_probs: np.ndarray  # [training rows, labels], aligned with the (joined) training table
    weight: float
    temperature: float
    label_smoothing: float = 0.0
    unlabeled: dict = field(default_factory=dict)  # what happened to data.unlabeled's rows

    def loss(self, student_logits: torch.Tensor, labels: torch.Tensor, rows) -> torch.Tensor:
        teacher = torch.from_numpy(self.log_probs[np.asarray(rows)]).to(student_logits.device)
        return distillation_loss(student_logits, labels, teacher, self.weight, self.temperature, self.label_smoothing)

    def describe(self) -> dict:
        """For model_description.json, summary.json and the model card."""
        return {
            **self.teacher.describe(),
            "distill_weight": self.weight,
            "distill_temperature": self.temperature,
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

    teacher = resolve_teacher(cfg.train.teacher, list(cfg.data.label_names), cfg.model.max_length)
    unlabeled = load_unlabeled(cfg.data, splits) if cfg.data.unlabeled else None  # bad files fail first
    cache_dir = teacher_cache_dir(cfg)
    device = str(accelerator.device) if accelerator is not None else "cpu"
    batch = cfg.train.eval_batch_size
    # the teacher runs in bf16 when the student trains under bf16 autocast (a CPU or GPU with bf16)
    precision = accelerator.mixed_precision if accelerator is not None else resolve_precision(cfg.train.mixed_precision)
    dtype = "bf16" if precision == "bf16" else "fp32"
    train = splits["train"]
    log_probs = teacher_log_probs(teacher, train, cache_dir, device, batch, accelerator, dtype)  # pairs too
    _log_teacher_accuracy(log_probs, train.labels)
    report = {}
    if unlabeled is not None:
        table, report = unlabeled
        u_log_probs = teacher_log_probs(teacher, table, cache_dir, device, batch, accelerator, dtype)
        keep, report = select_unlabeled(u_log_probs, len(train), cfg.data, cfg.train.seed, report)
        splits["train"] = join_unlabeled(train, table, keep)
        log_probs = np.concatenate([log_probs, u_log_probs[keep]])
    return Distillation(
        teacher, log_probs, cfg.train.distill_weight, cfg.train.distill_temperature, cfg.train.label_smoothing, report
    )


def teacher_cache_dir(cfg) -> Path:
    from lorafit.caches import cache_root

    return cache_root(cfg.train.cache_dir)


def _log_teacher_accuracy(log_probs: np.ndarray, labels) -> None:
    if labels is not None and len(labels):
        acc = float((log_probs.argmax(-1) == labels).mean())
        log.info("teacher: %.2f%% accuracy on the %d labelled training rows", 100 * acc, len(labels))
