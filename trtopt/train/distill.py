"""Knowledge distillation (Hinton et al. 2015): a student learns from a teacher's softened outputs."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from trtopt.errors import UsageError
from trtopt.train.checkpoint import load_checkpoint, model_from_checkpoint


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, weight: float) -> torch.Tensor:
    """(1 - weight) * CE(labels) + weight * T^2 * KL(teacher_T || student_T).

    The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones when the
    temperature changes, so `weight` means the same thing at every temperature.
    """
    hard = F.cross_entropy(student_logits, labels)
    soft = (
        F.kl_div(
            F.log_softmax(student_logits / temperature, dim=1),
            F.log_softmax(teacher_logits / temperature, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        * temperature**2
    )
    return (1.0 - weight) * hard + weight * soft


def load_teacher(path: str, num_classes: int, sample_shape: tuple[int, ...], device: torch.device) -> Any:
    """The teacher in eval mode with gradients off; checked to see the student's inputs and classes."""
    checkpoint = load_checkpoint(path)
    teacher = model_from_checkpoint(checkpoint, path).to(device)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    probe = torch.zeros((1, *sample_shape), device=device)
    try:
        with torch.no_grad():
            classes = teacher(probe).shape[1]
    except RuntimeError as exc:
        raise UsageError(f"teacher {path} does not accept inputs of shape {sample_shape}: {exc}") from exc
    if classes != num_classes:
        raise UsageError(f"teacher {path} predicts {classes} classes but the dataset has {num_classes}")
    return teacher
