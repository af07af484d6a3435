"""k-reciprocal re-ranking from features, without any ``N x N`` matrix (MSMT17 scale).

:func:`~reid_attn.metrics.re_ranking` takes the three distance matrices; at MSMT17 size
(11,659 queries, 82,161 gallery images, ``N = 93,820``) the gallery-gallery one alone is 27 GB
of float32. :func:`re_ranking_from_features` computes the same result, the dense formulation
described in :mod:`reid_attn.metrics.rerank` applied to ``compute_distance(q, g)``,
``compute_distance(q, q)`` and ``compute_distance(g, g)``, from the features:

* Neighbours. The items (queries first, then gallery) are cut into blocks; every tile
  ``(I, J)``, ``I <= J``, of the symmetric ``N x N`` distance matrix is computed once by
  :func:`~reid_attn.metrics.compute_distance` (a matrix product), and ``torch.topk`` of its
  rows and of its columns updates, for every item, a running list of its ``k + 8`` nearest
  candidates (``k = max(k1 + 1, k2)``) and its largest distance ``s_i``. The dense formulation
  divides item ``i``'s distances by ``s_i``, which keeps their order except that distinct
  values may round to equal ones (then ordered by index), so the candidates are divided by
  ``s_i`` and stably sorted on ``(value, index)``. Only where the ``k``-th value ties the last
  candidate may an item outside the list belong: such rows (heavy exact ties only) are
  recomputed in full from the same tiles.
* ``V``, local query expansion and Jaccard distances: the sparse code of
  :mod:`reid_attn.metrics.rerank`. The distances the weights of ``V`` need come from the
  candidate lists, or are computed for the pair when missing.
* Output: blocks of queries, each combined with its ``(block, num_g)`` distances.

Memory: the features (one float32 copy of query + gallery), a few ``block x block`` tiles,
``N * (k + 8)`` candidates, the sparse ``V`` (tens to hundreds of entries per item), and one
``query_chunk x num_g`` output block. Time: half of one ``N x N x dim`` matrix product, plus a
top-k pass over its entries.

Exactness: the neighbour lists depend on the order of the distances, ties included, so the
tiles must round as the full products ``q @ g.T``, ``q @ q.T``, ``g @ g.T`` do. With MKL on CPU
they do, bit for bit, when a tile has at least a dozen rows and columns (smaller products take
other code paths), so blocks hold at least 16 items unless a whole query or gallery set is
smaller (then it is one block, the very product of the dense computation). Tiles are computed
in the dense computation's orientation (queries before gallery). The weights of pairs that are
computed one by one may differ in the last bit, far below the 1e-5 tolerance. On CUDA the
products may round differently by block shape: near-ties at a neighbourhood's edge could then
differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from reid_attn.metrics.distance import DISTANCE_NAMES, compute_distance
from reid_attn.metrics.rerank import (
    JaccardIndex,
    _block_topk,
    _stable_select,
    check_rerank_params,
    neighbour_counts,
    sparse_vectors,
)

__all__ = ["iter_re_ranking_from_features", "re_ranking_from_features"]

#: Default items per block of the neighbour search: 4096 x 4096 float32 tiles (64 MB).
DEFAULT_BLOCK = 4096
#: Smallest block limit: a smaller one counts as this, so blocks hold at least half of it
#: (unless the whole range is shorter) and their matrix products round as full ones do.
MIN_BLOCK = 32
#: Default elements of one ``query_chunk x num_g`` block of output (256 MB in float32).
OUTPUT_ELEMENTS = 1 << 26
#: Candidates kept per item beyond its ``k`` neighbours (absorb ties made by normalising).
_SLACK = 8
#: Feature elements gathered per step when computing the distances of single pairs (32 MB).
_PAIR_ELEMENTS = 1 << 23


def balanced_slices(start: int, stop: int, max_size: int) -> list[slice]:
    """``[start, stop)`` cut into the fewest consecutive slices of at most
    ``max(max_size, MIN_BLOCK)`` items, of equal sizes within one item."""
    size = stop - start
    if size <= 0:
        return []
    count = -(-size // max(max_size, MIN_BLOCK))
    edges = start + (np.arange(count + 1) * size) // count
    return [slice(int(a), int(b)) for a, b in pairwise(edges.tolist())]


def default_query_chunk(num_g: int) -> int:
    """Queries per output block when none is given: ``OUTPUT_ELEMENTS`` distances (256 MB)."""
    return max(1, OUTPUT_ELEMENTS // max(1, num_g))


def check_chunk(value: Any, name: str, caller: str) -> None:
    """Raise ``ValueError`` unless ``value`` is ``None`` or a positive integer."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{caller}: {name} must be a positive integer or None, got {value!r}")


