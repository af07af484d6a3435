"""Identity classification loss (softmax cross-entropy with optional label smoothing)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reid_attn.losses.batch import check_batch


def cross_entropy_loss(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean softmax cross-entropy with optional label smoothing.

    With smoothing ``eps`` and ``K`` classes the target distribution is
    ``(1 - eps) * one_hot(target) + eps / K`` (the convention of
    :func:`torch.nn.functional.cross_entropy`).

    Args:
        logits: Unnormalised class scores, shape ``(B, K)``.
        targets: Integer class indices in ``[0, K)``, shape ``(B,)``, dtype ``long``.
        label_smoothing: Smoothing factor ``eps``, must satisfy ``0 <= eps < 1``.

    Returns:
        Scalar tensor: the loss averaged over the batch, in nats.

    Raises:
        ValueError: If ``label_smoothing`` is outside ``[0, 1)`` or the shapes do not match.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    check_batch(logits, targets, ("logits", "targets"), "K")
    return F.cross_entropy(logits, targets.to(torch.long), label_smoothing=label_smoothing)
