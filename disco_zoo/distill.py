"""Knowledge distillation: the dense model teaches its DISCO variant while it is sparsified.

Why: closing cross-node channels and diagonal groups takes capacity away, and on a small
training set the task's labels alone let the sparse model drift (LR-ASPP on the digit
canvases lost 3-5 mIoU points against a dense model trained as long). The dense
teacher's outputs carry more per image than its labels (the classes it confuses, the
soft borders of a mask), the usual remedy for a pruned network (Hinton et al. 2015).

The teacher is the DISCO model itself as it arrives, masks open: it then computes the
dense function exactly (the partition only masks weights), so no second architecture is
built. What "close to the teacher" means is the task's (:meth:`Task.distillation_loss`);
:func:`~disco_zoo.tasks.distillation.logit_distillation` is the one for class logits.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn

from disco_zoo.tasks import TrainingLoss
from disco_zoo.tasks.distillation import TEMPERATURE, logit_distillation

__all__ = ["TEMPERATURE", "logit_distillation", "distilled_loss"]

Divergence = Callable[[Any, Any], torch.Tensor]  # (student outputs, teacher outputs) -> scalar


def distilled_loss(task_loss: TrainingLoss, model: nn.Module, divergence: Divergence, weight: float,
                   outputs_of: Callable[[nn.Module], nn.Module] = lambda m: m) -> TrainingLoss:
    """``task_loss + weight * divergence(student, teacher)``, the teacher a frozen copy of
    ``model`` as it is now. The student's outputs are the ones ``task_loss`` computed (a
    forward hook takes them), so a step still runs the student once. ``outputs_of`` names
    the module whose outputs are compared (:meth:`Task.distillation_outputs`: a detector's
    heads, since in training its forward returns losses)."""
    teacher = copy.deepcopy(model).eval().requires_grad_(False)

    def loss(student: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        seen: list[Any] = []
        handle = outputs_of(student).register_forward_hook(lambda module, args, out: seen.append(out))
        try:
            base = task_loss(student, inputs, targets)
        finally:
            handle.remove()
        taught: list[Any] = []
        handle = outputs_of(teacher).register_forward_hook(lambda module, args, out: taught.append(out))
        try:
            with torch.no_grad():
                teacher(inputs)
        finally:
            handle.remove()
        return base + weight * divergence(seen[-1], taught[-1])

    return loss
