"""Nearest gallery images of each query: exact by blocked matrix products, or approximate
with a faiss index (IVF or HNSW) for galleries too large to scan.

Both return :class:`Neighbours`: for every query the ``k`` smallest distances, ascending, and
their gallery indices; ``-1`` and ``inf`` pad a row when fewer than ``k`` gallery images are
left (the others excluded, e.g. taken by the query's camera) or found. Distances are those of
:func:`reid_attn.metrics.compute_distance`: squared Euclidean or ``1 - cos``.

Exact search holds one ``query_block x gallery_block`` distance block at a time (plus the
running ``k`` best of each query), reads the gallery once, and orders equal distances by gallery
index, as :func:`reid_attn.metrics.evaluate_rank` does. Re-ranked search
(:func:`reranked_topk`) takes its blocks from
:func:`reid_attn.metrics.iter_re_ranking_from_features`.

Approximate search: ``ivf`` is faiss's inverted file (``nlist`` k-means cells, ``nprobe``
scanned per query), stored as float32 (``Flat``), one byte per dimension (``SQ8``) or half a
byte per four dimensions (``PQ4fs``: product quantisation, SIMD fast-scan); ``hnsw``
is a navigable small-world graph. Both may first project the vectors onto their leading
principal components (``pca_dim``), and the index's candidates (``refine`` per neighbour) can
be re-scored with the exact distances of the full features. Cosine distance normalises the
vectors and uses inner products. faiss is an optional dependency
(``pip install 'reid-attn[search]'``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from reid_attn.metrics import compute_distance, iter_re_ranking_from_features

INDEX_TYPES = ("exact", "auto", "ivf", "hnsw")
APPROXIMATE_TYPES = ("ivf", "hnsw")
IVF_ENCODINGS = ("Flat", "SQ8", "PQ4fs")
#: ``PQ4fs`` codes 4 dimensions in 4 bits, packed in pairs: the dimension must divide by this.
PQ4FS_DIM_MULTIPLE = 8

Array = np.ndarray | Tensor


@dataclass(frozen=True)
class Neighbours:
    """``distances`` ``(M, k)`` float32 ascending (``inf`` padding) and ``indices`` ``(M, k)``
    int64 gallery indices (``-1`` padding)."""

    distances: np.ndarray
    indices: np.ndarray


def import_faiss(threads: int | None = None) -> Any:
    """The faiss module, using ``threads`` OpenMP threads when given (faiss's default: one
    per core); ``ImportError`` with the install command when it is missing.

    faiss's OpenMP runtime and torch's compete in one process: on a busy 2-core machine a
    10,000-image IVF build took 6.6 s with faiss's two threads and 1.3 s with one.
    """
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            "approximate search needs faiss: pip install 'reid-attn[search]' (faiss-cpu)"
        ) from exc
    if threads is not None:
        faiss.omp_set_num_threads(int(threads))
    return faiss


#: ``exclude(query_rows, gallery_cols)``: bool ``(rows, cols)`` mask, True for the pairs to
#: leave out.
Exclusion = Callable[[slice, slice], Tensor]


def same_camera(q_camids: Array, g_camids: Array) -> Exclusion:
    """An :data:`Exclusion` of the gallery images taken by the query's camera (both known,
    i.e. ``>= 0``); cameras ``(M,)`` and ``(N,)``."""
    q = torch.as_tensor(np.asarray(q_camids), dtype=torch.int64)
    g = torch.as_tensor(np.asarray(g_camids), dtype=torch.int64)

    def exclude(rows: slice, cols: slice) -> Tensor:
        cams = q[rows][:, None]
        return (cams == g[cols][None, :]) & (cams >= 0)

    return exclude


def _as_tensor(x: Array) -> Tensor:
    """A float32 CPU tensor of ``x`` (a copy only when the dtype or memory needs one)."""
    if isinstance(x, Tensor):
        return x.float()
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _merge(
    best_d: Tensor, best_i: Tensor, block_d: Tensor, offset: int, k: int
) -> tuple[Tensor, Tensor]:
    """Merge a distance block ``(m, n)`` whose columns are gallery ``offset..offset+n-1`` into
    the running ``(m, k)`` best; equal distances ordered by gallery index."""
    values, cols = torch.topk(block_d, min(k, block_d.shape[1]), dim=1, largest=False)
    d = torch.cat([best_d, values], dim=1)
    i = torch.cat([best_i, cols + offset], dim=1)
    by_index = torch.argsort(i, dim=1, stable=True)
    d, i = d.gather(1, by_index), i.gather(1, by_index)
    by_value = torch.argsort(d, dim=1, stable=True)[:, :k]
    return d.gather(1, by_value), i.gather(1, by_value)


def _finish(best_d: Tensor, best_i: Tensor) -> Neighbours:
    missing = torch.isinf(best_d)
    best_i = best_i.masked_fill(missing, -1)
    return Neighbours(best_d.numpy().astype(np.float32), best_i.numpy().astype(np.int64))


def _empty_best(m: int, k: int) -> tuple[Tensor, Tensor]:
    return torch.full((m, k), math.inf), torch.full((m, k), -1, dtype=torch.int64)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def exact_topk(
    query: Array,
    gallery: Array,
    k: int,
    metric: str = "euclidean",
    query_block: int = 1024,
    gallery_block: int = 65536,
    exclude: Exclusion | None = None,
) -> Neighbours:
    """The ``k`` nearest gallery images of each query, exactly.

    Args:
        query: ``(M, D)``; gallery: ``(N, D)`` (numpy, memory-mapped numpy, or torch on CPU).
        k: neighbours per query.
        metric: ``euclidean`` (squared) or ``cosine``.
        query_block, gallery_block: block sizes; memory ``query_block * gallery_block`` floats.
        exclude: pairs to leave out (e.g. :func:`same_camera`), or None.

    Returns:
        :class:`Neighbours` ``(M, k)``.
    """
    _check_k(k)
    if query_block < 1 or gallery_block < 1:
        raise ValueError(f"block sizes must be >= 1, got {query_block}, {gallery_block}")
    q = _as_tensor(query)
    num_q, num_g = len(q), len(gallery)
    best_d, best_i = _empty_best(num_q, k)
    for g_start in range(0, num_g, gallery_block):
        cols = slice(g_start, min(num_g, g_start + gallery_block))
        g = _as_tensor(gallery[cols])
        for q_start in range(0, num_q, query_block):
            rows = slice(q_start, min(num_q, q_start + query_block))
            block = compute_distance(q[rows], g, metric)
            if exclude is not None:
                block = block.masked_fill(exclude(rows, cols), math.inf)
            best_d[rows], best_i[rows] = _merge(best_d[rows], best_i[rows], block, cols.start, k)
    return _finish(best_d, best_i)


def reranked_topk(
    query: Array,
    gallery: Array,
    k: int,
    metric: str,
    k1: int,
    k2: int,
    lambda_value: float,
    query_block: int = 1024,
    exclude: Exclusion | None = None,
) -> Neighbours:
    """:func:`exact_topk` on k-reciprocal re-ranked distances
    (:func:`~reid_attn.metrics.iter_re_ranking_from_features` with ``k1``, ``k2``,
    ``lambda_value``; the query set takes part in the re-ranking as in evaluation)."""
    _check_k(k)
    q, g = _as_tensor(query), _as_tensor(gallery)
    best_d, best_i = _empty_best(len(q), k)
    blocks: Iterable[tuple[slice, np.ndarray]] = iter_re_ranking_from_features(
        q, g, k1, k2, lambda_value, metric, query_chunk=query_block
    )
    everything = slice(0, len(g))
    for rows, block in blocks:
        d = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
        if exclude is not None:
            d = d.masked_fill(exclude(rows, everything), math.inf)
        best_d[rows], best_i[rows] = _merge(best_d[rows], best_i[rows], d, 0, k)
    return _finish(best_d, best_i)


def ivf_lists(num_gallery: int, lists_per_sqrt_n: float) -> int:
    """``nlist``: ``round(lists_per_sqrt_n * sqrt(num_gallery))``, within ``1..num_gallery``."""
    return int(min(num_gallery, max(1, round(lists_per_sqrt_n * math.sqrt(num_gallery)))))


def _prepared(features: Array, metric: str) -> np.ndarray:
    """float32 C-contiguous numpy features, L2-normalised for cosine distance."""
    x = _as_tensor(features)
    if metric == "cosine":
        x = F.normalize(x, dim=1)
    return np.ascontiguousarray(x.numpy(), dtype=np.float32)


def inner_factory_string(
    index_type: str, num_gallery: int, settings: dict[str, Any], dim: int
) -> str:
    """The faiss factory string of the index under the PCA, whose vectors have ``dim``
    dimensions: ``IVF<nlist>,<encoding>`` or ``HNSW<neighbours>``. The ``PQ4fs`` encoding is
    ``PQ<dim/4>x4fs``: one 4-bit code per 4 dimensions, scanned with SIMD (fast-scan)."""
    if index_type not in APPROXIMATE_TYPES:
        raise ValueError(
            f"index_type={index_type!r} is not approximate; allowed: {', '.join(APPROXIMATE_TYPES)}"
        )
    if index_type == "hnsw":
        return f"HNSW{int(settings['hnsw']['neighbours'])}"
    ivf = settings["ivf"]
    encoding = ivf["encoding"]
    if encoding == "PQ4fs":
        if dim % PQ4FS_DIM_MULTIPLE:
            raise ValueError(
                f"ivf.encoding=PQ4fs needs a multiple of {PQ4FS_DIM_MULTIPLE} dimensions, not {dim}"
            )
        encoding = f"PQ{dim // 4}x4fs"
    return f"IVF{ivf_lists(num_gallery, ivf['lists_per_sqrt_n'])},{encoding}"


def pca_matrix(sample: np.ndarray, out_dim: int) -> Any:
    """A trained faiss ``PCAMatrix`` projecting ``sample``'s ``(n, d)`` vectors onto their
    ``out_dim`` leading principal components, computed with torch (covariance product and
    ``eigh``; faiss's own training took 3x longer on this project's machine)."""
    faiss = import_faiss()
    x = torch.from_numpy(sample)
    mean = x.mean(0)
    centred = x - mean
    covariance = (centred.T @ centred).double() / len(x)
    values, vectors = torch.linalg.eigh(covariance)  # ascending
    pca = faiss.PCAMatrix(x.shape[1], out_dim)
    faiss.copy_array_to_vector(mean.numpy().astype(np.float32), pca.mean)
    faiss.copy_array_to_vector(values.flip(0).float().numpy(), pca.eigenvalues)
    rows = np.ascontiguousarray(vectors.flip(1).T.float().numpy())  # one component per row
    faiss.copy_array_to_vector(rows.ravel(), pca.PCAMat)
    pca.is_trained = True
    pca.prepare_Ab()
    return pca


def inner_index(index: Any) -> Any:
    """The IVF or HNSW index inside ``index`` (under its PCA transform, if any)."""
    faiss = import_faiss()
    return (
        faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    )


def build_approximate(
    gallery: Array,
    index_type: str,
    metric: str,
    settings: dict[str, Any],
    seed: int = 0,
    add_block: int = 65536,
) -> Any:
    """A faiss index over ``gallery`` ``(N, D)`` (numpy, memory-mapped numpy, or torch).

    ``settings`` is the ``approximate`` config section: ``pca_dim`` (vectors projected onto
    that many principal components first, when ``0 < pca_dim < D`` and the training sample
    holds at least as many images; 0: never), ``train_size`` (rows sampled with ``seed`` to
    train the PCA and the IVF's k-means), ``ivf`` (``lists_per_sqrt_n``, ``nprobe``,
    ``encoding``) and ``hnsw`` (``neighbours``, ``ef_construction``, ``ef_search``). Vectors
    are added ``add_block`` at a time, so a memory-mapped gallery is read block by block.
    """
    faiss = import_faiss()
    num_g, dim = gallery.shape
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    size = min(num_g, int(settings["train_size"]))
    rows = np.sort(np.random.default_rng(seed).choice(num_g, size, replace=False))
    sample = _prepared(gallery[rows], metric)
    pca_dim = int(settings.get("pca_dim") or 0)
    inner_dim = pca_dim if 0 < pca_dim < dim and pca_dim <= size else dim
    inner = faiss.index_factory(
        inner_dim, inner_factory_string(index_type, num_g, settings, inner_dim), faiss_metric
    )
    if index_type == "hnsw":
        inner.hnsw.efConstruction = int(settings["hnsw"]["ef_construction"])
        inner.hnsw.efSearch = int(settings["hnsw"]["ef_search"])
    else:
        inner.nprobe = min(inner.nlist, int(settings["ivf"]["nprobe"]))
        inner.cp.seed = seed
    index = inner
    if inner_dim < dim:
        index = faiss.IndexPreTransform(pca_matrix(sample, inner_dim), inner)
    if not index.is_trained:
        index.train(sample)
    del sample
    for start in range(0, num_g, add_block):
        index.add(_prepared(gallery[start : start + add_block], metric))
    return index


def _search_params(index: Any, allowed: np.ndarray | None) -> Any:
    """faiss search parameters of ``index`` (IVF or HNSW, under PCA or not): its own
    ``nprobe`` / ``efSearch``, restricted to the ids ``allowed`` when given."""
    faiss = import_faiss()
    inner = inner_index(index)
    selector = (
        None
        if allowed is None
        else faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
    )
    if hasattr(inner, "hnsw"):
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=inner.hnsw.efSearch)
    else:
        params = faiss.SearchParametersIVF(sel=selector, nprobe=inner.nprobe)
    if inner is not index:
        params = faiss.SearchParametersPreTransform(index_params=params)
        params.referenced = (params.index_params, selector)  # keep them alive
    else:
        params.referenced = selector
    return params


def _rescore(
    gallery: Array, query: np.ndarray, ids: np.ndarray, metric: str, block: int
) -> np.ndarray:
    """``(M, c)`` float32 exact distances of each query to its candidates ``ids`` (``-1``:
    ``inf``), computed ``block`` queries at a time from the gallery's own features."""
    dist = np.full(ids.shape, np.inf, dtype=np.float32)
    for start in range(0, len(query), block):
        rows = slice(start, start + block)
        sub = ids[rows]
        candidates = _prepared(gallery[np.clip(sub, 0, None).ravel()], metric)
        candidates = candidates.reshape(*sub.shape, -1)
        q = query[rows][:, None, :]
        if metric == "cosine":
            d = 1.0 - (candidates * q).sum(-1)
        else:
            d = ((candidates - q) ** 2).sum(-1)
        dist[rows] = np.where(sub >= 0, d, np.inf)
    return dist


