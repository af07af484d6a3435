"""Query-gallery distance matrices."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

DISTANCE_NAMES = ("euclidean", "cosine")


def compute_distance(query: Tensor, gallery: Tensor, metric: str = "euclidean") -> Tensor:
    """Distances between ``query`` (M, D) and ``gallery`` (N, D) features, shape (M, N).

    ``euclidean``: squared Euclidean distance (clamped at 0); ``cosine``: ``1 - cos``.
    Computed in float32 or wider.
    """
    if metric not in DISTANCE_NAMES:
        raise ValueError(f"unknown distance {metric!r}; valid names: {', '.join(DISTANCE_NAMES)}")
    query, gallery = query.float(), gallery.float()
    if metric == "cosine":
        return 1.0 - F.normalize(query, dim=1) @ F.normalize(gallery, dim=1).t()
    squared = (
        query.pow(2).sum(1, keepdim=True)
        + gallery.pow(2).sum(1).unsqueeze(0)
        - 2.0 * query @ gallery.t()
    )
    return squared.clamp_min(0.0)
