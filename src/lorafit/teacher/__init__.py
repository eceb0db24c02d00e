"""Teachers: distil a larger (or unbudgeted) model into the budgeted one.

    lorafit teacher --config configs/agnews_teacher.yaml            # a teacher run
    lorafit train --config configs/agnews_distill.yaml train.teacher=runs/agnews-teacher-...

The budget counts what is submitted, not what helped train it. A teacher's class
probabilities guide the student:

    loss = (1 - w) * CE(student, labels) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))

- `logits.py`: what a teacher is (a run directory, an ensemble of them, a transformers model
  folder), the checks against the student's labels and texts, and the on-disk store of the
  teacher's log-probabilities, computed once per text and keyed like the activation cache;
- `distill.py`: the loss, and `prepare_distillation`, what the training loop calls;
- `unlabeled.py`: unlabelled texts (`data.unlabeled`) read, soft-labelled by the teacher,
  filtered by confidence and joined to the training rows;
- `build.py`: `lorafit teacher`, a teacher in one command.
"""

from __future__ import annotations

from lorafit.teacher.build import build_teacher
from lorafit.teacher.distill import Distillation, distillation_loss, prepare_distillation
from lorafit.teacher.logits import Teacher, resolve_teacher, teacher_log_probs

__all__ = [
    "build_teacher",
    "Distillation",
    "distillation_loss",
    "prepare_distillation",
    "Teacher",
    "resolve_teacher",
    "teacher_log_probs",
]
