"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) with top-k neighbours and sparse vectors.

The standard ("dense") formulation, used by the authors' code and torchreid, builds the full
``N x N`` matrix (``N = num_q + num_g``) of all distances, normalises it by its column maxima,
transposes it, argsorts every row, fills a dense ``N x N`` matrix ``V`` of k-reciprocal
weights, averages rows of ``V`` over each item's ``k2`` nearest neighbours (local query
expansion), and computes the Jaccard distance of every query to every item through an
inverted index. Only small parts of those matrices matter:

* the k-reciprocal sets need the first ``k1 + 1`` neighbours of every item in the order of a
  stable sort on ``(distance, index)``: a top-k per row (``torch.topk`` on row blocks of the
  normalised matrix, with exact tie handling at the cut) gives them;
* ``V`` has a few dozen non-zeros per row, stored as sparse rows; the expansion weights read
  the few distances they need straight from the input matrices;
* the Jaccard distance of a query to a gallery item only involves their common non-zeros: it
  is accumulated per block of queries over an inverted (column) index of the gallery rows.

Memory is ``O(block * N)`` plus the ``num_q x num_g`` output, instead of several dense
``N x N`` matrices; time is dominated by one top-k pass over the ``N x N`` distances.

Everything after the neighbour lists (:func:`sparse_vectors`, :class:`JaccardIndex`) is shared
with :mod:`reid_attn.metrics.rerank_features`, which finds the neighbours from the features
instead of from distance matrices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from reid_attn.metrics.rank import ragged_ranges

__all__ = [
    "JaccardIndex",
    "check_rerank_params",
    "neighbour_counts",
    "re_ranking",
    "sparse_vectors",
]

#: Elements of the float32 row block of the normalised ``N x N`` matrix built at once (32 MB).
_BLOCK_ELEMENTS = 1 << 23
#: Query rows per Jaccard step.
_JACCARD_ROWS = 64
#: Source rows per tile when copying a transposed column block (keeps the copy cache-friendly).
_TRANSPOSE_TILE = 512


def _as_numpy(x: Any, name: str) -> np.ndarray:
    """numpy view/copy of a numpy array or torch tensor (CPU or CUDA), 2-D."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(arr.shape)}")
    return arr


def _copy_transposed(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src.T`` for a column slice ``src`` ``(n, b)`` of a row-major matrix, tile by
    tile (a plain strided copy is several times slower)."""
    for start in range(0, src.shape[0], _TRANSPOSE_TILE):
        dst[:, start : start + _TRANSPOSE_TILE] = src[start : start + _TRANSPOSE_TILE].T


