"""Circle loss (Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
Optimization", CVPR 2020): pair-wise form and class-level (softmax) head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid_attn.losses.batch import check_batch, pair_masks


def _check_margin(margin: float) -> None:
    """Raise ValueError unless ``0 <= margin < 1``."""
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin}")


def pairwise_circle_loss(
    features: Tensor, labels: Tensor, margin: float = 0.25, gamma: float = 128
) -> Tensor:
    """Pair-wise Circle loss on cosine similarities.

    Features are L2-normalised and ``s = f_i . f_j`` is the cosine similarity. For each
    anchor, ``s_p`` are similarities to the other samples with the same label and ``s_n``
    to samples with a different label. With the optimum-detached weights
    ``alpha_p = max(1 + m - s_p, 0)`` and ``alpha_n = max(s_n + m, 0)`` (no gradient flows
    through them) and ``delta_p = 1 - m``, ``delta_n = m``::

        loss_a = softplus(logsumexp(gamma * alpha_n * (s_n - delta_n))
                          + logsumexp(-gamma * alpha_p * (s_p - delta_p)))

    which equals ``log(1 + sum_n exp(.) * sum_p exp(.))``. Computed without a Python loop
    over anchors using masked log-sum-exp.

    Args:
        features: Embeddings, shape ``(B, D)`` (any scale; they are normalised here).
        labels: Identity labels, shape ``(B,)``, any integer dtype.
        margin: Relaxation margin ``m`` (dimensionless, cosine units), ``0 <= m < 1``.
        gamma: Scale factor ``gamma`` (dimensionless), must be ``> 0``.

    Returns:
        Scalar tensor: mean loss over anchors that have at least one positive and one
        negative; ``0 * features.sum()`` (still in the graph) if there is none.

    Raises:
        ValueError: On invalid ``margin``/``gamma`` or inconsistent shapes.
    """
    _check_margin(margin)
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    check_batch(features, labels, ("features", "labels"), "D")
    pos_mask, neg_mask, valid = pair_masks(labels)
    if not bool(valid.any()):
        return features.sum() * 0.0

    normed = F.normalize(features, dim=1)
    sim = (normed @ normed.t())[valid]  # (V, B)
    pos_mask = pos_mask[valid]
    neg_mask = neg_mask[valid]
    sim_const = sim.detach()

    alpha_p = (1.0 + margin - sim_const).clamp_min(0.0)
    alpha_n = (sim_const + margin).clamp_min(0.0)
    delta_p = 1.0 - margin
    delta_n = margin

    logit_p = (-gamma * alpha_p * (sim - delta_p)).masked_fill(~pos_mask, float("-inf"))
    logit_n = (gamma * alpha_n * (sim - delta_n)).masked_fill(~neg_mask, float("-inf"))
    # Every remaining row has >= 1 finite entry in each mask, so logsumexp is finite.
    per_anchor = F.softplus(torch.logsumexp(logit_n, dim=1) + torch.logsumexp(logit_p, dim=1))
    return per_anchor.mean()


class CircleSoftmax(nn.Module):
    """Class-level Circle loss head (a.k.a. "Circle softmax").

    Holds one prototype per class and returns re-weighted, re-centred cosine logits that
    are meant to be passed to a cross-entropy loss. With ``cos = <f/|f|, w_k/|w_k|>``:

    * without targets: ``logits = scale * cos`` (use for inference / monitoring);
    * with targets: ``alpha_p = max(1 + m - cos, 0)``, ``alpha_n = max(cos + m, 0)``
      (detached), ``delta_p = 1 - m``, ``delta_n = m``; the target-class logit is
      ``scale * alpha_p * (cos - delta_p)`` and every other logit is
      ``scale * alpha_n * (cos - delta_n)``.

    Args:
        in_features: Embedding dimension ``D``.
        num_classes: Number of identities ``K``.
        scale: Scale factor (``gamma`` in the paper), must be ``> 0``.
        margin: Relaxation margin ``m``, ``0 <= m < 1``.

    Attributes:
        weight: Class prototypes, ``nn.Parameter`` of shape ``(num_classes, in_features)``.
    """

    def __init__(
        self, in_features: int, num_classes: int, scale: float = 64, margin: float = 0.35
    ) -> None:
        super().__init__()
        if in_features <= 0 or num_classes <= 0:
            raise ValueError(
                f"in_features and num_classes must be positive, got {in_features}, {num_classes}"
            )
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        _check_margin(margin)
        self.in_features = in_features
        self.num_classes = num_classes
        self.scale = float(scale)
        self.margin = float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise ``weight`` with Kaiming-uniform (as ``nn.Linear``); only its direction
        matters since it is normalised in :meth:`forward`."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, features: Tensor, targets: Tensor | None = None) -> Tensor:
        """Compute Circle logits.

        Args:
            features: Embeddings, shape ``(B, in_features)``.
            targets: Optional class indices, shape ``(B,)``, integer dtype, in
                ``[0, num_classes)``.

        Returns:
            Logits, shape ``(B, num_classes)`` (dimensionless, scaled cosines).

        Raises:
            ValueError: If shapes are inconsistent.
        """
        if features.dim() != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"features must have shape (B, {self.in_features}), got {tuple(features.shape)}"
            )
        cos = F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))
        if targets is None:
            return self.scale * cos
        if targets.shape != features.shape[:1]:
            raise ValueError(
                f"targets must have shape ({features.shape[0]},), got {tuple(targets.shape)}"
            )

        cos_const = cos.detach()
        alpha_p = (1.0 + self.margin - cos_const).clamp_min(0.0)
        alpha_n = (cos_const + self.margin).clamp_min(0.0)
        delta_p = 1.0 - self.margin
        delta_n = self.margin
        is_target = F.one_hot(targets.to(torch.long), self.num_classes).to(torch.bool)
        pos_logits = self.scale * alpha_p * (cos - delta_p)
        neg_logits = self.scale * alpha_n * (cos - delta_n)
        return torch.where(is_target, pos_logits, neg_logits)

    def extra_repr(self) -> str:
        """Summary shown by ``repr``."""
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, "
            f"scale={self.scale}, margin={self.margin}"
        )
