"""Per-query ranked lists with the evaluation protocol's gallery filtering (pure numpy).

For every query the gallery is sorted by ascending distance (ties broken by gallery index),
gallery images with the same identity *and* the same camera as the query are removed, exactly
as in :func:`reid_attn.metrics.evaluate_rank`, and each remaining image is marked correct when
it shows the query's identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class RankedList:
    """The top of one query's ranking after same-identity same-camera removal.

    Attributes:
        query: index of the query (row of the distance matrix).
        gallery: ``(k,)`` gallery indices, best match first.
        distances: ``(k,)`` their distances to the query.
        correct: ``(k,)`` bool, True where the gallery image has the query's identity.
        num_matches: true matches left in the whole gallery after the removal.
        ap: average precision of the full ranking (``nan`` when ``num_matches == 0``).
    """

    query: int
    gallery: np.ndarray
    distances: np.ndarray
    correct: np.ndarray
    num_matches: int
    ap: float

    @property
    def valid(self) -> bool:
        """True when the query has at least one true match (evaluation counts it)."""
        return self.num_matches > 0


def _as_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    try:
        return np.asarray(x)
    except Exception as exc:
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to an array") from exc


def rank_gallery(
    distmat: np.ndarray | torch.Tensor,
    q_pids: Sequence[int] | np.ndarray | torch.Tensor,
    g_pids: Sequence[int] | np.ndarray | torch.Tensor,
    q_camids: Sequence[int] | np.ndarray | torch.Tensor,
    g_camids: Sequence[int] | np.ndarray | torch.Tensor,
    topk: int = 10,
) -> list[RankedList]:
    """Rank the gallery for every query and keep the ``topk`` best images.

    Args:
        distmat: ``(num_q, num_g)`` distances, smaller is more similar.
        q_pids, q_camids: ``(num_q,)`` query identities and cameras.
        g_pids, g_camids: ``(num_g,)`` gallery identities and cameras.
        topk: how many gallery images each list keeps (fewer when fewer remain).

    Returns:
        One :class:`RankedList` per query, in query order.

    Raises:
        ValueError: bad shapes or ``topk < 1``.
    """
    dist = _as_array(distmat, "distmat")
    if dist.ndim != 2:
        raise ValueError(f"distmat must have shape (num_q, num_g), got {tuple(dist.shape)}")
    num_q, num_g = dist.shape
    arrays = {}
    for name, value, length in (
        ("q_pids", q_pids, num_q),
        ("q_camids", q_camids, num_q),
        ("g_pids", g_pids, num_g),
        ("g_camids", g_camids, num_g),
    ):
        arr = _as_array(value, name)
        if arr.shape != (length,):
            raise ValueError(f"{name} must have shape ({length},), got {tuple(arr.shape)}")
        arrays[name] = arr
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")

    ranked = []
    for q in range(num_q):
        order = np.argsort(dist[q], kind="stable")
        same_pid = arrays["g_pids"][order] == arrays["q_pids"][q]
        same_cam = arrays["g_camids"][order] == arrays["q_camids"][q]
        keep = ~(same_pid & same_cam)
        order, match = order[keep], same_pid[keep]
        num_matches = int(match.sum())
        if num_matches:
            hits = np.flatnonzero(match)
            ap = float(np.mean(np.arange(1, num_matches + 1) / (hits + 1)))
        else:
            ap = float("nan")
        top = order[:topk]
        ranked.append(
            RankedList(
                query=q,
                gallery=top,
                distances=dist[q, top].astype(np.float64),
                correct=match[:topk].copy(),
                num_matches=num_matches,
                ap=ap,
            )
        )
    return ranked


def select_queries(
    ranked: Sequence[RankedList],
    num_queries: int,
    worst: bool = False,
    indices: Sequence[int] | None = None,
) -> list[RankedList]:
    """Choose the ranked lists to show.

    Args:
        ranked: output of :func:`rank_gallery`.
        num_queries: how many to choose (all valid ones when fewer exist).
        worst: take the valid queries with the lowest AP (ties: lower query index first)
            instead of ones spread evenly over the valid queries.
        indices: explicit query indices (override ``num_queries`` and ``worst``).

    Returns:
        The chosen lists: in the order of ``indices``; worst first with ``worst``; else in
        query order. Queries without a true match are never chosen automatically.

    Raises:
        ValueError: ``num_queries < 1``, an index out of range, or no valid query.
    """
    if indices is not None:
        bad = [i for i in indices if not 0 <= int(i) < len(ranked)]
        if bad:
            raise ValueError(f"query indices {bad} are out of range 0..{len(ranked) - 1}")
        return [ranked[int(i)] for i in indices]
    if isinstance(num_queries, bool) or not isinstance(num_queries, int) or num_queries < 1:
        raise ValueError(f"num_queries must be a positive integer, got {num_queries!r}")
    valid = [r for r in ranked if r.valid]
    if not valid:
        raise ValueError("no query has a true match in the gallery; nothing to show")
    if worst:
        return sorted(valid, key=lambda r: (r.ap, r.query))[:num_queries]
    if num_queries >= len(valid):
        return valid
    picks = np.unique(np.linspace(0, len(valid) - 1, num_queries).round().astype(int))
    return [valid[i] for i in picks]
