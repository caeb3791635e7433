"""The divergence of class logits from a teacher's, which classification and segmentation
share (:meth:`Task.distillation_loss`); the training side is :mod:`disco_zoo.distill`."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["TEMPERATURE", "logit_distillation"]

TEMPERATURE = 2.0  # softens both distributions so that the classes after the first still count


def logit_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """KL(teacher || student) of the softened class distributions (classes on dim 1), averaged
    over images and pixels, times T^2 so that its gradients keep the scale of the labels' loss."""
    log_student = F.log_softmax(student / temperature, dim=1)
    log_teacher = F.log_softmax(teacher / temperature, dim=1)
    per_position = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1)
    return per_position.mean() * temperature ** 2