def check_distance(distance: str) -> None:
    """Raise ``ValueError`` unless ``distance`` is a known distance name."""
    if distance not in DISTANCE_NAMES:
        raise ValueError(f"unknown distance {distance!r}; valid names: {', '.join(DISTANCE_NAMES)}")


def as_features(query_features: Any, gallery_features: Any, caller: str) -> tuple[Tensor, Tensor]:
    """Validated ``(num_q, dim)`` and ``(num_g, dim)`` float32 tensors on their common device
    (numpy arrays become CPU tensors; float32 tensors are not copied)."""
    out = []
    for name, feats in (("query_features", query_features), ("gallery_features", gallery_features)):
        t = feats.detach() if isinstance(feats, Tensor) else torch.as_tensor(np.asarray(feats))
        if t.ndim != 2:
            raise ValueError(
                f"{caller}: {name} must be a 2-D (num_items, dim) matrix, got shape "
                f"{tuple(t.shape)}"
            )
        out.append(t.float())
    q, g = out
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            f"{caller}: query_features have dimension {q.shape[1]} but gallery_features have "
            f"dimension {g.shape[1]}; they must be the same"
        )
    if q.device != g.device:
        raise ValueError(
            f"{caller}: query_features are on {q.device} but gallery_features on {g.device}; "
            "put both on the same device"
        )
    if not (bool(torch.isfinite(q).all()) and bool(torch.isfinite(g).all())):
        raise ValueError(f"{caller}: the features must be finite (found NaN or inf)")
    return q, g


def _tile(x: Tensor, rows: slice, cols: slice, distance: str) -> Tensor:
    """Distances of items ``rows`` to items ``cols``: ``(len(rows), len(cols))`` float32."""
    return compute_distance(x[rows], x[cols], distance)


