"""Evaluation: distances, CMC / mAP / mINP ranking metrics, k-reciprocal re-ranking, their
chunked (bounded-memory) versions for large galleries, and the torchmetrics wrapper."""

from reid_attn.metrics.chance import chance_level
from reid_attn.metrics.chunked import evaluate_features, evaluate_rank_chunked, iter_distances
from reid_attn.metrics.distance import compute_distance
from reid_attn.metrics.rank import evaluate_rank, match_ranks
from reid_attn.metrics.reid_metric import METRIC_NAMES, ReIDMetric
from reid_attn.metrics.rerank import re_ranking
from reid_attn.metrics.rerank_features import (
    iter_re_ranking_from_features,
    re_ranking_from_features,
)

__all__ = [
    "METRIC_NAMES",
    "ReIDMetric",
    "chance_level",
    "compute_distance",
    "evaluate_features",
    "evaluate_rank",
    "evaluate_rank_chunked",
    "iter_distances",
    "iter_re_ranking_from_features",
    "match_ranks",
    "re_ranking",
    "re_ranking_from_features",
]
