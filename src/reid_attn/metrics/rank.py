"""Ranking metrics (CMC, mAP, mINP) for person re-identification.

Implements the Market-1501 evaluation protocol (as used by torchreid): for every query the
gallery is ordered by ascending distance (ties broken by gallery index), gallery images that
share both the identity and the camera of the query are discarded, and queries without any
remaining true match are skipped.

All three metrics depend only on the rank of each true match, so the gallery is never sorted.
For a query with true matches at distances ``s_1 <= ... <= s_M`` (a handful per query), the
rank of match ``m`` (at gallery index ``j_m``) among all items is
``#{j : d_j <= s_m} - #{j >= j_m : d_j == s_m}``: one vectorised count over the row
(``O(M * num_g)`` comparisons, cheaper than an ``O(num_g log num_g)`` sort for small ``M``),
minus the items tied with the match at or after its index. Those ties are known from the few
same-identity items (true matches and same-camera "junk"), which are gathered and sorted per
query, unless another gallery item ties with a match; an equality count detects that, and
the tied items are then counted exactly too. Subtracting the junk items ranked before a match
gives its rank after junk removal. Rows with NaN match distances or very many matches use a
stable argsort of the row instead. Every path gives exactly the ranks of a stable sort on
``(distance, gallery index)`` with NaN last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["evaluate_rank", "match_ranks", "metrics_from_ranks"]

#: Default number of query rows processed at once (bounds peak memory to O(chunk * num_g)).
DEFAULT_CHUNK_SIZE = 256
#: Queries with more true matches than this are ranked by a stable argsort of their row, whose
#: ``O(num_g log num_g)`` cost is then below the ``O(num_matches * num_g)`` of counting.
MAX_COUNTED_MATCHES = 128
#: Elements of the boolean ``(rows, matches, num_g)`` comparison per step: ~1 MB keeps a step in
#: the CPU cache; on CUDA larger steps amortise kernel launches.
_COMPARE_BUDGET = 1 << 20
_COMPARE_BUDGET_CUDA = 1 << 26
#: Counts are summed in uint16 over column segments of at most this many gallery items.
_UINT16_SEGMENT = 65535

Array = np.ndarray | torch.Tensor


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a numpy array / torch tensor (CPU or CUDA) / array-like to a numpy array."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16
            t = t.float()
        return t.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - defensive
        raise ValueError(f"{name}: could not convert {type(x).__name__} to an array") from exc


def _as_distance(distmat: Any) -> Array:
    """The distance matrix as a floating numpy array, or a floating CUDA tensor kept on its
    device. Integer, float16 (numpy) and bfloat16 inputs are widened exactly (float64 /
    float32 / float32)."""
    if isinstance(distmat, torch.Tensor) and distmat.is_cuda:
        t = distmat.detach()
        if not t.is_floating_point():
            t = t.double()
        elif t.dtype == torch.bfloat16:
            t = t.float()
        return t
    dist = _to_numpy(distmat, "distmat")
    if not np.issubdtype(dist.dtype, np.floating):
        dist = dist.astype(np.float64)
    elif dist.dtype == np.float16:  # numpy emulates float16 comparisons (slow); exact widening
        dist = dist.astype(np.float32)
    return dist


def _check_1d(arr: np.ndarray, name: str, expected_len: int, axis_desc: str) -> None:
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D with shape ({expected_len},) ({axis_desc}), "
            f"got shape {tuple(arr.shape)}"
        )
    if arr.shape[0] != expected_len:
        raise ValueError(
            f"{name} must have length {expected_len} ({axis_desc}), got length {arr.shape[0]}"
        )


@dataclass
class MatchRanks:
    """Ranks of the true matches of every query that has at least one.

    Attributes:
        query: ``(num_matches,)`` int64 query index of each true match, non-decreasing.
        rank: ``(num_matches,)`` int64 1-based rank of the match in its query's gallery list
            after same-identity same-camera images are removed; increasing within a query.
        offsets: ``(num_valid + 1,)`` int64; the matches of the ``v``-th valid query are
            ``rank[offsets[v]:offsets[v + 1]]``.
    """

    query: np.ndarray
    rank: np.ndarray
    offsets: np.ndarray


def ragged_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated integer ranges ``[starts[k], starts[k] + lengths[k])``.

    ``starts``, ``lengths``: ``(K,)`` -> ``(lengths.sum(),)``.
    """
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))


