"""Evaluation: distances, CMC / mAP / mINP ranking metrics and the torchmetrics wrapper."""

from reid_attn.metrics.distance import compute_distance
from reid_attn.metrics.rank import evaluate_rank
from reid_attn.metrics.reid_metric import ReIDMetric

__all__ = ["ReIDMetric", "compute_distance", "evaluate_rank"]
