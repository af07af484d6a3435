"""What the losses of one batch share: shape checks and the anchor / positive / negative masks."""

from __future__ import annotations

import torch
from torch import Tensor


def check_batch(values: Tensor, labels: Tensor, names: tuple[str, str], width: str) -> None:
    """Check that ``values`` is ``(B, width)`` and ``labels`` is ``(B,)``; a ValueError names
    the argument (``names``: the two argument names) and the shape expected."""
    if values.dim() != 2:
        raise ValueError(f"{names[0]} must have shape (B, {width}), got {tuple(values.shape)}")
    if labels.shape != values.shape[:1]:
        raise ValueError(
            f"{names[1]} must have shape ({values.shape[0]},), got {tuple(labels.shape)}"
        )


def pair_masks(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The pairs of a batch of identity ``labels`` ``(B,)``: ``(positive, negative, valid)``,
    ``(B, B)`` bool masks of the other samples with the same label and of those with another
    label, and the ``(B,)`` bool mask of anchors that have at least one of each."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & ~eye
    negative = ~same
    return positive, negative, positive.any(dim=1) & negative.any(dim=1)
