"""Exact blocked top-k and the faiss indexes of :mod:`reid_attn.retrieval.nearest`, against
brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid_attn.metrics import compute_distance
from reid_attn.retrieval.nearest import (
    approximate_topk,
    build_approximate,
    exact_topk,
    inner_factory_string,
    ivf_lists,
    same_camera,
    sampled_recall,
)


def settings(pca_dim: int = 0, **ivf) -> dict:
    """An ``approximate`` config section: no PCA, 2 * sqrt(N) lists, ``ivf`` overrides."""
    return {
        "pca_dim": pca_dim,
        "train_size": 10**6,
        "ivf": {"lists_per_sqrt_n": 2, "nprobe": 4, "encoding": "SQ8", **ivf},
        "hnsw": {"neighbours": 16, "ef_construction": 40, "ef_search": 64},
    }


def clustered(
    num: int, dim: int, num_ids: int, noise: float, seed: int, num_queries: int = 0
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``num`` float32 gallery vectors: random unit prototypes (``num_ids``) plus Gaussian
    noise; with ``num_queries``, also that many queries drawn around the same prototypes."""
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((num_ids, dim))
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    ids = rng.integers(0, num_ids, num + num_queries)
    x = (prototypes[ids] + noise * rng.standard_normal((len(ids), dim))).astype(np.float32)
    return (x[:num], x[num:]) if num_queries else x


def brute_force(q, g, k, metric, excluded=None):
    """Stable argsort of the full distance matrix: distances and indices of the k first."""
    dist = compute_distance(torch.as_tensor(q), torch.as_tensor(g), metric).numpy()
    if excluded is not None:
        dist = np.where(excluded, np.inf, dist)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), order


@pytest.mark.numerics
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_exact_topk_equals_a_full_stable_sort_across_blocks(metric) -> None:
    g, q = clustered(300, 24, 20, 0.3, seed=0, num_queries=40)
    g[150] = g[7]  # an exact tie: the lower gallery index ranks first
    q = np.concatenate([q, g[7:8]])
    got = exact_topk(q, g, k=6, metric=metric, query_block=7, gallery_block=13)
    dist, order = brute_force(q, g, 6, metric)
    assert np.array_equal(got.indices, order)
    np.testing.assert_allclose(got.distances, dist, rtol=1e-5, atol=1e-5)
    assert got.indices[-1, 0] == 7 and got.indices[-1, 1] == 150


@pytest.mark.numerics
def test_exact_topk_excludes_same_camera_and_pads_rows() -> None:
    g, q = clustered(50, 8, 5, 0.2, seed=2, num_queries=9)
    rng = np.random.default_rng(4)
    q_cams, g_cams = rng.integers(0, 3, 9), rng.integers(0, 3, 50)
    q_cams[0], g_cams[:3] = -1, -1  # unknown cameras exclude nothing
    got = exact_topk(q, g, 5, exclude=same_camera(q_cams, g_cams), query_block=4, gallery_block=9)
    excluded = (q_cams[:, None] == g_cams[None, :]) & (q_cams[:, None] >= 0)
    dist, order = brute_force(q, g, 5, "euclidean", excluded)
    assert np.array_equal(got.indices, order)
    np.testing.assert_allclose(got.distances, dist, rtol=1e-5, atol=1e-5)
    assert not excluded[np.arange(9)[:, None], got.indices].any()
    # More neighbours asked than images left: -1 and inf pad the rows.
    small = exact_topk(q[:1], g[:4], 6, exclude=same_camera([0], [0, 0, 1, 2]))
    _, order = brute_force(q[:1], g[2:4], 2, "euclidean")
    assert small.indices[0].tolist() == [*(order[0] + 2).tolist(), -1, -1, -1, -1]
    assert np.isinf(small.distances[0, 2:]).all()


def test_ivf_lists_scale_with_the_gallery() -> None:
    assert ivf_lists(1_000_000, 2) == 2000
    assert ivf_lists(10, 4) == 10  # never more lists than images
    assert ivf_lists(100, 0.01) == 1


