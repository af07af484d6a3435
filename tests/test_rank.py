"""Tests for reid_attn.metrics.evaluate_rank (Market-1501 ranking protocol)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reid_attn.metrics.rank as rank_module
from reid_attn.metrics import evaluate_rank, match_ranks


def reference_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
) -> dict | None:
    """Straightforward per-query loop implementation; returns None if no query is valid."""
    num_q, num_g = distmat.shape
    cmcs, aps, inps = [], [], []
    for i in range(num_q):
        order = sorted(range(num_g), key=lambda j, i=i: (distmat[i, j], j))
        kept = [j for j in order if not (g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i])]
        hits = [g_pids[j] == q_pids[i] for j in kept]
        if not any(hits):
            continue
        match_ranks = [r + 1 for r, h in enumerate(hits) if h]
        first = match_ranks[0]
        cmcs.append([1.0 if first <= k + 1 else 0.0 for k in range(max_rank)])
        aps.append(sum((n + 1) / r for n, r in enumerate(match_ranks)) / len(match_ranks))
        inps.append(len(match_ranks) / match_ranks[-1])
    if not cmcs:
        return None
    n = len(cmcs)
    cmc = [sum(c[k] for c in cmcs) / n for k in range(max_rank)]
    return {"cmc": np.array(cmc), "mAP": sum(aps) / n, "mINP": sum(inps) / n}


def _tiny_case() -> tuple[np.ndarray, ...]:
    # Gallery:   g0      g1      g2      g3      g4      g5
    g_pids = np.array([1, 1, 2, 3, 1, 2])
    g_camids = np.array([0, 1, 0, 1, 2, 1])
    # q0: pid 1 cam 0; q1: pid 2 cam 1; q2: pid 3 cam 1 (its only pid-3 image is same-camera)
    q_pids = np.array([1, 2, 3])
    q_camids = np.array([0, 1, 1])
    distmat = np.array(
        [
            [0.1, 0.3, 0.5, 0.2, 0.9, 0.4],
            [0.2, 0.2, 0.2, 0.1, 0.2, 0.0],
            [0.5, 0.4, 0.3, 0.0, 0.2, 0.1],
        ]
    )
    return distmat, q_pids, g_pids, q_camids, g_camids


def test_tiny_hand_computed() -> None:
    # q0 (pid 1, cam 0): sorted g0 .1, g3 .2, g1 .3, g5 .4, g2 .5, g4 .9.
    #   g0 removed (same pid, same cam) -> g3 r1, g1 r2 (match), g5 r3, g2 r4, g4 r5 (match).
    #   first match rank 2; AP = (1/2 + 2/5) / 2 = 0.45; INP = 2/5 = 0.4.
    # q1 (pid 2, cam 1): sorted g5 .0, g3 .1, then the tie at .2 in index order g0, g1, g2, g4.
    #   g5 removed -> g3 r1, g0 r2, g1 r3, g2 r4 (match), g4 r5.
    #   first match rank 4; AP = 1/4; INP = (1 match) / (last match rank 4) = 0.25.
    #   (An unstable tie-break could place g2 anywhere in ranks 2..5.)
    # q2 (pid 3, cam 1): only pid-3 image g3 is on cam 1 -> removed -> no match -> skipped.
    # Valid queries: 2. With max_rank = 7 > 5 remaining images, CMC is padded with 1.0:
    #   cmc = [0, 1/2, 1/2, 1, 1, 1, 1]; mAP = (0.45 + 0.25)/2 = 0.35; mINP = (0.4 + 0.25)/2.
    out = evaluate_rank(*_tiny_case(), max_rank=7)
    np.testing.assert_allclose(out["cmc"], [0.0, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0], atol=1e-12)
    assert out["mAP"] == pytest.approx(0.35, abs=1e-12)
    assert out["mINP"] == pytest.approx(0.325, abs=1e-12)
    assert isinstance(out["cmc"], np.ndarray)
    assert out["cmc"].dtype == np.float64
    assert out["cmc"].shape == (7,)
    assert isinstance(out["mAP"], float)
    assert isinstance(out["mINP"], float)

    # Truncated curve: max_rank = 1 -> only rank-1 accuracy.
    out1 = evaluate_rank(*_tiny_case(), max_rank=1)
    np.testing.assert_allclose(out1["cmc"], [0.0])
    assert out1["mAP"] == pytest.approx(0.35, abs=1e-12)

    # Same result for every chunking of the queries.
    for chunk_size in (1, 2, 3, 1000):
        outc = evaluate_rank(*_tiny_case(), max_rank=7, chunk_size=chunk_size)
        np.testing.assert_allclose(outc["cmc"], out["cmc"], atol=1e-12)
        assert outc["mAP"] == pytest.approx(out["mAP"], abs=1e-12)
        assert outc["mINP"] == pytest.approx(out["mINP"], abs=1e-12)


def _random_case(
    rng: np.random.Generator, num_q: int, num_g: int, n_ids: int = 5, n_cams: int = 3
) -> tuple[np.ndarray, ...]:
    # Integer distances in a small range -> many ties; pid 0 = distractor (gallery only).
    distmat = rng.integers(0, 5, size=(num_q, num_g)).astype(np.float64)
    q_pids = rng.integers(1, n_ids + 1, size=num_q)
    g_pids = rng.integers(0, n_ids + 1, size=num_g)
    q_camids = rng.integers(0, n_cams, size=num_q)
    g_camids = rng.integers(0, n_cams, size=num_g)
    return distmat, q_pids, g_pids, q_camids, g_camids


def _assert_matches_reference(case: tuple[np.ndarray, ...], max_rank: int, **kw: int) -> bool:
    ref = reference_rank(*case, max_rank=max_rank)
    if ref is None:
        with pytest.raises(ValueError, match="no query has a valid"):
            evaluate_rank(*case, max_rank=max_rank, **kw)
        return False
    out = evaluate_rank(*case, max_rank=max_rank, **kw)
    assert out["cmc"].shape == (max_rank,)
    np.testing.assert_allclose(out["cmc"], ref["cmc"], atol=1e-6, rtol=0)
    assert out["mAP"] == pytest.approx(ref["mAP"], abs=1e-6)
    assert out["mINP"] == pytest.approx(ref["mINP"], abs=1e-6)
    for v in (out["mAP"], out["mINP"], *out["cmc"]):
        assert 0.0 <= v <= 1.0
    return True


@pytest.mark.parametrize("seed", range(12))
def test_matches_bruteforce_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_valid_cases = 0
    for _ in range(6):
        num_q = int(rng.integers(1, 25))
        num_g = int(rng.integers(1, 30))
        case = _random_case(rng, num_q, num_g)
        for max_rank in (1, 5, num_g, num_g + 13):
            for chunk_size in (1, 4, 256):
                num_valid_cases += _assert_matches_reference(case, max_rank, chunk_size=chunk_size)
    assert num_valid_cases > 0


def test_matches_reference_across_default_chunk_boundary() -> None:
    # More queries than the default chunk size (256), incl. some queries with no valid match.
    rng = np.random.default_rng(1234)
    case = _random_case(rng, num_q=300, num_g=60, n_ids=12, n_cams=4)
    assert _assert_matches_reference(case, max_rank=50)
    assert _assert_matches_reference(case, max_rank=80)


def test_torch_input_equals_numpy() -> None:
    rng = np.random.default_rng(7)
    case = _random_case(rng, num_q=40, num_g=50)
    expected = evaluate_rank(*case, max_rank=20)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        tensors = [torch.from_numpy(a).to(device) for a in case]
        tensors[0] = tensors[0].float().requires_grad_(True)  # float32 distmat with grad
        got = evaluate_rank(*tensors, max_rank=20)
        np.testing.assert_array_equal(got["cmc"], expected["cmc"])
        assert got["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
        assert got["mINP"] == pytest.approx(expected["mINP"], abs=1e-12)
    # Mixed numpy / torch inputs also work.
    mixed = evaluate_rank(torch.from_numpy(case[0]), *case[1:], max_rank=20)
    np.testing.assert_array_equal(mixed["cmc"], expected["cmc"])


def test_all_queries_invalid_raises() -> None:
    # Every gallery image of the query's pid is on the query's camera.
    distmat = np.zeros((2, 3))
    q_pids, q_camids = np.array([1, 2]), np.array([0, 1])
    g_pids, g_camids = np.array([1, 2, 0]), np.array([0, 1, 0])
    with pytest.raises(ValueError, match="no query has a valid"):
        evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
    # Empty gallery / no queries.
    with pytest.raises(ValueError, match="no query has a valid"):
        evaluate_rank(np.zeros((2, 0)), q_pids, np.array([]), q_camids, np.array([]))
    with pytest.raises(ValueError, match="no query has a valid"):
        evaluate_rank(np.zeros((0, 3)), np.array([]), g_pids, np.array([]), g_camids)


def test_shape_validation() -> None:
    distmat, q_pids, g_pids, q_camids, g_camids = _tiny_case()
    with pytest.raises(ValueError, match="distmat must be 2-D"):
        evaluate_rank(distmat[0], q_pids, g_pids, q_camids, g_camids)
    with pytest.raises(ValueError, match=r"q_pids must have length 3.*got length 2"):
        evaluate_rank(distmat, q_pids[:2], g_pids, q_camids, g_camids)
    with pytest.raises(ValueError, match=r"q_camids must have length 3"):
        evaluate_rank(distmat, q_pids, g_pids, q_camids[:1], g_camids)
    with pytest.raises(ValueError, match=r"g_pids must have length 6.*got length 5"):
        evaluate_rank(distmat, q_pids, g_pids[:5], q_camids, g_camids)
    with pytest.raises(ValueError, match=r"g_camids must have length 6"):
        evaluate_rank(distmat, q_pids, g_pids, q_camids, np.append(g_camids, 0))
    with pytest.raises(ValueError, match=r"g_pids must be 1-D"):
        evaluate_rank(distmat, q_pids, g_pids[None, :], q_camids, g_camids)
    with pytest.raises(ValueError, match="max_rank must be a positive integer"):
        evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, chunk_size=0)


# ------------------------------------------------------------- the counting (no-sort) path


def _continuous_case(
    rng: np.random.Generator, num_q: int, num_g: int, n_ids: int, n_cams: int, dtype=np.float32
) -> tuple[np.ndarray, ...]:
    # Real-valued distances (few or no ties): the counting path, not the fallback.
    distmat = rng.random((num_q, num_g)).astype(dtype)
    q_pids = rng.integers(1, n_ids + 1, size=num_q)
    g_pids = rng.integers(0, n_ids + 1, size=num_g)
    q_camids = rng.integers(0, n_cams, size=num_q)
    g_camids = rng.integers(0, n_cams, size=num_g)
    return distmat, q_pids, g_pids, q_camids, g_camids


def brute_match_ranks(case: tuple[np.ndarray, ...]) -> list[list[int]]:
    """Per valid query, the 1-based ranks of its true matches after junk removal (brute force)."""
    distmat, q_pids, g_pids, q_camids, g_camids = case
    out = []
    for i in range(distmat.shape[0]):
        order = sorted(range(distmat.shape[1]), key=lambda j, i=i: (distmat[i, j], j))
        kept = [j for j in order if not (g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i])]
        ranks = [r + 1 for r, j in enumerate(kept) if g_pids[j] == q_pids[i]]
        if ranks:
            out.append(ranks)
    return out


def _assert_ranks(case: tuple[np.ndarray, ...], **kw: int) -> None:
    got = match_ranks(*case, **kw)
    expected = brute_match_ranks(case)
    assert len(got.offsets) - 1 == len(expected)
    for v, ranks in enumerate(expected):
        assert got.rank[got.offsets[v] : got.offsets[v + 1]].tolist() == ranks


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_continuous_distances_match_reference(seed: int, dtype) -> None:
    rng = np.random.default_rng(100 + seed)
    for _ in range(4):
        num_q, num_g = int(rng.integers(1, 40)), int(rng.integers(1, 120))
        case = _continuous_case(rng, num_q, num_g, n_ids=int(rng.integers(2, 12)), n_cams=3)
        for chunk_size in (1, 7, 256):
            if _assert_matches_reference(case, max_rank=20, chunk_size=chunk_size):
                _assert_ranks(case, chunk_size=chunk_size)


def test_queries_with_many_matches() -> None:
    # Two identities only: ~half the gallery are true matches of each query.
    rng = np.random.default_rng(5)
    case = _continuous_case(rng, num_q=30, num_g=200, n_ids=2, n_cams=4, dtype=np.float64)
    assert _assert_matches_reference(case, max_rank=50)
    _assert_ranks(case)


def test_ties_between_matches_and_other_items() -> None:
    # Continuous distances, then exact ties: gallery columns duplicated onto others (ties with
    # distractors, junk and other matches, on either side of the match's index) and repeated
    # distances inside rows.
    rng = np.random.default_rng(11)
    for _ in range(6):
        case = list(_continuous_case(rng, num_q=25, num_g=80, n_ids=6, n_cams=3))
        distmat = case[0]
        for _ in range(30):
            src, dst = rng.integers(0, 80, size=2)
            distmat[:, dst] = distmat[:, src]
        rows = rng.integers(0, 25, size=20)
        cols = rng.integers(0, 80, size=(20, 2))
        distmat[rows, cols[:, 0]] = distmat[rows, cols[:, 1]]
        case = tuple(case)
        assert _assert_matches_reference(case, max_rank=30)
        _assert_ranks(case)
        _assert_ranks(case, chunk_size=3)


def test_fallback_for_many_matches_equals_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    case = _continuous_case(rng, num_q=40, num_g=90, n_ids=4, n_cams=3)
    counted = evaluate_rank(*case, max_rank=30)
    monkeypatch.setattr(rank_module, "MAX_COUNTED_MATCHES", 2)  # most rows: stable argsort
    fallback = evaluate_rank(*case, max_rank=30)
    _assert_ranks(case)
    np.testing.assert_array_equal(counted["cmc"], fallback["cmc"])
    assert counted["mAP"] == pytest.approx(fallback["mAP"], abs=1e-12)
    assert counted["mINP"] == pytest.approx(fallback["mINP"], abs=1e-12)
    assert _assert_matches_reference(case, max_rank=30)


def test_nan_distances_rank_last() -> None:
    # NaN sorts after every number (as np.argsort): the reference sees NaN as a huge value.
    rng = np.random.default_rng(8)
    case = list(_continuous_case(rng, num_q=20, num_g=60, n_ids=4, n_cams=3, dtype=np.float64))
    case[0][rng.random(case[0].shape) < 0.1] = np.nan
    as_big = (np.where(np.isnan(case[0]), 10.0, case[0]), *case[1:])
    ref = reference_rank(*as_big, max_rank=25)
    out = evaluate_rank(*case, max_rank=25)
    np.testing.assert_allclose(out["cmc"], ref["cmc"], atol=1e-12)
    assert out["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
    assert out["mINP"] == pytest.approx(ref["mINP"], abs=1e-12)


def test_continuous_torch_input_equals_numpy() -> None:
    rng = np.random.default_rng(21)
    case = list(_continuous_case(rng, num_q=50, num_g=300, n_ids=10, n_cams=4))
    case[0][:, 7] = case[0][:, 3]  # some ties too
    expected = evaluate_rank(*case, max_rank=20)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for dtype in (torch.float32, torch.float64):
            tensors = [torch.from_numpy(a).to(device) for a in case]
            tensors[0] = tensors[0].to(dtype)
            got = evaluate_rank(*tensors, max_rank=20)
            np.testing.assert_array_equal(got["cmc"], expected["cmc"])
            assert got["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
            assert got["mINP"] == pytest.approx(expected["mINP"], abs=1e-12)


def test_torch_code_path_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # A CUDA distance matrix is processed with torch ops on its device; run that same code on
    # CPU tensors so it is checked on machines without a GPU too.
    def keep_torch(distmat):
        return torch.as_tensor(distmat)

    monkeypatch.setattr(rank_module, "_as_distance", keep_torch)
    rng = np.random.default_rng(31)
    cases = [_continuous_case(rng, 30, 200, n_ids=8, n_cams=3) for _ in range(2)]
    cases[1][0][:, 10:20] = cases[1][0][:, :10]  # ties with other items
    cases.append(_random_case(rng, 30, 40))  # heavy ties
    nan_case = _continuous_case(rng, 10, 50, n_ids=3, n_cams=3, dtype=np.float64)
    nan_case[0][0, :] = np.nan  # NaN match distances: the stable-argsort rows
    cases.append(nan_case)
    for case in cases:
        clean = (np.where(np.isnan(case[0]), 1e9, case[0]), *case[1:])
        ref = reference_rank(*clean, max_rank=20)
        out = evaluate_rank(torch.from_numpy(case[0]), *case[1:], max_rank=20)
        np.testing.assert_allclose(out["cmc"], ref["cmc"], atol=1e-12)
        assert out["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
        assert out["mINP"] == pytest.approx(ref["mINP"], abs=1e-12)
