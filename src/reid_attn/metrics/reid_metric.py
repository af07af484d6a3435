"""A torchmetrics Metric that accumulates re-id embeddings and computes CMC / mAP / mINP."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from reid_attn.metrics.chunked import evaluate_features
from reid_attn.metrics.distance import DISTANCE_NAMES, compute_distance
from reid_attn.metrics.rank import evaluate_rank
from reid_attn.metrics.rerank import check_rerank_params, re_ranking
from reid_attn.metrics.rerank_features import check_chunk

#: The scalar figures :meth:`ReIDMetric.compute` returns (fractions in [0, 1]).
METRIC_NAMES = ("rank1", "rank5", "rank10", "mAP", "mINP")
STATE_NAMES = ("features", "pids", "camids", "is_query", "indices")


class ReIDMetric(Metric):
    """Collects ``(features, pids, camids, is_query[, indices])`` over batches; :meth:`compute`
    returns ``{"rank1", "rank5", "rank10", "mAP", "mINP"}`` (fractions, float64 tensors) plus
    ``"cmc"`` (``max_rank`` vector).

    Across DDP ranks the states are gathered (concatenated) by torchmetrics. A
    ``DistributedSampler`` pads the dataset with repeated items so every rank gets as many,
    and a loader without one makes every rank see every item: pass each sample's dataset
    ``indices`` to :meth:`update` and :meth:`compute` keeps one copy per index (the first
    gathered) and orders the samples by index, so the result equals a single-process
    evaluation. Without indices every sample counts as given.

    Args:
        distance: ``euclidean`` (squared) or ``cosine``.
        max_rank: length of the CMC curve.
        rerank: apply k-reciprocal re-ranking (:func:`re_ranking`) to the distances.
        rerank_k1, rerank_k2, rerank_lambda: its ``k1``, ``k2`` and ``lambda_value``.
        chunk_size: ``None``: one dense query x gallery matrix (and, with re-ranking, the
            query-query and gallery-gallery ones). An integer: :func:`evaluate_features`, which
            holds the distances of at most ``max(chunk_size, 32)`` queries at a time and
            re-ranks from the features (:func:`re_ranking_from_features`), for large test sets
            such as MSMT17's; same figures.
    """

    full_state_update = False

    def __init__(
        self,
        distance: str = "euclidean",
        max_rank: int = 50,
        rerank: bool = False,
        rerank_k1: int = 20,
        rerank_k2: int = 6,
        rerank_lambda: float = 0.3,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if distance not in DISTANCE_NAMES:
            raise ValueError(
                f"unknown distance {distance!r}; valid names: {', '.join(DISTANCE_NAMES)}"
            )
        if isinstance(max_rank, bool) or not isinstance(max_rank, int) or max_rank < 1:
            raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
        check_rerank_params(rerank_k1, rerank_k2, rerank_lambda)
        check_chunk(chunk_size, "chunk_size", "ReIDMetric")
        self.distance = distance
        self.max_rank = max_rank
        self.rerank = bool(rerank)
        self.rerank_k1, self.rerank_k2, self.rerank_lambda = rerank_k1, rerank_k2, rerank_lambda
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        for name in STATE_NAMES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        features: Tensor,
        pids: Tensor,
        camids: Tensor,
        is_query: Tensor,
        indices: Tensor | None = None,
    ) -> None:
        """Add a batch: ``features`` ``(B, D)``; ``pids``, ``camids``, ``is_query`` and the
        optional dataset ``indices`` ``(B,)``."""
        self.features.append(features.detach().float())
        self.pids.append(torch.as_tensor(pids).detach().long())
        self.camids.append(torch.as_tensor(camids).detach().long())
        # uint8, not bool: every distributed backend can gather it.
        self.is_query.append(torch.as_tensor(is_query).detach().to(torch.uint8))
        if indices is not None:
            self.indices.append(torch.as_tensor(indices, device=features.device).long())

    def gathered(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The accumulated ``features (n, D), pids (n,), camids (n,), is_query (n,) bool``,
        de-duplicated and ordered by dataset index when indices were given."""
        features = _cat(self.features)
        pids, camids = _cat(self.pids), _cat(self.camids)
        is_query = _cat(self.is_query).bool()
        indices = _cat(self.indices) if len(self.indices) else None
        if indices is not None and indices.numel() > 0:
            if indices.numel() != len(features):
                raise ValueError(
                    f"ReIDMetric: {indices.numel()} indices for {len(features)} samples; pass "
                    "indices with every update() or with none"
                )
            order = torch.argsort(indices, stable=True)
            sorted_idx = indices[order]
            first = torch.ones_like(sorted_idx, dtype=torch.bool)
            first[1:] = sorted_idx[1:] != sorted_idx[:-1]
            keep = order[first]
            features, pids, camids, is_query = (t[keep] for t in (features, pids, camids, is_query))
        return features, pids, camids, is_query

    def compute(self) -> dict[str, Tensor]:
        """Distances query x gallery (re-ranked if configured), then :func:`evaluate_rank`
        (by blocks of queries, :func:`evaluate_features`, when ``chunk_size`` is set)."""
        features, pids, camids, is_query = self.gathered()
        query, gallery = features[is_query], features[~is_query]
        labels = (pids[is_query], pids[~is_query], camids[is_query], camids[~is_query])
        if self.chunk_size is not None:
            result = evaluate_features(
                query,
                gallery,
                *labels,
                distance=self.distance,
                max_rank=self.max_rank,
                rerank=self.rerank,
                k1=self.rerank_k1,
                k2=self.rerank_k2,
                lambda_value=self.rerank_lambda,
                chunk_size=self.chunk_size,
            )
        else:
            distmat = compute_distance(query, gallery, self.distance)
            if self.rerank:
                distmat = re_ranking(
                    distmat,
                    compute_distance(query, query, self.distance),
                    compute_distance(gallery, gallery, self.distance),
                    k1=self.rerank_k1,
                    k2=self.rerank_k2,
                    lambda_value=self.rerank_lambda,
                )
            result = evaluate_rank(distmat, *labels, max_rank=self.max_rank)
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