class _Distances:
    """Read access to the normalised, transposed matrix of the dense formulation.

    With ``M = [[q_q, q_g], [q_g^T, g_g]]`` (``N x N``) cast to float32, the dense formulation
    works on ``W = (M / M.max(axis=0)).T``, i.e. ``W[i, j] = M[j, i] / max_k M[k, i]``. Items
    ``0 .. num_q - 1`` are the queries, ``num_q ..`` the gallery.
    """

    def __init__(self, q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray) -> None:
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.num_q, self.num_g = q_g.shape
        self.num = self.num_q + self.num_g
        col_max = np.concatenate(
            [
                np.maximum(q_q.max(axis=0, initial=-np.inf), q_g.max(axis=1, initial=-np.inf)),
                np.maximum(q_g.max(axis=0, initial=-np.inf), g_g.max(axis=0, initial=-np.inf)),
            ]
        )
        # float32 rounding is monotone: the max of the rounded values is the rounded max.
        self.scale = col_max.astype(np.float32)
        if not np.all(np.isfinite(self.scale)) or np.any(self.scale <= 0):
            raise ValueError(
                "re_ranking: the distance matrices must be finite and every item needs a "
                "positive distance to some item (the column maxima normalise the distances)"
            )

    def rows(self, start: int, stop: int) -> np.ndarray:
        """``W[start:stop]``, float32, shape ``(stop - start, N)``."""
        nq = self.num_q
        block = np.empty((stop - start, self.num), dtype=np.float32)
        q_stop = min(stop, nq)
        if start < q_stop:  # query rows: [q_q[:, i], q_g[i, :]]
            _copy_transposed(block[: q_stop - start, :nq], self.q_q[:, start:q_stop])
            block[: q_stop - start, nq:] = self.q_g[start:q_stop]
        g_start = max(start, nq)
        if g_start < stop:  # gallery rows: [q_g[:, j], g_g[:, j]]
            _copy_transposed(block[g_start - start :, :nq], self.q_g[:, g_start - nq : stop - nq])
            _copy_transposed(block[g_start - start :, nq:], self.g_g[:, g_start - nq : stop - nq])
        block /= self.scale[start:stop, None]
        return block

    def values(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """``W[i, j]`` (float32) for index arrays ``i``, ``j`` of shape ``(K,)``."""
        nq = self.num_q
        out = np.empty(len(i), dtype=np.float32)
        qi, qj = i < nq, j < nq
        for mask, matrix, r, c in (
            (qi & qj, self.q_q, j, i),
            (qi & ~qj, self.q_g, i, j - nq),
            (~qi & qj, self.q_g, j, i - nq),
            (~qi & ~qj, self.g_g, j - nq, i - nq),
        ):
            out[mask] = matrix[r[mask], c[mask]]
        out /= self.scale[i]
        return out


def _stable_select(values: np.ndarray, index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of each row's candidate columns in the order of a stable sort on
    ``(value, column)``.

    Args:
        values: ``(b, c)`` float32 values of ``c > k`` candidates per row, a superset of the
            row's ``k`` smallest: every other item of the row is ``>=`` the largest candidate.
        index: ``(b, c)`` their columns.
        k: number of neighbours.

    Returns:
        ``top`` ``(b, k)`` int32 and ``unsure`` ``(b,)`` bool: rows whose ``k``-th value equals
        their largest candidate value, where an item outside the candidates may tie at the cut
        with a smaller column; those rows must be resolved on the full row.
    """
    by_column = np.argsort(index, axis=1)
    index = np.take_along_axis(index, by_column, axis=1)
    values = np.take_along_axis(values, by_column, axis=1)
    order = np.argsort(values, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(index, order, axis=1).astype(np.int32)
    kth = np.take_along_axis(values, order[:, -1:], axis=1)[:, 0]
    return top, values.max(axis=1) == kth


def _block_topk(block: np.ndarray, k: int) -> np.ndarray:
    """``(b, k)`` int32: the first ``k`` columns of each row of ``block`` ``(b, n)`` (float32,
    ``k <= n``) in the order of a stable sort on ``(value, column)``."""
    if k + 1 > block.shape[1]:  # tiny problem: sort everything
        return np.argsort(block, axis=1, kind="stable")[:, :k].astype(np.int32)
    values, index = torch.topk(torch.from_numpy(block), k + 1, dim=1, largest=False, sorted=False)
    top, unsure = _stable_select(values.numpy(), index.numpy(), k)
    for r in np.flatnonzero(unsure):  # the (k+1)-th value ties the k-th: scan the whole row
        cand = np.flatnonzero(block[r] <= block[r, top[r, -1]])  # ascending column order
        top[r] = cand[np.argsort(block[r, cand], kind="stable")[:k]]
    return top


def _stable_topk(dist: _Distances, k: int) -> np.ndarray:
    """``(N, k)`` int32: the first ``k`` columns of each row of ``W`` in the order of a stable
    sort on ``(value, column)`` (``k <= N``)."""
    num = dist.num
    top = np.empty((num, k), dtype=np.int32)
    step = max(1, _BLOCK_ELEMENTS // num)
    for start in range(0, num, step):
        stop = min(num, start + step)
        top[start:stop] = _block_topk(dist.rows(start, stop), k)
    return top


def _reciprocal(neighbours: np.ndarray) -> np.ndarray:
    """``(N, k)`` bool: ``neighbours[i, p]`` has ``i`` among its own first ``k`` neighbours."""
    num, k = neighbours.shape
    out = np.empty((num, k), dtype=bool)
    step = max(1, (1 << 22) // (k * k))
    for start in range(0, num, step):
        nb = neighbours[start : start + step]
        own = np.arange(start, start + len(nb))[:, None, None]
        out[start : start + step] = (neighbours[nb] == own).any(axis=2)
    return out


def _expansion_sets(top: np.ndarray, k1: int, num: int) -> tuple[np.ndarray, np.ndarray]:
    """Support of each row of ``V``: the k-reciprocal set ``R(i, k1)`` plus, for every
    candidate ``c`` in it, ``R(c, round(k1 / 2))`` when more than 2/3 of that set lies in
    ``R(i, k1)``. Returns CSR ``(indptr (N + 1,), indices)``, columns sorted per row."""
    k_full = min(k1 + 1, num)
    k_half = min(int(np.around(k1 / 2.0)) + 1, num)
    nb = top[:, :k_full]
    r_full = np.where(_reciprocal(nb), nb, -1)  # R(i, k1), -1 = not reciprocal
    nbh = top[:, :k_half]
    r_half = np.where(_reciprocal(nbh), nbh, -1)  # R(c, k1 / 2)
    half_size = (r_half >= 0).sum(axis=1)

    rows: list[np.ndarray] = []
    step = max(1, (1 << 22) // (k_full * k_half * k_full))
    for start in range(0, num, step):
        rf = r_full[start : start + step]  # (b, kf)
        cand = np.where(rf >= 0, rf, 0)
        sets = r_half[cand]  # (b, kf, kh): R(c, k1/2) of each candidate
        inside = (sets[..., None] == rf[:, None, None, :]).any(axis=3) & (sets >= 0)
        accept = (rf >= 0) & (inside.sum(axis=2) > 2.0 / 3.0 * half_size[cand])
        merged = np.concatenate([rf, np.where(accept[..., None], sets, -1).reshape(len(rf), -1)], 1)
        merged.sort(axis=1)
        keep = merged >= 0
        keep[:, 1:] &= merged[:, 1:] != merged[:, :-1]
        rows.append(np.where(keep, merged, -1))
    table = np.concatenate(rows)  # (N, width), sorted, -1 first and marks no entry
    keep = table >= 0
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    return indptr, table[keep]


def _row_weights(
    values: Callable[[np.ndarray, np.ndarray], np.ndarray], indptr: np.ndarray, indices: np.ndarray
) -> np.ndarray:
    """``V`` values: ``exp(-W[i, e])`` normalised to sum 1 over each row's support (float64).
    ``values(i, j)`` returns ``W[i, j]`` for index arrays ``i``, ``j`` of shape ``(K,)``."""
    row = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    weight = np.exp(-values(row, indices).astype(np.float64))
    return weight / np.bincount(row, weights=weight, minlength=len(indptr) - 1)[row]


def _query_expansion(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, top: np.ndarray, k2: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR of ``V_qe[i] = mean(V[top[i, :k2]])``; same CSR layout in and out."""
    num = len(indptr) - 1
    src = top[:, :k2]  # (N, k2) rows averaged into each row
    lengths = np.diff(indptr)[src].ravel()
    pick = ragged_ranges(indptr[:-1][src].ravel(), lengths)  # entries of those rows
    row = np.repeat(np.repeat(np.arange(num), src.shape[1]), lengths)
    key = row * num + indices[pick]
    order = np.argsort(key, kind="stable")
    key, values = key[order], data[pick][order]
    first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    sums = np.add.reduceat(values, first) / src.shape[1]
    out_row, out_col = np.divmod(key[first], num)
    out_indptr = np.concatenate([[0], np.cumsum(np.bincount(out_row, minlength=num))])
    return out_indptr, out_col, sums


def neighbour_counts(k1: int, k2: int, num: int) -> tuple[int, int]:
    """``(k, k2)``: the neighbours per item the pipeline needs (``max(k1 + 1, k2)``) and the
    query-expansion width, both capped at the ``num`` items."""
    k2 = min(int(k2), num)
    return min(max(int(k1) + 1, k2), num), k2


def sparse_vectors(
    top: np.ndarray,
    k1: int,
    k2: int,
    values: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR ``(indptr (N + 1,), indices, data)`` of the k-reciprocal vectors ``V`` after local
    query expansion, from the stable neighbour lists ``top`` ``(N, k)`` (``k`` and ``k2`` from
    :func:`neighbour_counts`) and ``values(i, j) = W[i, j]`` (float32, index arrays)."""
    indptr, indices = _expansion_sets(top, int(k1), len(top))
    data = _row_weights(values, indptr, indices)
    if k2 != 1:
        indptr, indices, data = _query_expansion(indptr, indices, data, top, k2)
    return indptr, indices, data


class JaccardIndex:
    """Jaccard distances between the query rows and the gallery rows of ``V`` (CSR, queries
    first), through an inverted (column) index of the gallery rows."""

    def __init__(
        self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, num_q: int
    ) -> None:
        num = len(indptr) - 1
        self.num_q, self.num_g = num_q, num - num_q
        self.indptr, self.indices, self.data = indptr, indices, data
        rows = np.repeat(np.arange(num), np.diff(indptr))
        self.query_rows = rows[: indptr[num_q]]
        in_gallery = rows[indptr[num_q] :] - num_q
        g_cols, g_vals = indices[indptr[num_q] :], data[indptr[num_q] :]
        by_col = np.argsort(g_cols, kind="stable")
        self.col_rows, self.col_vals = in_gallery[by_col], g_vals[by_col]
        self.col_ptr = np.concatenate([[0], np.cumsum(np.bincount(g_cols, minlength=num))])

    def rerank(
        self, start: int, stop: int, original: np.ndarray, lambda_value: float
    ) -> np.ndarray:
        """Re-ranked rows ``start:stop`` (queries), ``(stop - start, num_g)`` float32:
        ``(1 - lambda_value) * d_J + lambda_value * original``, with ``original`` the
        ``(stop - start, num_g)`` float32 normalised distances ``W[query, gallery]``."""
        num_g = self.num_g
        out = np.empty((stop - start, num_g), dtype=np.float32)
        for lo_row in range(start, stop, _JACCARD_ROWS):
            hi_row = min(stop, lo_row + _JACCARD_ROWS)
            lo, hi = self.indptr[lo_row], self.indptr[hi_row]
            q_row = self.query_rows[lo:hi] - lo_row
            q_col, q_val = self.indices[lo:hi], self.data[lo:hi]
            lengths = self.col_ptr[q_col + 1] - self.col_ptr[q_col]
            pick = ragged_ranges(self.col_ptr[q_col], lengths)  # gallery entries sharing a column
            pair_min = np.minimum(np.repeat(q_val, lengths), self.col_vals[pick])
            cell = np.repeat(q_row, lengths) * num_g + self.col_rows[pick]
            shared = np.bincount(cell, weights=pair_min, minlength=(hi_row - lo_row) * num_g)
            jaccard = 1.0 - shared / (2.0 - shared)
            out[lo_row - start : hi_row - start] = (
                jaccard.reshape(hi_row - lo_row, num_g) * (1.0 - lambda_value)
                + original[lo_row - start : hi_row - start] * lambda_value
            )
        return out


def check_rerank_params(k1: int, k2: int, lambda_value: float) -> None:
    """Raise ``ValueError`` unless ``k1``, ``k2`` are positive integers and ``lambda_value``
    lies in ``[0, 1]``."""
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"re_ranking: {name} must be a positive integer, got {value!r}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"re_ranking: lambda_value must lie in [0, 1], got {lambda_value!r}")


def re_ranking(
    q_g_dist: np.ndarray | torch.Tensor,
    q_q_dist: np.ndarray | torch.Tensor,
    g_g_dist: np.ndarray | torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranking of query-gallery distances (Zhong et al., CVPR 2017).

    Equal (to float32 rounding, within 1e-5) to the standard dense formulation: with
    ``M = [[q_q, q_g], [q_g^T, g_g]]`` in float32, ``W = (M / M.max(axis=0)).T``, neighbours
    from a stable argsort of each row of ``W``, k-reciprocal sets ``R(i, k1)`` expanded by the
    sets ``R(c, round(k1 / 2))`` of their members ``c`` that share more than 2/3 of their
    items with ``R(i, k1)``, weights ``exp(-W)`` normalised per row, local query expansion
    over the ``k2`` nearest neighbours (skipped when ``k2 == 1``), Jaccard distance ``d_J``
    and ``final = (1 - lambda_value) * d_J + lambda_value * W``, query rows, gallery columns.
    The inputs are used as given (no squaring: torchreid's copy squares its inputs first, so
    it equals this function applied to the squared matrices). Ties are broken by item index.

    Args:
        q_g_dist: ``(num_q, num_g)`` query-gallery distances (squared Euclidean or cosine
            style; numpy or torch, CPU or CUDA, moved to the CPU).
        q_q_dist: ``(num_q, num_q)`` query-query distances.
        g_g_dist: ``(num_g, num_g)`` gallery-gallery distances.
        k1: size of the k-reciprocal neighbourhoods (>= 1).
        k2: neighbours averaged by local query expansion (>= 1; 1 disables it).
        lambda_value: weight of the original distance, in ``[0, 1]``.

    Returns:
        ``(num_q, num_g)`` float32 re-ranked distances.

    Raises:
        ValueError: on inconsistent shapes, bad parameters, or non-finite distances.
    """
    check_rerank_params(k1, k2, lambda_value)
    q_g = _as_numpy(q_g_dist, "q_g_dist")
    q_q = _as_numpy(q_q_dist, "q_q_dist")
    g_g = _as_numpy(g_g_dist, "g_g_dist")
    num_q, num_g = q_g.shape
    if q_q.shape != (num_q, num_q) or g_g.shape != (num_g, num_g):
        raise ValueError(
            f"re_ranking: q_g_dist is {q_g.shape}, so q_q_dist must be ({num_q}, {num_q}) and "
            f"g_g_dist ({num_g}, {num_g}); got {q_q.shape} and {g_g.shape}"
        )
    if num_q == 0 or num_g == 0:
        return np.zeros((num_q, num_g), dtype=np.float32)
    dist = _Distances(q_g, q_q, g_g)
    k, k2 = neighbour_counts(k1, k2, dist.num)
    top = _stable_topk(dist, k)
    index = JaccardIndex(*sparse_vectors(top, k1, k2, dist.values), num_q)
    del top
    final = np.empty((num_q, num_g), dtype=np.float32)
    for start in range(0, num_q, _JACCARD_ROWS):
        stop = min(num_q, start + _JACCARD_ROWS)
        original = q_g[start:stop].astype(np.float32) / dist.scale[start:stop, None]
        final[start:stop] = index.rerank(start, stop, original, lambda_value)
    return final
