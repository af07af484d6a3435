"""k-reciprocal re-ranking: the sparse top-k implementation equals the dense formulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import load_experiment
from reid_attn.metrics import re_ranking

# The dense reference lives in the benchmark (one copy).
bench_rerank = load_experiment("bench_rerank")
dense_re_ranking = bench_rerank.dense_re_ranking
make_problem = bench_rerank.make_problem

TOL = 1e-5


def _tied_problem(
    rng: np.random.Generator, num_q: int, num_g: int, levels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric integer-valued distances in ``1..2*levels-1`` plus a zero diagonal: most
    rows tie at the top-k cut, so ties must be broken by index exactly as a stable sort."""
    n = num_q + num_g
    x = rng.integers(0, levels, size=(n, n)).astype(np.float64)
    full = x + x.T + 1.0
    np.fill_diagonal(full, 0.0)
    return full[:num_q, num_q:], full[:num_q, :num_q], full[num_q:, num_q:]


def _check(problem: tuple[np.ndarray, ...], k1: int, k2: int, lam: float) -> np.ndarray:
    ours = re_ranking(*problem, k1=k1, k2=k2, lambda_value=lam)
    ref = dense_re_ranking(*problem, k1=k1, k2=k2, lambda_value=lam)
    assert ours.shape == ref.shape == problem[0].shape
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)
    return ours


@pytest.mark.parametrize(
    ("k1", "k2", "lam"),
    [(20, 6, 0.3), (7, 3, 0.5), (21, 1, 0.1), (23, 6, 0.0), (5, 12, 0.8), (1, 1, 0.3)],
)
@pytest.mark.parametrize(("num_q", "num_g"), [(15, 35), (100, 200)])
def test_equals_dense_on_clustered_features(num_q: int, num_g: int, k1: int, k2: int, lam):
    # k1 odd (21: round(10.5) = 10, 23: round(11.5) = 12, as np.around), k2 = 1 (no query
    # expansion), k2 > k1 + 1 (more neighbours than the reciprocal sets), lambda 0.
    problem = make_problem(num_q, num_g, num_ids=max(3, num_g // 6), dim=16, noise=0.7, seed=k1)
    ours = _check(problem, k1, k2, lam)
    assert not np.allclose(ours, ours[:, :1])  # a real ranking, not a constant


@pytest.mark.parametrize(("k1", "k2"), [(20, 6), (9, 4), (4, 2)])
@pytest.mark.parametrize("seed", range(3))
def test_equals_dense_with_ties(seed: int, k1: int, k2: int) -> None:
    rng = np.random.default_rng(seed)
    problem = _tied_problem(rng, num_q=20, num_g=40, levels=3)
    _check(problem, k1, k2, 0.3)


def test_equals_dense_on_asymmetric_float64_input() -> None:
    # Non-symmetric q_q / g_g: the formulation reads columns of the full matrix (it transposes
    # after normalising by column maxima), which a row-based shortcut would get wrong.
    rng = np.random.default_rng(4)
    q_g, q_q, g_g = (rng.random(shape) for shape in ((30, 50), (30, 30), (50, 50)))
    _check((q_g, q_q, g_g), 10, 4, 0.3)


def test_equals_dense_at_n_300() -> None:
    problem = make_problem(100, 200, num_ids=40, dim=32, noise=1.0, seed=7)
    _check(problem, 20, 6, 0.3)


@pytest.mark.parametrize(
    ("k1", "k2", "lam"), [(20, 6, 0.3), pytest.param(15, 3, 0.5, marks=pytest.mark.slow)]
)
def test_equals_dense_at_n_1500(k1: int, k2: int, lam: float) -> None:
    problem = make_problem(500, 1000, num_ids=150, dim=64, noise=1.0, seed=1)
    _check(problem, k1, k2, lam)


def test_lambda_one_is_the_normalised_original_distance() -> None:
    # final = W[:num_q, num_q:] = q_g / (column max of the full matrix, per query).
    q_g, q_q, g_g = make_problem(10, 25, num_ids=4, dim=8, noise=1.0, seed=0)
    col_max = np.maximum(q_q.max(axis=0), q_g.max(axis=1))
    np.testing.assert_allclose(
        re_ranking(q_g, q_q, g_g, lambda_value=1.0), q_g / col_max[:, None], rtol=1e-6
    )


def test_torch_inputs_equal_numpy() -> None:
    problem = make_problem(20, 40, num_ids=6, dim=8, noise=1.0, seed=3)
    expected = re_ranking(*problem)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        got = re_ranking(*(torch.from_numpy(m).to(device) for m in problem))
        np.testing.assert_array_equal(got, expected)


def test_bad_input_is_rejected() -> None:
    q_g, q_q, g_g = make_problem(5, 8, num_ids=3, dim=4, noise=1.0, seed=0)
    with pytest.raises(ValueError, match=r"q_q_dist must be \(5, 5\)"):
        re_ranking(q_g, q_q[:4], g_g)
    with pytest.raises(ValueError, match="k1 must be a positive integer"):
        re_ranking(q_g, q_q, g_g, k1=0)
    with pytest.raises(ValueError, match="k2 must be a positive integer"):
        re_ranking(q_g, q_q, g_g, k2=1.5)
    with pytest.raises(ValueError, match=r"lambda_value must lie in \[0, 1\]"):
        re_ranking(q_g, q_q, g_g, lambda_value=1.5)
    bad = q_g.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="must be finite"):
        re_ranking(bad, q_q, g_g)
    with pytest.raises(ValueError, match="2-D"):
        re_ranking(q_g[0], q_q, g_g)