def _neighbours(
    x: Tensor, blocks: list[slice], k: int, distance: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate neighbours of every item from the tiles ``(I, J)``, ``I <= J``.

    Returns ``(index, raw, scale)``: ``index`` ``(N, c)`` int64 and ``raw`` ``(N, c)`` float32,
    the ``c = min(k + 8, N)`` items nearest each item (in no order) and their distances, and
    ``scale`` ``(N,)`` float32, each item's largest distance. Every item outside a row's
    candidates is at least as far as all of them.
    """
    num, device = len(x), x.device
    width = min(k + _SLACK, num)
    raw = torch.full((num, width), torch.inf, device=device)
    index = torch.zeros((num, width), dtype=torch.long, device=device)
    largest = torch.full((num,), -torch.inf, device=device)

    def absorb(rows: slice, tile: Tensor, offset: int) -> None:
        largest[rows] = torch.maximum(largest[rows], tile.amax(dim=1))
        values, cols = torch.topk(
            tile, min(width, tile.shape[1]), dim=1, largest=False, sorted=False
        )
        values = torch.cat([raw[rows], values], dim=1)
        cols = torch.cat([index[rows], cols + offset], dim=1)
        values, pick = torch.topk(values, width, dim=1, largest=False, sorted=False)
        raw[rows] = values
        index[rows] = cols.gather(1, pick)

    for n, rows in enumerate(blocks):
        for m in range(n, len(blocks)):
            tile = _tile(x, rows, blocks[m], distance)
            absorb(rows, tile, blocks[m].start)
            if m != n:
                absorb(blocks[m], tile.T.contiguous(), rows.start)
    return index.cpu().numpy(), raw.cpu().numpy(), largest.cpu().numpy()


def _resolve_rows(
    top: np.ndarray,
    rows: np.ndarray,
    x: Tensor,
    blocks: list[slice],
    scale: np.ndarray,
    distance: str,
) -> None:
    """Recompute ``top[rows]`` from full rows of ``W``, rebuilt from the very tiles the
    neighbour search used (so bit for bit the same distances), in groups of rows of one block
    holding at most ``OUTPUT_ELEMENTS`` distances."""
    num, k = len(x), top.shape[1]
    group_size = max(1, OUTPUT_ELEMENTS // num)
    for n, block in enumerate(blocks):
        inside = rows[(rows >= block.start) & (rows < block.stop)]
        for start in range(0, len(inside), group_size):
            group = inside[start : start + group_size]
            local = torch.as_tensor(group - block.start, device=x.device)
            strip = torch.cat(
                [
                    _tile(x, other, block, distance)[:, local].T
                    if m < n
                    else _tile(x, block, other, distance)[local]
                    for m, other in enumerate(blocks)
                ],
                dim=1,
            )
            top[group] = _block_topk(strip.cpu().numpy() / scale[group, None], k)


def _pair_distances(x: Tensor, i: np.ndarray, j: np.ndarray, distance: str) -> np.ndarray:
    """``(K,)`` float32 distances of the item pairs ``(i[n], j[n])``, as
    :func:`~reid_attn.metrics.compute_distance` defines them (up to float rounding)."""
    out = np.empty(len(i), dtype=np.float32)
    step = max(1, _PAIR_ELEMENTS // max(1, x.shape[1]))
    for start in range(0, len(i), step):
        a = x[torch.as_tensor(i[start : start + step], device=x.device)]
        b = x[torch.as_tensor(j[start : start + step], device=x.device)]
        if distance == "cosine":
            d = 1.0 - (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1)
        else:
            d = (a.pow(2).sum(1) + b.pow(2).sum(1) - 2.0 * (a * b).sum(1)).clamp_min(0.0)
        out[start : start + step] = d.cpu().numpy()
    return out


def _normalised_values(
    x: Tensor, index: np.ndarray, raw: np.ndarray, scale: np.ndarray, distance: str
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``values(i, j) = W[i, j] = d(i, j) / scale[i]`` (float32) for index arrays: the distance
    from row ``i``'s candidate list when ``j`` is in it, else computed for the pair."""
    num = len(index)
    by_col = np.argsort(index, axis=1)
    keys = (np.arange(num)[:, None] * num + np.take_along_axis(index, by_col, axis=1)).ravel()
    known = np.take_along_axis(raw, by_col, axis=1).ravel()

    def values(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        i, j = i.astype(np.int64), j.astype(np.int64)
        key = i * num + j
        pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        found = keys[pos] == key
        d = np.where(found, known[pos], np.float32(0))
        missing = np.flatnonzero(~found)
        d[missing] = _pair_distances(x, i[missing], j[missing], distance)
        return d / scale[i]

    return values


def _rerank_blocks(
    q: Tensor,
    g: Tensor,
    k1: int,
    k2: int,
    lambda_value: float,
    distance: str,
    block: int,
    query_chunk: int,
) -> Iterator[tuple[slice, np.ndarray]]:
    """The re-ranked distances of validated features, one query block at a time."""
    num_q, num_g = len(q), len(g)
    query_slices = balanced_slices(0, num_q, query_chunk)
    if num_g == 0:
        for rows in query_slices:
            yield rows, np.zeros((rows.stop - rows.start, 0), dtype=np.float32)
        return
    if num_q == 0:
        return
    x = torch.cat([q, g])
    num = len(x)
    blocks = balanced_slices(0, num_q, block) + balanced_slices(num_q, num, block)
    k, k2 = neighbour_counts(k1, k2, num)
    index, raw, scale = _neighbours(x, blocks, k, distance)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(
            "re_ranking_from_features: the distances must be finite and every item needs a "
            "positive distance to some item (the largest distance normalises each item's)"
        )
    # W[i] = d(i, .) / scale[i] in float32, as the dense formulation divides: its stable order
    # on the candidates, unless a tie at the cut reaches past them (then from the full row).
    top, unsure = _stable_select(raw / scale[:, None], index, k)
    if index.shape[1] < num and unsure.any():
        _resolve_rows(top, np.flatnonzero(unsure), x, blocks, scale, distance)
    values = _normalised_values(x, index, raw, scale, distance)
    jaccard = JaccardIndex(*sparse_vectors(top, k1, k2, values), num_q)
    del x, top, index, raw, values
    for rows in query_slices:
        original = compute_distance(q[rows], g, distance).cpu().numpy() / scale[rows, None]
        yield rows, jaccard.rerank(rows.start, rows.stop, original, lambda_value)


def _prepare(
    query_features: Any,
    gallery_features: Any,
    k1: int,
    k2: int,
    lambda_value: float,
    distance: str,
    chunk_size: int | None,
    query_chunk: int | None,
) -> tuple[Tensor, Tensor, int, int]:
    """Validate the arguments; return the features and the block and query-chunk sizes."""
    caller = "re_ranking_from_features"
    check_rerank_params(k1, k2, lambda_value)
    check_distance(distance)
    check_chunk(chunk_size, "chunk_size", caller)
    check_chunk(query_chunk, "query_chunk", caller)
    q, g = as_features(query_features, gallery_features, caller)
    chunk = default_query_chunk(len(g)) if query_chunk is None else int(query_chunk)
    return q, g, int(chunk_size or DEFAULT_BLOCK), chunk


def iter_re_ranking_from_features(
    query_features: np.ndarray | Tensor,
    gallery_features: np.ndarray | Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    distance: str = "euclidean",
    chunk_size: int | None = None,
    query_chunk: int | None = None,
) -> Iterator[tuple[slice, np.ndarray]]:
    """:func:`re_ranking_from_features` one block of queries at a time.

    The arguments are checked at the call; the neighbour search runs when the first block is
    requested. Yields ``(rows, block)``: ``rows`` a slice of query indices (consecutive,
    covering ``0 .. num_q - 1`` in order) and ``block`` its ``(len(rows), num_g)`` float32
    re-ranked distances. ``query_chunk``: queries per block (at most ``max(query_chunk, 32)``;
    default: about ``2**26 / num_g``, i.e. 256 MB blocks). The other arguments are those of
    :func:`re_ranking_from_features`.
    """
    q, g, block, chunk = _prepare(
        query_features, gallery_features, k1, k2, lambda_value, distance, chunk_size, query_chunk
    )
    return _rerank_blocks(q, g, k1, k2, lambda_value, distance, block, chunk)


def re_ranking_from_features(
    query_features: np.ndarray | Tensor,
    gallery_features: np.ndarray | Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    distance: str = "euclidean",
    chunk_size: int | None = None,
) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) computed from the features.

    Equals ``re_ranking(compute_distance(q, g), compute_distance(q, q), compute_distance(g, g),
    k1, k2, lambda_value)`` (to 1e-5; the same neighbour lists) but never builds an
    ``N x N`` matrix, ``N = num_q + num_g``: see the module docstring.

    Args:
        query_features: ``(num_q, dim)`` features (numpy or torch, CPU or CUDA; computed in
            float32 on their device).
        gallery_features: ``(num_g, dim)``, same dimension and device.
        k1: size of the k-reciprocal neighbourhoods (>= 1).
        k2: neighbours averaged by local query expansion (>= 1; 1 disables it).
        lambda_value: weight of the original distance, in ``[0, 1]``.
        distance: ``"euclidean"`` (squared) or ``"cosine"``, as :func:`compute_distance`.
        chunk_size: items per block of the neighbour search (tiles of ``chunk_size^2``
            distances; default 4096, i.e. 64 MB float32 tiles; values below 32 count as 32).

    Returns:
        ``(num_q, num_g)`` float32 re-ranked distances (for the whole matrix at once; see
        :func:`iter_re_ranking_from_features` for blocks of queries).

    Raises:
        ValueError: on malformed features (not 2-D, different dimensions or devices, NaN or
            inf), bad ``k1`` / ``k2`` / ``lambda_value`` / ``chunk_size`` / ``distance``.
    """
    q, g, block, chunk = _prepare(
        query_features, gallery_features, k1, k2, lambda_value, distance, chunk_size, None
    )
    out = np.empty((len(q), len(g)), dtype=np.float32)
    for rows, values in _rerank_blocks(q, g, k1, k2, lambda_value, distance, block, chunk):
        out[rows] = values
    return out
