"""Batch-hard triplet loss (Hermans, Beyer & Leibe, "In Defense of the Triplet Loss", 2017)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from reid_attn.losses.batch import check_batch, pair_masks

_MIN_SQUARED_DISTANCE = 1e-12


def _euclidean_distances(features: Tensor) -> Tensor:
    """Pairwise Euclidean distances between rows.

    The squared distance ``|x|^2 + |y|^2 - 2 x.y`` is clamped to at least ``1e-12``
    before the square root, so the gradient stays finite for coincident points
    (including the diagonal).

    Args:
        features: Embeddings, shape ``(B, D)``.

    Returns:
        Distances, shape ``(B, B)``, in feature-space units (diagonal ~ ``1e-6``).
    """
    squared_norms = features.pow(2).sum(dim=1)
    squared = squared_norms[:, None] + squared_norms[None, :] - 2.0 * features @ features.t()
    return squared.clamp_min(_MIN_SQUARED_DISTANCE).sqrt()


def triplet_loss(
    features: Tensor, labels: Tensor, margin: float = 0.3, soft_margin: bool = False
) -> Tensor:
    """Batch-hard triplet loss.

    For every anchor ``a`` the hardest positive (largest distance to another sample with
    the same label) and the hardest negative (smallest distance to a sample with a
    different label) are mined inside the batch. The per-anchor loss is
    ``relu(d_ap - d_an + margin)``, or ``softplus(d_ap - d_an)`` when ``soft_margin`` is
    set (``margin`` is then ignored). Anchors lacking a positive or a negative are skipped.

    Args:
        features: Embeddings, shape ``(B, D)``; distances are Euclidean, not normalised.
        labels: Identity labels, shape ``(B,)``, any integer dtype.
        margin: Hard-margin value in feature-space distance units, must be ``>= 0``.
        soft_margin: Use the soft-plus formulation instead of the hinge.

    Returns:
        Scalar tensor: the mean loss over valid anchors; 0 (still attached to the graph) if
        no anchor is valid.

    Raises:
        ValueError: If ``margin < 0`` or the shapes are inconsistent.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    check_batch(features, labels, ("features", "labels"), "D")

    dist = _euclidean_distances(features)
    pos_mask, neg_mask, valid = pair_masks(labels)
    # Branch-free (no host synchronisation, one graph when compiled): an anchor without a
    # positive or a negative gets d_ap = -inf or d_an = +inf, so its hinge / soft-plus is 0,
    # and it is left out of the mean.
    d_ap = dist.masked_fill(~pos_mask, float("-inf")).max(dim=1).values
    d_an = dist.masked_fill(~neg_mask, float("inf")).min(dim=1).values
    gap = d_ap - d_an
    per_anchor = F.softplus(gap) if soft_margin else F.relu(gap + margin)
    return per_anchor.masked_fill(~valid, 0.0).sum() / valid.sum().clamp_min(1)
