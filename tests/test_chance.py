"""Chance level of a split, against evaluate_rank on every ordering and on random distances."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from reid_attn.metrics import chance_level, evaluate_rank

# Two valid queries and one without a true match; the gallery has a same-camera image of
# query 0's identity (removed), a distractor (pid 0) and an identity no query has.
Q_PIDS, Q_CAMS = np.array([1, 2, 7]), np.array([0, 1, 0])
G_PIDS, G_CAMS = np.array([1, 1, 1, 2, 0, 3]), np.array([0, 1, 2, 0, 3, 1])


def test_exact_over_every_ordering_of_the_gallery() -> None:
    """The mean of evaluate_rank over all 720 orderings is the expectation of random ranks."""
    rank1, ap = [], []
    for order in itertools.permutations(range(len(G_PIDS))):
        distances = np.tile(np.array(order, dtype=float), (len(Q_PIDS), 1))
        result = evaluate_rank(distances, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
        rank1.append(result["cmc"][0])
        ap.append(result["mAP"])
    chance = chance_level(Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    assert chance["rank1"] == pytest.approx(np.mean(rank1), abs=1e-12)
    assert chance["mAP"] == pytest.approx(np.mean(ap), abs=1e-12)


def test_hand_values() -> None:
    # Query 0: n = 5 kept (the same-camera image is removed), m = 2; query 1: n = 6, m = 1.
    # AP of m = 2 in n = 5 by enumerating the 10 position pairs {i < j}: (1/i + 2/j) / 2.
    pairs = list(itertools.combinations(range(1, 6), 2))
    ap_q0 = sum((Fraction(1, i) + Fraction(2, j)) / 2 for i, j in pairs) / len(pairs)
    ap_q1 = sum(Fraction(1, k) for k in range(1, 7)) / 6  # the one match at position k
    chance = chance_level(Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    assert chance["rank1"] == pytest.approx((2 / 5 + 1 / 6) / 2, abs=1e-12)
    assert chance["mAP"] == pytest.approx(float(ap_q0 + ap_q1) / 2, abs=1e-12)
    # A single kept image that matches: AP 1 (the n = 1 case of the formula).
    one = chance_level(np.array([4]), np.array([4, 4]), np.array([0]), np.array([0, 2]))
    assert one == {"rank1": 1.0, "mAP": 1.0}


def test_matches_random_distances_on_a_larger_split() -> None:
    rng = np.random.default_rng(0)
    q_pids, q_cams = rng.integers(1, 30, 40), rng.integers(0, 6, 40)
    g_pids, g_cams = rng.integers(0, 30, 300), rng.integers(0, 6, 300)
    draws = [
        evaluate_rank(rng.random((40, 300)), q_pids, g_pids, q_cams, g_cams) for _ in range(400)
    ]
    chance = chance_level(q_pids, g_pids, q_cams, g_cams)
    for key, values in (
        ("rank1", [d["cmc"][0] for d in draws]),
        ("mAP", [d["mAP"] for d in draws]),
    ):
        stderr = np.std(values) / np.sqrt(len(values))
        assert abs(chance[key] - np.mean(values)) < 4 * stderr


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        chance_level(Q_PIDS, G_PIDS, Q_CAMS[:2], G_CAMS)
    with pytest.raises(ValueError, match="no query has a true match"):
        chance_level(np.array([1]), np.array([1, 2]), np.array([0]), np.array([0, 1]))
