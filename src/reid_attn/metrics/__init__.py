"""Evaluation: distances, CMC / mAP / mINP ranking metrics, k-reciprocal re-ranking and the
torchmetrics wrapper."""

from reid_attn.metrics.distance import compute_distance
from reid_attn.metrics.rank import evaluate_rank, match_ranks
from reid_attn.metrics.reid_metric import METRIC_NAMES, ReIDMetric
from reid_attn.metrics.rerank import re_ranking

__all__ = [
    "METRIC_NAMES",
    "ReIDMetric",
    "compute_distance",
    "evaluate_rank",
    "match_ranks",
    "re_ranking",
]
