"""Re-ranking from features and chunked evaluation equal their dense counterparts."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch

import reid_attn.metrics.rerank_features as rerank_features
from reid_attn.evaluate import evaluation_overrides
from reid_attn.metrics import (
    ReIDMetric,
    compute_distance,
    evaluate_features,
    evaluate_rank,
    evaluate_rank_chunked,
    iter_distances,
    iter_re_ranking_from_features,
    re_ranking,
    re_ranking_from_features,
)
from reid_attn.module import METRIC_DEFAULTS

TOL = 1e-5
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _features(
    num_q: int, num_g: int, num_ids: int, dim: int = 16, noise: float = 0.8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Identity-clustered float32 query and gallery features and their pids."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim))
    q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)
    q = centres[q_pids] + noise * rng.standard_normal((num_q, dim))
    g = centres[g_pids] + noise * rng.standard_normal((num_g, dim))
    return (
        torch.as_tensor(q, dtype=torch.float32),
        torch.as_tensor(g, dtype=torch.float32),
        q_pids,
        g_pids,
    )


def _reference(q, g, distance="euclidean", k1=20, k2=6, lam=0.3) -> np.ndarray:
    d = [compute_distance(a, b, distance) for a, b in ((q, g), (q, q), (g, g))]
    return re_ranking(*d, k1=k1, k2=k2, lambda_value=lam)


def _check(q, g, distance="euclidean", k1=20, k2=6, lam=0.3, chunk_size=None) -> np.ndarray:
    ours = re_ranking_from_features(q, g, k1, k2, lam, distance, chunk_size=chunk_size)
    ref = _reference(q, g, distance, k1, k2, lam)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (len(q), len(g))
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)
    return ours


# ------------------------------------------------------------------ equality with re_ranking


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize(
    ("num_q", "num_g", "chunk_size"),
    [(10, 20, None), (70, 130, None), (70, 130, 45), (500, 1000, None), (500, 1000, 333)],
)
def test_equals_re_ranking(num_q: int, num_g: int, chunk_size, distance: str) -> None:
    # chunk sizes 45 and 333 divide neither set: 2 x 35 + 3 x 43-44, 2 x 250 + 4 x 250 items.
    q, g, _, _ = _features(num_q, num_g, num_ids=max(3, num_g // 6), dim=32, seed=num_q)
    ours = _check(q, g, distance, chunk_size=chunk_size)
    assert not np.allclose(ours, ours[:, :1])  # a real ranking, not a constant


@pytest.mark.parametrize(
    ("k1", "k2", "lam"), [(7, 3, 0.5), (21, 1, 0.1), (23, 6, 0.0), (5, 12, 0.8), (1, 1, 1.0)]
)
def test_parameters(k1: int, k2: int, lam: float) -> None:
    q, g, _, _ = _features(60, 140, num_ids=25, seed=k1)
    _check(q, g, k1=k1, k2=k2, lam=lam, chunk_size=40)


@pytest.mark.parametrize(("k1", "k2"), [(40, 6), (60, 35), (29, 30)])
def test_k1_larger_than_neighbourhoods(k1: int, k2: int) -> None:
    # N = 30: k = max(k1 + 1, k2) is capped at N, every list holds every item.
    q, g, _, _ = _features(10, 20, num_ids=4, seed=1)
    _check(q, g, k1=k1, k2=k2)
    _check(q, g, "cosine", k1=k1, k2=k2)


@pytest.mark.parametrize("chunk_size", [None, 37])
def test_duplicate_features(chunk_size) -> None:
    # Exact duplicates inside and across the sets: equal distances, ordered by index.
    q, g, _, _ = _features(40, 120, num_ids=10, seed=2)
    g[::3] = g[0]
    q[5] = g[0]
    g[7] = q[3]
    for k1, k2 in ((20, 6), (4, 2), (1, 1)):
        _check(q, g, k1=k1, k2=k2, chunk_size=chunk_size)


@pytest.mark.numerics
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("chunk_size", [None, 37])
def test_heavy_ties_are_resolved_on_full_rows(monkeypatch, distance: str, chunk_size) -> None:
    # Features on a tiny integer grid: dozens of items tie at each neighbourhood's edge, more
    # than the candidate lists hold, so rows are recomputed from the tiles.
    resolved = []
    resolve = rerank_features._resolve_rows

    def spy(top, rows, *args):
        resolved.append(len(rows))
        return resolve(top, rows, *args)

    monkeypatch.setattr(rerank_features, "_resolve_rows", spy)
    rng = np.random.default_rng(0)
    if distance == "euclidean":  # quarter-integer distances: exact in float32, true ties
        x = torch.as_tensor(rng.integers(0, 3, (200, 3)), dtype=torch.float32) + 0.5
    else:
        # +-1 entries in 4 dimensions: norm 2, so the normalised features are +-0.5 and every
        # cosine distance a multiple of 0.25, exact in float32 whatever order a kernel sums
        # in. (Integer-grid features have cosine distances that are ties only up to rounding,
        # which tiles and the full matrix break differently on other CPUs' kernels.)
        x = torch.as_tensor(rng.choice([-1.0, 1.0], (200, 4)), dtype=torch.float32)
    for k1, k2 in ((20, 6), (7, 3), (1, 1)):
        _check(x[:50], x[50:], distance, k1=k1, k2=k2, chunk_size=chunk_size)
    assert sum(resolved) > 0


def test_inputs_numpy_float64_and_tensors_agree() -> None:
    q, g, _, _ = _features(30, 50, num_ids=8, seed=3)
    expected = re_ranking_from_features(q, g)
    got = re_ranking_from_features(q.double().numpy(), g.double().numpy())
    np.testing.assert_array_equal(got, expected)
    for device in DEVICES[1:]:
        got = re_ranking_from_features(q.to(device), g.to(device))
        np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)


@pytest.mark.numerics
def test_iterator_yields_consecutive_query_blocks() -> None:
    q, g, _, _ = _features(100, 150, num_ids=20, seed=4)
    full = re_ranking_from_features(q, g, chunk_size=64)
    blocks = list(iter_re_ranking_from_features(q, g, chunk_size=64, query_chunk=40))
    rows = [r for r, _ in blocks]
    assert [(r.start, r.stop) for r in rows] == [(0, 33), (33, 66), (66, 100)]
    assert all(b.shape == (r.stop - r.start, 150) for r, b in blocks)
    # Blocks of 33-34 queries and the full matrix are float32 products of other shapes, whose
    # kernels may sum in other orders: equal to the 1e-5 the dense formulation is held to.
    np.testing.assert_allclose(np.concatenate([b for _, b in blocks]), full, atol=TOL, rtol=0)


def test_empty_sets() -> None:
    q, g, _, _ = _features(5, 8, num_ids=3)
    assert re_ranking_from_features(q[:0], g).shape == (0, 8)
    out = re_ranking_from_features(q, g[:0])
    assert out.shape == (5, 0)
    assert out.shape == _reference(q, g[:0]).shape


# ------------------------------------------------------------------ chunked evaluation


def _labelled(seed: int, num_q: int = 90, num_g: int = 300):
    """Features and labels where some queries have no valid match: pid 999 is in no gallery
    image, and pid 998's only gallery images share the query's camera."""
    q, g, q_pids, g_pids = _features(num_q, num_g, num_ids=30, seed=seed)
    rng = np.random.default_rng(seed)
    q_cams, g_cams = rng.integers(0, 4, num_q), rng.integers(0, 4, num_g)
    q_pids[[3, 12, 13]] = 999
    q_pids[7], q_cams[7] = 998, 2
    g_pids[[10, 11]], g_cams[[10, 11]] = 998, 2
    return q, g, q_pids, g_pids, q_cams, g_cams


def _assert_same(result: dict, ref: dict) -> None:
    np.testing.assert_array_equal(result["cmc"], ref["cmc"])
    assert result["mAP"] == ref["mAP"]
    assert result["mINP"] == ref["mINP"]


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("chunk_size", [None, 1, 32, 50])
def test_evaluate_features_equals_evaluate_rank(distance: str, chunk_size) -> None:
    q, g, *labels = _labelled(5)
    ref = evaluate_rank(compute_distance(q, g, distance), *labels, max_rank=20)
    got = evaluate_features(q, g, *labels, distance, 20, chunk_size=chunk_size)
    _assert_same(got, ref)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_evaluate_features_with_rerank(distance: str) -> None:
    q, g, *labels = _labelled(6)
    ref = evaluate_rank(_reference(q, g, distance, 10, 4, 0.3), *labels)
    got = evaluate_features(
        q, g, *labels, distance, rerank=True, k1=10, k2=4, lambda_value=0.3, chunk_size=40
    )
    np.testing.assert_allclose(got["cmc"], ref["cmc"], atol=1e-12)
    assert got["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
    assert got["mINP"] == pytest.approx(ref["mINP"], abs=1e-12)


def test_evaluate_rank_chunked_on_uneven_blocks() -> None:
    # Blocks of 1 to 40 rows; the one of queries 12-13 holds no valid query.
    q, g, *labels = _labelled(7)
    distmat = compute_distance(q, g).numpy()
    edges = [0, 3, 4, 10, 12, 14, 15, 50, 90]
    blocks = [(slice(a, b), distmat[a:b]) for a, b in pairwise(edges)]
    _assert_same(
        evaluate_rank_chunked(blocks, *labels, max_rank=7),
        evaluate_rank(distmat, *labels, max_rank=7),
    )
    tensors = [(rows, torch.from_numpy(block)) for rows, block in blocks]
    _assert_same(evaluate_rank_chunked(tensors, *labels), evaluate_rank(distmat, *labels))


@pytest.mark.numerics
def test_iter_distances_equals_compute_distance() -> None:
    q, g, _, _ = _features(100, 70, num_ids=10, seed=8)
    full = compute_distance(q, g, "cosine")
    blocks = list(iter_distances(q, g, "cosine", query_chunk=40))
    assert [r.stop - r.start for r, _ in blocks] == [33, 33, 34]
    # float32 products of other shapes: a length-16 reduction of unit vectors' products errs
    # by at most ~sqrt(16) * eps32 * (|q|^2 + |g|^2) = 4 * 1.2e-7 * 2 (Higham & Mary 2019)
    bound = 16**0.5 * torch.finfo(torch.float32).eps * 2
    torch.testing.assert_close(torch.cat([b for _, b in blocks]), full, atol=bound, rtol=0)


@pytest.mark.parametrize("rerank", [False, True])
def test_reid_metric_chunked_equals_dense(rerank: bool) -> None:
    q, g, q_pids, g_pids, q_cams, g_cams = _labelled(9, num_q=60, num_g=200)
    feats = torch.cat([q, g])
    pids = torch.as_tensor(np.concatenate([q_pids, g_pids]))
    cams = torch.as_tensor(np.concatenate([q_cams, g_cams]))
    is_query = torch.arange(len(feats)) < len(q)
    results = []
    for chunk_size in (None, 32):
        metric = ReIDMetric(rerank=rerank, rerank_k1=12, chunk_size=chunk_size)
        for idx in torch.arange(len(feats)).split(37):
            metric.update(feats[idx], pids[idx], cams[idx], is_query[idx])
        results.append(metric.compute())
    dense, chunked = results
    assert dense.keys() == chunked.keys()
    for key, value in dense.items():
        torch.testing.assert_close(chunked[key], value, atol=1e-12, rtol=0)


# ------------------------------------------------------------------ bad input


def test_bad_input_is_rejected() -> None:
    q, g, _, _ = _features(5, 8, num_ids=3)
    with pytest.raises(ValueError, match=r"query_features must be a 2-D .* got shape \(16,\)"):
        re_ranking_from_features(q[0], g)
    with pytest.raises(ValueError, match="dimension 16 but gallery_features have dimension 4"):
        re_ranking_from_features(q, g[:, :4])
    with pytest.raises(ValueError, match="k1 must be a positive integer"):
        re_ranking_from_features(q, g, k1=0)
    with pytest.raises(ValueError, match="k2 must be a positive integer"):
        re_ranking_from_features(q, g, k2=2.5)
    with pytest.raises(ValueError, match=r"lambda_value must lie in \[0, 1\]"):
        re_ranking_from_features(q, g, lambda_value=-0.1)
    for bad in (0, -3, 2.5, True, "64"):
        with pytest.raises(ValueError, match="chunk_size must be a positive integer or None"):
            re_ranking_from_features(q, g, chunk_size=bad)
    with pytest.raises(ValueError, match="query_chunk must be a positive integer or None"):
        iter_re_ranking_from_features(q, g, query_chunk=0)  # raised at the call, not lazily
    with pytest.raises(ValueError, match="unknown distance 'l1'"):
        re_ranking_from_features(q, g, distance="l1")
    nan = q.clone()
    nan[1, 2] = float("nan")
    with pytest.raises(ValueError, match="features must be finite"):
        re_ranking_from_features(nan, g)
    with pytest.raises(ValueError, match="positive distance to some item"):
        re_ranking_from_features(torch.ones(3, 4), torch.ones(5, 4))


def test_bad_evaluation_input_is_rejected() -> None:
    q, g, *labels = _labelled(10, num_q=20, num_g=40)
    q_pids, g_pids, q_cams, g_cams = labels
    with pytest.raises(ValueError, match=r"q_pids must have length 20 \(num_q = query_features"):
        evaluate_features(q, g, q_pids[:-1], g_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer or None"):
        evaluate_features(q, g, *labels, chunk_size=0)
    with pytest.raises(ValueError, match="max_rank must be a positive integer"):
        evaluate_features(q, g, *labels, max_rank=0)
    with pytest.raises(ValueError, match="no query has a valid true match"):
        evaluate_features(q, g, q_pids + 1000, g_pids, q_cams, g_cams)
    distmat = compute_distance(q, g)
    gap = [(slice(0, 5), distmat[:5]), (slice(6, 20), distmat[6:])]
    with pytest.raises(ValueError, match="expected the block of queries 5:"):
        evaluate_rank_chunked(gap, *labels)
    with pytest.raises(ValueError, match="cover queries 0:5 of 20"):
        evaluate_rank_chunked(gap[:1], *labels)
    with pytest.raises(ValueError, match=r"with shape \(5, 39\)"):
        evaluate_rank_chunked([(slice(0, 5), distmat[:5, 1:])], *labels)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer or None"):
        ReIDMetric(chunk_size=0)


def test_chunk_size_is_an_evaluation_setting(compose_cfg) -> None:
    assert METRIC_DEFAULTS["chunk_size"] is None
    assert compose_cfg("train", []).evaluation.chunk_size is None
    assert compose_cfg("train", ["evaluation.chunk_size=1024"]).evaluation.chunk_size == 1024
    cfg = compose_cfg("evaluate", ["ckpt_path=x", "evaluation.chunk_size=512"])
    assert evaluation_overrides(cfg) == {"chunk_size": 512}
