"""A torchmetrics Metric that accumulates re-id embeddings and computes CMC / mAP / mINP."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from reid_attn.metrics.distance import DISTANCE_NAMES, compute_distance
from reid_attn.metrics.rank import evaluate_rank


class ReIDMetric(Metric):
    """Collects ``(features, pids, camids, is_query)`` over batches; :meth:`compute` returns
    ``{"rank1", "rank5", "rank10", "mAP", "mINP"}`` (fractions, float tensors) plus ``"cmc"``
    (``max_rank`` vector).

    Args:
        distance: ``euclidean`` (squared) or ``cosine``.
        max_rank: length of the CMC curve.
    """

    full_state_update = False

    def __init__(self, distance: str = "euclidean", max_rank: int = 50) -> None:
        super().__init__()
        if distance not in DISTANCE_NAMES:
            raise ValueError(
                f"unknown distance {distance!r}; valid names: {', '.join(DISTANCE_NAMES)}"
            )
        self.distance = distance
        self.max_rank = max_rank
        for name in ("features", "pids", "camids", "is_query"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor, pids: Tensor, camids: Tensor, is_query: Tensor) -> None:
        """features (B, D); pids, camids, is_query (B,)."""
        self.features.append(features.detach().float())
        self.pids.append(pids.detach())
        self.camids.append(camids.detach())
        self.is_query.append(is_query.detach().bool())

    def compute(self) -> dict[str, Tensor]:
        features = _cat(self.features)
        pids, camids, is_query = _cat(self.pids), _cat(self.camids), _cat(self.is_query)
        distmat = compute_distance(features[is_query], features[~is_query], self.distance)
        result = evaluate_rank(
            distmat,
            pids[is_query],
            pids[~is_query],
            camids[is_query],
            camids[~is_query],
            max_rank=self.max_rank,
        )
        cmc = torch.as_tensor(result["cmc"], dtype=torch.float64)
        return {
            "rank1": cmc[0],
            "rank5": cmc[min(4, len(cmc) - 1)],
            "rank10": cmc[min(9, len(cmc) - 1)],
            "mAP": torch.tensor(result["mAP"], dtype=torch.float64),
            "mINP": torch.tensor(result["mINP"], dtype=torch.float64),
            "cmc": cmc,
        }


def _cat(state: list[Tensor] | Tensor) -> Tensor:
    return torch.cat(state) if isinstance(state, list) else state