def approximate_topk(
    index: Any,
    query: Array,
    k: int,
    metric: str,
    q_camids: Array | None = None,
    g_camids: Array | None = None,
    gallery: Array | None = None,
    refine: int = 1,
    rescore_block: int = 256,
) -> Neighbours:
    """The ``k`` nearest gallery images of each query by the faiss ``index``.

    With cameras ``q_camids`` ``(M,)`` and ``g_camids`` ``(N,)``, the gallery images of a
    query's camera (when known, ``>= 0``) are left out: the queries of each camera are searched
    among the other cameras' images only (a faiss id selector). With the ``gallery`` features
    and ``refine > 1``, the index proposes ``refine * k`` candidates whose exact distances,
    computed ``rescore_block`` queries at a time, choose and order the ``k`` (the distances
    are then exact too). A row holds fewer than ``k`` images (``-1`` padding) when the index
    finds fewer.
    """
    _check_k(k)
    q = _prepared(query, metric)
    fetch = min(k * max(1, refine) if gallery is not None else k, index.ntotal)
    scores = np.full((len(q), fetch), np.nan, dtype=np.float32)
    ids = np.full((len(q), fetch), -1, dtype=np.int64)
    groups: list[tuple[np.ndarray, np.ndarray | None]] = [(np.arange(len(q)), None)]
    if q_camids is not None and g_camids is not None:
        q_cams, g_cams = np.asarray(q_camids), np.asarray(g_camids)
        groups = [(np.flatnonzero(q_cams < 0), None)]
        for camera in np.unique(q_cams[q_cams >= 0]):
            groups.append((np.flatnonzero(q_cams == camera), np.flatnonzero(g_cams != camera)))
    for rows, allowed in groups:
        if len(rows):
            params = _search_params(index, allowed)
            scores[rows], ids[rows] = index.search(q[rows], fetch, params=params)
    if gallery is not None and fetch > k:
        dist = _rescore(gallery, q, ids, metric, rescore_block)
    else:
        dist = 1.0 - scores if metric == "cosine" else np.maximum(scores, 0.0)
        dist = np.where(ids < 0, np.inf, dist).astype(np.float32)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    d, i = np.take_along_axis(dist, order, 1), np.take_along_axis(ids, order, 1)
    padding = k - d.shape[1]
    best_d = torch.from_numpy(np.pad(d, ((0, 0), (0, padding)), constant_values=np.inf))
    best_i = torch.from_numpy(np.pad(i, ((0, 0), (0, padding)), constant_values=-1))
    return _finish(best_d, best_i)


