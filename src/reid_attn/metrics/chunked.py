"""CMC / mAP / mINP from blocks of queries: evaluation at MSMT17 scale in bounded memory.

:func:`~reid_attn.metrics.evaluate_rank` takes the whole ``num_q x num_g`` distance matrix
(3.8 GB of float32 at MSMT17 size, 11,659 x 82,161, and 27 GB more for the gallery-gallery
matrix of re-ranking). Every metric is an average over queries of a per-query figure that
depends on that query's row alone, so here the rows arrive in blocks
(:func:`evaluate_rank_chunked`): the ranks of each block's true matches are found by
:func:`~reid_attn.metrics.match_ranks`, kept (a few integers per query), and the metrics are
computed at the end exactly as :func:`evaluate_rank` computes them, i.e. with the same result,
bit for bit, as on the full matrix. :func:`evaluate_features` produces the blocks from the
features, plain (:func:`iter_distances`) or re-ranked
(:func:`~reid_attn.metrics.iter_re_ranking_from_features`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from torch import Tensor

from reid_attn.metrics.distance import compute_distance
from reid_attn.metrics.rank import _check_1d, _to_numpy, match_ranks, metrics_from_ranks
from reid_attn.metrics.rerank_features import (
    as_features,
    balanced_slices,
    check_chunk,
    check_distance,
    default_query_chunk,
    iter_re_ranking_from_features,
)

__all__ = ["evaluate_features", "evaluate_rank_chunked", "iter_distances"]

Array = np.ndarray | Tensor


def iter_distances(
    query_features: Array,
    gallery_features: Array,
    distance: str = "euclidean",
    query_chunk: int | None = None,
) -> Iterator[tuple[slice, Tensor]]:
    """``compute_distance(query_features, gallery_features, distance)`` one block of queries at
    a time.

    Yields ``(rows, block)``: consecutive query slices covering ``0 .. num_q - 1`` and their
    ``(len(rows), num_g)`` float32 distances, on the features' device. ``query_chunk``:
    queries per block (at most ``max(query_chunk, 32)``, balanced; default: 256 MB blocks).
    Blocks of 16 or more queries equal the rows of the full product bit for bit (MKL).
    """
    caller = "iter_distances"
    check_distance(distance)
    check_chunk(query_chunk, "query_chunk", caller)
    q, g = as_features(query_features, gallery_features, caller)
    chunk = default_query_chunk(len(g)) if query_chunk is None else int(query_chunk)
    return (
        (rows, compute_distance(q[rows], g, distance)) for rows in balanced_slices(0, len(q), chunk)
    )


def _labels(
    q_pids: Array,
    g_pids: Array,
    q_camids: Array,
    g_camids: Array,
    num_q: int | None = None,
    num_g: int | None = None,
) -> tuple[np.ndarray, ...]:
    """``(q_pids, g_pids, q_camids, g_camids)`` as numpy arrays, checked 1-D with ``num_q`` /
    ``num_g`` items: the feature counts when given, else the lengths of the pid arrays."""
    qp, gp = _to_numpy(q_pids, "q_pids"), _to_numpy(g_pids, "g_pids")
    qc, gc = _to_numpy(q_camids, "q_camids"), _to_numpy(g_camids, "g_camids")
    q_what = "num_q = len(q_pids)" if num_q is None else "num_q = query_features.shape[0]"
    g_what = "num_g = len(g_pids)" if num_g is None else "num_g = gallery_features.shape[0]"
    num_q = (len(qp) if qp.ndim else 0) if num_q is None else num_q
    num_g = (len(gp) if gp.ndim else 0) if num_g is None else num_g
    _check_1d(qp, "q_pids", num_q, q_what)
    _check_1d(qc, "q_camids", num_q, q_what)
    _check_1d(gp, "g_pids", num_g, g_what)
    _check_1d(gc, "g_camids", num_g, g_what)
    return qp, gp, qc, gc


def evaluate_rank_chunked(
    blocks: Iterable[tuple[slice, Array]],
    q_pids: Array,
    g_pids: Array,
    q_camids: Array,
    g_camids: Array,
    max_rank: int = 50,
) -> dict[str, Any]:
    """:func:`~reid_attn.metrics.evaluate_rank` from the distance matrix given in blocks of
    query rows, holding one block at a time; the result equals ``evaluate_rank`` on the full
    matrix exactly (same protocol, ties, skipped queries).

    Args:
        blocks: ``(rows, block)`` pairs: ``rows`` slices of query indices, consecutive and
            covering ``0 .. num_q - 1`` in order (``num_q = len(q_pids)``), ``block`` their
            ``(len(rows), num_g)`` distances (numpy or torch, CPU or CUDA). Typically
            :func:`iter_distances` or :func:`~reid_attn.metrics.iter_re_ranking_from_features`.
        q_pids, q_camids: ``(num_q,)``. g_pids, g_camids: ``(num_g,)``.
        max_rank: length of the CMC curve (>= 1).

    Returns:
        ``{"cmc": np.ndarray (max_rank,), "mAP": float, "mINP": float}``, fractions in [0, 1].

    Raises:
        ValueError: on malformed labels or blocks, or if no query has a valid true match.
    """
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    qp, gp, qc, gc = _labels(q_pids, g_pids, q_camids, g_camids)
    num_q, num_g = len(qp), len(gp)
    ranks: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    done = 0
    for rows, block in blocks:
        start, stop = rows.start, rows.stop
        if start != done or not done < stop <= num_q or tuple(block.shape) != (stop - start, num_g):
            raise ValueError(
                f"evaluate_rank_chunked: expected the block of queries {done}:... with {num_g} "
                f"columns (blocks consecutive, in order, within {num_q} queries), got queries "
                f"{start}:{stop} with shape {tuple(block.shape)}"
            )
        found = match_ranks(block, qp[rows], gp, qc[rows], gc)
        ranks.append(found.rank)
        counts.append(np.diff(found.offsets))
        done = stop
    if done != num_q:
        raise ValueError(
            f"evaluate_rank_chunked: the blocks cover queries 0:{done} of {num_q}; they must "
            "cover every query"
        )
    return _metrics(ranks, counts, int(max_rank), num_q, num_g)


def _metrics(
    ranks: list[np.ndarray], counts: list[np.ndarray], max_rank: int, num_q: int, num_g: int
) -> dict[str, Any]:
    """CMC, mAP and mINP from the per-block ranks of the true matches of the valid queries, in
    query order (``counts``: matches per valid query)."""
    count = np.concatenate([np.zeros(0, dtype=np.int64), *counts])
    rank = np.concatenate([np.zeros(0, dtype=np.int64), *ranks])
    offsets = np.concatenate([[0], np.cumsum(count)]).astype(np.int64)
    return metrics_from_ranks(rank, offsets, max_rank, num_q, num_g)


def evaluate_features(
    query_features: Array,
    gallery_features: Array,
    q_pids: Array,
    g_pids: Array,
    q_camids: Array,
    g_camids: Array,
    distance: str = "euclidean",
    max_rank: int = 50,
    *,
    rerank: bool = False,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """CMC / mAP / mINP of query features against gallery features, one block of queries at
    a time, without ever holding the whole matrix: the figures of ``evaluate_rank`` on
    ``compute_distance(q, g, distance)`` (the same distances, bit for bit, see
    :func:`iter_distances`) or, with ``rerank``, on :func:`~reid_attn.metrics.re_ranking` of
    the three dense matrices (whose values the features version reproduces to float rounding).

    Args:
        query_features: ``(num_q, dim)``; gallery_features: ``(num_g, dim)`` (numpy or torch,
            CPU or CUDA, same device; computed in float32 there).
        q_pids, q_camids: ``(num_q,)``. g_pids, g_camids: ``(num_g,)``.
        distance: ``"euclidean"`` (squared) or ``"cosine"``.
        max_rank: length of the CMC curve.
        rerank: k-reciprocal re-ranking with ``k1``, ``k2``, ``lambda_value``, computed from
            the features (:func:`~reid_attn.metrics.iter_re_ranking_from_features`).
        chunk_size: queries per block (memory ``O(chunk_size * num_g)``; at most
            ``max(chunk_size, 32)``, balanced); default: 256 MB blocks, ``2**26 / num_g``.

    Returns:
        ``{"cmc": np.ndarray (max_rank,), "mAP": float, "mINP": float}``.

    Raises:
        ValueError: on malformed features, labels or parameters, or if no query has a valid
            true match.
    """
    caller = "evaluate_features"
    check_distance(distance)
    check_chunk(chunk_size, "chunk_size", caller)
    q, g = as_features(query_features, gallery_features, caller)
    _labels(q_pids, g_pids, q_camids, g_camids, len(q), len(g))
    chunk = default_query_chunk(len(g)) if chunk_size is None else int(chunk_size)
    if rerank:
        blocks = iter_re_ranking_from_features(
            q, g, k1, k2, lambda_value, distance, query_chunk=chunk
        )
    else:
        blocks = iter_distances(q, g, distance, chunk)
    return evaluate_rank_chunked(blocks, q_pids, g_pids, q_camids, g_camids, max_rank)