@pytest.mark.parametrize(
    ("kind", "config", "min_recall"),
    [
        ("ivf", settings(encoding="Flat"), 0.9),
        # One byte per dimension reorders near-ties among an identity's 30 images.
        ("ivf", settings(), 0.7),
        # Half a byte per 4 dimensions: a coarse order, which re-scoring makes exact (below).
        ("ivf", settings(encoding="PQ4fs"), 0.3),
        ("hnsw", settings(), 0.9),
        # Half of the principal components: the order inside an identity is mostly lost
        # (re-scoring with the full features restores it, below).
        ("hnsw", settings(pca_dim=16), 0.5),
    ],
)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_approximate_search_finds_the_exact_neighbours(kind, config, min_recall, metric) -> None:
    pytest.importorskip("faiss")
    g, q = clustered(3000, 32, 100, 0.1, seed=5, num_queries=100)
    index = build_approximate(g, kind, metric, config, seed=0, add_block=700)
    assert index.ntotal == 3000
    got = approximate_topk(index, q, 10, metric)
    _, order = brute_force(q, g, 10, metric)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.indices, order, strict=True)])
    assert recall >= min_recall
    # Distances are the metric's own (squared Euclidean or 1 - cos), for the returned ids (those
    # of the principal components alone after PCA).
    reference = compute_distance(torch.as_tensor(q), torch.as_tensor(g), metric).numpy()
    if config["pca_dim"] == 0:
        expected = np.take_along_axis(reference, got.indices, 1)
        encoding = "Flat" if kind == "hnsw" else config["ivf"]["encoding"]
        tolerance = {"Flat": 1e-4, "SQ8": 0.05, "PQ4fs": 0.25}[encoding]
        np.testing.assert_allclose(
            got.distances, expected, atol=tolerance * np.abs(reference).max()
        )
    assert (np.diff(got.distances, axis=1) >= 0).all()
    # Re-scoring 4 x 10 candidates with the full features: exact distances, better recall.
    refined = approximate_topk(index, q, 10, metric, gallery=g, refine=4, rescore_block=7)
    refined_recall = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(refined.indices, order, strict=True)]
    )
    assert refined_recall >= max(recall, 0.9)
    expected = np.take_along_axis(reference, refined.indices, 1)
    np.testing.assert_allclose(refined.distances, expected, rtol=1e-4, atol=1e-5)


def test_ivf_encodings_name_their_faiss_codes() -> None:
    assert inner_factory_string("ivf", 10_000, settings(), 256) == "IVF200,SQ8"
    assert inner_factory_string("ivf", 10_000, settings(encoding="PQ4fs"), 256) == (
        "IVF200,PQ64x4fs"  # one 4-bit code per 4 dimensions
    )
    assert inner_factory_string("hnsw", 10_000, settings(), 256) == "HNSW16"
    with pytest.raises(ValueError, match="multiple of 8 dimensions, not 100"):
        inner_factory_string("ivf", 10_000, settings(encoding="PQ4fs"), 100)


@pytest.mark.parametrize(
    ("kind", "config"),
    [
        ("ivf", settings(encoding="Flat")),
        ("ivf", settings(encoding="PQ4fs")),
        ("hnsw", settings()),
    ],
)
def test_approximate_search_excludes_the_query_camera(kind, config) -> None:
    pytest.importorskip("faiss")
    g, q = clustered(2000, 16, 50, 0.1, seed=7, num_queries=30)
    rng = np.random.default_rng(8)
    q_cams, g_cams = rng.integers(0, 4, 30), rng.integers(0, 4, 2000)
    q_cams[-1] = -1  # unknown: nothing excluded
    index = build_approximate(g, kind, "euclidean", config)
    # PQ4fs's 4-bit codes order neighbours coarsely: its candidates are re-scored.
    rescore = {"gallery": g, "refine": 4} if config["ivf"]["encoding"] == "PQ4fs" else {}
    got = approximate_topk(index, q, 10, "euclidean", q_cams, g_cams, **rescore)
    unfiltered = approximate_topk(index, q[-1:], 10, "euclidean", **rescore)
    assert np.array_equal(got.indices[-1], unfiltered.indices[0])
    assert (got.indices >= 0).all()
    assert (g_cams[got.indices[:-1]] != q_cams[:-1, None]).all()
    _, order = brute_force(q, g, 10, "euclidean", g_cams[None, :] == q_cams[:, None])
    assert np.mean([len(set(a) & set(b)) for a, b in zip(got.indices, order, strict=True)]) >= 9


def test_sampled_recall_measures_the_index_against_exact_search() -> None:
    pytest.importorskip("faiss")
    g = clustered(2000, 32, 400, 0.5, seed=9)  # noisy: nearest neighbours spread over lists
    exhaustive = build_approximate(g, "ivf", "euclidean", settings(encoding="Flat", nprobe=10**6))
    assert sampled_recall(exhaustive, g, 10, "euclidean", sample=300) == pytest.approx(1.0)
    poor = build_approximate(g, "ivf", "euclidean", settings(encoding="Flat", nprobe=1))
    measured = sampled_recall(poor, g, 10, "euclidean", sample=300, seed=1)
    # Independent reference: every gallery image as a query, itself left out.
    found = approximate_topk(poor, g, 11, "euclidean").indices
    _, truth = brute_force(g, g, 11, "euclidean")
    overlap = [
        len((set(f) - {i}) & (set(t) - {i})) / 10
        for i, (f, t) in enumerate(zip(found, truth, strict=True))
    ]
    assert measured < 0.95
    assert measured == pytest.approx(np.mean(overlap), abs=0.06)