def sampled_recall(
    index: Any,
    gallery: Array,
    k: int,
    metric: str,
    sample: int,
    seed: int = 0,
    gallery_block: int = 65536,
    refine: int = 1,
) -> float:
    """recall@k of ``index`` (searched as :func:`approximate_topk` with ``refine``) against
    exact search: ``sample`` gallery images (drawn with ``seed``) serve as queries; each one's
    own entry is left out of both rankings; the mean fraction of its exact ``k`` nearest that
    the index returns among its ``k``."""
    num_g = len(gallery)
    k = min(k, num_g - 1)
    if k < 1:
        return 1.0
    rows = np.sort(np.random.default_rng(seed).choice(num_g, min(sample, num_g), replace=False))
    queries = _as_tensor(gallery[rows])
    own = torch.as_tensor(rows)[:, None]

    def itself(q_rows: slice, cols: slice) -> Tensor:
        return own[q_rows] == torch.arange(cols.start, cols.stop)[None, :]

    truth = exact_topk(queries, gallery, k, metric, gallery_block=gallery_block, exclude=itself)
    found = approximate_topk(index, queries, k + 1, metric, gallery=gallery, refine=refine)
    hits = []
    for row, t, f in zip(rows, truth.indices, found.indices, strict=True):
        others = [i for i in f.tolist() if i >= 0 and i != row][:k]
        hits.append(len(set(t.tolist()) & set(others)))
    return float(np.mean(hits) / k)