def _gather(dist: Array, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``dist[rows, cols]`` as a numpy array; ``rows``, ``cols``: ``(K,)`` -> ``(K,)``."""
    if isinstance(dist, torch.Tensor):
        r = torch.as_tensor(rows, device=dist.device)
        c = torch.as_tensor(cols, device=dist.device)
        return dist[r, c].cpu().numpy()
    return dist[rows, cols]


def _rows(dist: Array, rows: np.ndarray) -> Array:
    """``dist[rows]``: ``(len(rows), num_g)`` on the array's own device."""
    if isinstance(dist, torch.Tensor):
        return dist[torch.as_tensor(rows, device=dist.device)]
    return dist[rows]


def _count_at_most(block: Array, thresholds: Array) -> tuple[np.ndarray, int]:
    """Per-threshold counts of the items of each row that are ``<=`` the threshold.

    Args:
        block: ``(b, num_g)`` distances.
        thresholds: ``(b, m)`` of the same dtype; NaN entries are padding and count nothing.

    Returns:
        ``(counts, num_equal)``: ``counts`` ``(b, m)`` int64 with
        ``counts[r, k] = #{j : block[r, j] <= thresholds[r, k]}``, and ``num_equal``, the number
        of ``(r, k, j)`` with ``block[r, j] == thresholds[r, k]``.
    """
    if isinstance(block, torch.Tensor):
        left, right = block.unsqueeze(1), thresholds.unsqueeze(2)
        counts = (left <= right).sum(dim=2)
        return counts.cpu().numpy().astype(np.int64), int((left == right).sum().item())
    right = thresholds[:, :, None]
    counts = _count_last_axis(block[:, None, :] <= right)
    num_equal = int(np.count_nonzero(block[:, None, :] == right))
    return counts, num_equal


def _count_last_axis(mask: np.ndarray) -> np.ndarray:
    """``mask.sum(axis=-1)`` as int64 for a bool array, summing the bytes in uint16 over
    segments of at most 65535 (several times faster than an int64 accumulator)."""
    counts = np.zeros(mask.shape[:-1], dtype=np.int64)
    for start in range(0, mask.shape[-1], _UINT16_SEGMENT):
        segment = mask[..., start : start + _UINT16_SEGMENT]
        counts += segment.view(np.uint8).sum(axis=-1, dtype=np.uint16)
    return counts


def _like(values: np.ndarray, ref: Array) -> Array:
    """``values`` with the dtype (and, for tensors, the device) of ``ref``."""
    if isinstance(ref, torch.Tensor):
        return torch.as_tensor(values, dtype=ref.dtype, device=ref.device)
    return values.astype(ref.dtype)


def _equal_at_or_after(
    block: Array, thresholds: Array, match_g: np.ndarray, few: bool
) -> np.ndarray:
    """``(b, m)`` int64: ``#{j >= match_g[r, k] : block[r, j] == thresholds[r, k]}``.

    ``block`` ``(b, num_g)``; ``thresholds``, ``match_g`` ``(b, m)`` (the gallery index of the
    match each threshold belongs to). With ``few`` equalities their flat indices are listed;
    otherwise (or on CUDA) the equal-and-at-or-after mask is counted.
    """
    b, num_g = block.shape
    width = thresholds.shape[1]
    match_g = match_g[:, :width]
    if isinstance(block, torch.Tensor):
        equal = block.unsqueeze(1) == thresholds.unsqueeze(2)
        column = torch.arange(num_g, device=block.device)
        after = column >= torch.as_tensor(match_g, device=block.device).unsqueeze(2)
        return (equal & after).sum(dim=2).cpu().numpy().astype(np.int64)
    if not few:
        column = np.arange(num_g, dtype=np.int32)
        equal = block[:, None, :] == thresholds[:, :, None]
        equal &= column >= match_g.astype(np.int32)[:, :, None]
        return _count_last_axis(equal)
    flat = np.flatnonzero(block[:, None, :] == thresholds[:, :, None])
    pair, col = np.divmod(flat, num_g)  # pair = r * width + k
    after = col >= match_g.reshape(-1)[pair]
    return np.bincount(pair[after], minlength=b * width).reshape(b, width)


def _stable_positions(block: Array, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """0-based position of gallery item ``cols[k]`` in the stable ascending order of row
    ``rows[k]`` of ``block`` (``(b, num_g)``); ``rows``, ``cols``: ``(K,)`` -> ``(K,)``."""
    values = block.cpu().numpy() if isinstance(block, torch.Tensor) else block
    order = np.argsort(values, axis=1, kind="stable")
    inverse = np.empty_like(order)
    np.put_along_axis(inverse, order, np.arange(order.shape[1])[None, :], axis=1)
    return inverse[rows, cols].astype(np.int64)


def match_ranks(
    distmat: Array,
    q_pids: Array,
    g_pids: Array,
    q_camids: Array,
    g_camids: Array,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> MatchRanks:
    """1-based ranks of every true match of every query, Market-1501 protocol, computed
    without sorting the gallery (see the module docstring).

    Args:
        distmat: ``(num_q, num_g)`` distances, numpy or torch (CPU or CUDA; CUDA stays there).
        q_pids, q_camids: ``(num_q,)``. g_pids, g_camids: ``(num_g,)``.
        chunk_size: queries per processed block (memory ``O(chunk_size * num_g)``).

    Returns:
        :class:`MatchRanks`. The arrays are validated by :func:`evaluate_rank`; call that for
        metrics.
    """
    dist = _as_distance(distmat)
    qp, gp = _to_numpy(q_pids, "q_pids"), _to_numpy(g_pids, "g_pids")
    qc, gc = _to_numpy(q_camids, "q_camids"), _to_numpy(g_camids, "g_camids")
    num_q, num_g = dist.shape

    # Every (query, gallery) pair with the same pid: true matches and same-camera junk.
    g_order = np.argsort(gp, kind="stable")
    g_sorted = gp[g_order]
    first = np.searchsorted(g_sorted, qp, side="left")
    num_same = np.searchsorted(g_sorted, qp, side="right") - first
    total = int(num_same.sum())
    q_idx = np.repeat(np.arange(num_q, dtype=np.int64), num_same)
    g_idx = g_order[ragged_ranges(first, num_same)]
    d_same = _gather(dist, q_idx, g_idx) if total else np.zeros(0, dtype=np.float64)
    # Order each query's same-pid items by (distance, gallery index), NaN last (as argsort).
    order = np.lexsort((g_idx, d_same, q_idx))
    q_idx, g_idx, d_same = q_idx[order], g_idx[order], d_same[order]
    is_match = gc[g_idx] != qc[q_idx]

    # Per same-pid item: pos, its index in the query's list; match_pos, the number of true
    # matches before it; run_end, the end (exclusive) of the run of list items with the same
    # distance; run_len, that run's length.
    row_start = np.cumsum(num_same) - num_same
    pos = np.arange(total) - row_start[q_idx]
    before = np.cumsum(is_match) - is_match
    match_pos = before - before[row_start[q_idx]] if total else before
    new_run = np.ones(total, dtype=bool)
    if total > 1:
        new_run[1:] = (q_idx[1:] != q_idx[:-1]) | (d_same[1:] != d_same[:-1])
    run_first = np.flatnonzero(new_run)
    run_id = np.cumsum(new_run) - 1
    run_stop = np.append(run_first[1:], total)[run_id]
    run_end = run_stop - row_start[q_idx]
    run_len = run_stop - run_first[run_id]

    # The true matches, grouped by query in ascending (distance, gallery index) order.
    m_q, m_d, m_g, m_col = q_idx[is_match], d_same[is_match], g_idx[is_match], match_pos[is_match]
    m_junk_before = (pos - match_pos)[is_match]  # same-camera items ranked before the match
    m_run_after = (run_end - pos)[is_match]  # list items of its run at or after it (itself too)
    num_match = np.bincount(m_q, minlength=num_q)
    m_start = np.cumsum(num_match) - num_match
    # Equalities the count pass finds when no item outside the list ties with a match.
    expected_equal = np.bincount(m_q, weights=run_len[is_match], minlength=num_q)
    has_nan = np.bincount(m_q, weights=np.isnan(m_d), minlength=num_q) > 0
    m_rank = np.zeros(len(m_q), dtype=np.int64)

    # Rank among the kept items = #{items before the match in (distance, index) order} + 1
    # - (same-camera items before it); #{before} = #{d_j <= s_m} - #{j >= j_m : d_j == s_m}.
    counted = (num_match > 0) & (num_match <= MAX_COUNTED_MATCHES) & ~has_nan
    queue = np.flatnonzero(counted)
    queue = queue[np.argsort(num_match[queue], kind="stable")]  # similar match counts together
    sel = ragged_ranges(m_start[queue], num_match[queue])  # queued rows' matches, queue order
    local = np.repeat(np.arange(len(queue)), num_match[queue])
    col = m_col[sel]
    width = int(num_match[queue].max()) if len(queue) else 0
    thr = np.full((len(queue), width), np.nan)  # each row's sorted match distances, NaN-padded
    thr[local, col] = m_d[sel]
    match_g = np.full((len(queue), width), num_g, dtype=np.int64)
    match_g[local, col] = m_g[sel]
    at_or_after = np.zeros((len(queue), width), dtype=np.int64)
    at_or_after[local, col] = m_run_after[sel]  # correct unless an outside item ties
    counts = np.zeros((len(queue), width), dtype=np.int64)
    budget = _COMPARE_BUDGET_CUDA if isinstance(dist, torch.Tensor) else _COMPARE_BUDGET
    start = 0
    while start < len(queue):
        stop = min(len(queue), start + chunk_size)
        for _ in range(2):  # rows whose widest (= last, the queue is sorted) fits the budget
            w = int(num_match[queue[stop - 1]])
            stop = min(stop, start + max(1, budget // (w * num_g)))
        w = int(num_match[queue[stop - 1]])
        rows = queue[start:stop]
        sub = _rows(dist, rows)
        thresholds = _like(thr[start:stop, :w], sub)
        counts[start:stop, :w], num_equal = _count_at_most(sub, thresholds)
        excess = num_equal - int(expected_equal[rows].sum())
        if excess:  # some gallery items outside the same-pid list tie with a match
            few = excess <= len(rows) * w  # about one extra tie per match or fewer
            at_or_after[start:stop, :w] = _equal_at_or_after(
                sub, thresholds, match_g[start:stop], few
            )
        start = stop
    m_rank[sel] = counts[local, col] - at_or_after[local, col] + 1 - m_junk_before[sel]

    # NaN match distances and very many matches: stable argsort of the row.
    fallback = np.flatnonzero((num_match > 0) & ~counted)
    for chunk_start in range(0, len(fallback), chunk_size):
        rows = fallback[chunk_start : chunk_start + chunk_size]
        sel = ragged_ranges(m_start[rows], num_match[rows])
        local = np.repeat(np.arange(len(rows)), num_match[rows])
        position = _stable_positions(_rows(dist, rows), local, m_g[sel])
        m_rank[sel] = position + 1 - m_junk_before[sel]

    valid = num_match[num_match > 0]
    offsets = np.concatenate([[0], np.cumsum(valid)]).astype(np.int64)
    return MatchRanks(query=m_q.astype(np.int64), rank=m_rank, offsets=offsets)


def evaluate_rank(
    distmat: np.ndarray | torch.Tensor,
    q_pids: np.ndarray | torch.Tensor,
    g_pids: np.ndarray | torch.Tensor,
    q_camids: np.ndarray | torch.Tensor,
    g_camids: np.ndarray | torch.Tensor,
    max_rank: int = 50,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, Any]:
    """Compute CMC, mAP and mINP with the Market-1501 protocol.

    For each query the gallery is ordered by ascending distance (ties broken by gallery index,
    i.e. as a stable sort; NaN distances last). Gallery images with the same pid *and* the same
    camid as the query are removed. A query with no remaining true match (same pid, different
    camera) is skipped.

    * ``cmc[k]``: fraction of valid queries whose first true match is at rank ``<= k + 1``
      (ranks counted after the removal). If fewer than ``max_rank`` gallery images remain for a
      query, its CMC curve is padded with its last value (which is 1 for a valid query), so the
      returned curve always has ``max_rank`` entries.
    * AP: mean over the true matches of the precision at that match's rank. ``mAP`` is the mean
      AP over valid queries.
    * INP: ``num_true_matches / rank_of_last_true_match``. ``mINP`` is the mean over valid
      queries.

    The gallery is not sorted: see :func:`match_ranks` (exact, typically >10x faster than
    ``np.argsort`` of the matrix).

    Args:
        distmat: Distance matrix of shape ``(num_q, num_g)``; smaller means more similar.
        q_pids: Query person ids, shape ``(num_q,)``.
        g_pids: Gallery person ids, shape ``(num_g,)``.
        q_camids: Query camera ids, shape ``(num_q,)``.
        g_camids: Gallery camera ids, shape ``(num_g,)``.
        max_rank: Length of the returned CMC curve (must be ``>= 1``).
        chunk_size: Number of queries processed per vectorised chunk (memory is
            ``O(chunk_size * num_g)``).

    All array arguments may be numpy arrays or torch tensors (CPU or CUDA; a CUDA distance
    matrix is processed on its device).

    Returns:
        ``{"cmc": np.ndarray of shape (max_rank,) float64, "mAP": float, "mINP": float}``,
        all values being fractions in ``[0, 1]``.

    Raises:
        ValueError: On malformed shapes/arguments, or if no query has a valid true match.
    """
    dist = distmat if isinstance(distmat, torch.Tensor) else _to_numpy(distmat, "distmat")
    if dist.ndim != 2:
        raise ValueError(
            f"distmat must be 2-D with shape (num_q, num_g), got shape {tuple(dist.shape)}"
        )
    num_q, num_g = dist.shape
    qp = _to_numpy(q_pids, "q_pids")
    gp = _to_numpy(g_pids, "g_pids")
    qc = _to_numpy(q_camids, "q_camids")
    gc = _to_numpy(g_camids, "g_camids")
    _check_1d(qp, "q_pids", num_q, "num_q = distmat.shape[0]")
    _check_1d(qc, "q_camids", num_q, "num_q = distmat.shape[0]")
    _check_1d(gp, "g_pids", num_g, "num_g = distmat.shape[1]")
    _check_1d(gc, "g_camids", num_g, "num_g = distmat.shape[1]")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    max_rank = int(max_rank)

    ranks = match_ranks(dist, qp, gp, qc, gc, chunk_size=int(chunk_size))
    return metrics_from_ranks(ranks.rank, ranks.offsets, max_rank, num_q, num_g)


def metrics_from_ranks(
    rank: np.ndarray, offsets: np.ndarray, max_rank: int, num_q: int, num_g: int
) -> dict[str, Any]:
    """CMC, mAP and mINP (see :func:`evaluate_rank`) from the 1-based ranks of the true matches
    of the valid queries: ``rank[offsets[v]:offsets[v + 1]]`` ascending for valid query ``v``
    (the layout :func:`match_ranks` returns). ``num_q``, ``num_g`` only go into the error."""
    num_valid = len(offsets) - 1
    if num_valid == 0:
        raise ValueError(
            "evaluate_rank: no query has a valid true match in the gallery (a gallery image "
            "with the same pid but a different camid); cannot compute CMC/mAP/mINP "
            f"(num_q={num_q}, num_g={num_g})"
        )
    counts = np.diff(offsets)
    valid_id = np.repeat(np.arange(num_valid), counts)
    hits = np.arange(len(rank)) - offsets[valid_id] + 1  # 1..M within each query
    ap = np.bincount(valid_id, weights=hits / rank, minlength=num_valid) / counts
    first_rank = rank[offsets[:-1]]
    last_rank = rank[offsets[1:] - 1]
    first_hist = np.bincount(np.minimum(first_rank, max_rank + 1), minlength=max_rank + 2)
    cmc = np.cumsum(first_hist[1 : max_rank + 1]).astype(np.float64) / num_valid
    return {
        "cmc": cmc,
        "mAP": float(ap.sum()) / num_valid,
        "mINP": float((counts / last_rank).sum()) / num_valid,
    }
