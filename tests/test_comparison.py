"""Welch intervals of row differences and the seed count they imply, against hand
computations with t-table quantiles."""

from __future__ import annotations

import pytest

from reid_attn.runs.comparison import Difference, seeds_for_half_width, welch_difference

# Two-sided 95% t quantiles t(0.975, dof) from a t table.
T_975 = {2: 4.302653, 4: 2.776445, 6: 2.446912}


def test_welch_interval_equal_variances_by_hand() -> None:
    # means 2 and 1, variances 2 and 2, n 2 and 2: se = sqrt(2/2 + 2/2), dof = 4 / (1 + 1) = 2
    d = welch_difference([1.0, 3.0], [0.0, 2.0])
    half = T_975[2] * 2**0.5
    assert d.delta == pytest.approx(1.0)
    assert d.dof == pytest.approx(2.0)
    assert (d.low, d.high) == pytest.approx((1.0 - half, 1.0 + half), abs=1e-5)
    assert d.half_width == pytest.approx(half, abs=1e-5)
    assert not d.resolved and d.verdict() == "not resolved"
    assert d.text() == "+1.00 [-5.08, +7.08]"


def test_welch_interval_unequal_variances_by_hand() -> None:
    # a: mean 20, var 4 (n 3); b: mean 10, var 16 (n 3): se^2 = 4/3 + 16/3 = 20/3,
    # dof = (20/3)^2 / ((4/3)^2/2 + (16/3)^2/2) = (400/9) / (136/9) = 2.941
    d = welch_difference([18.0, 20.0, 22.0], [6.0, 10.0, 14.0])
    assert d.dof == pytest.approx(400 / 136)
    assert d.delta == pytest.approx(10.0)
    # the quantile lies between the table's dof 2 and dof 4 values
    half = d.half_width / (20 / 3) ** 0.5
    assert T_975[4] < half < T_975[2]
    assert d.resolved and d.verdict() == "same direction as the paper, resolved"
    assert d.verdict(expected_sign=-1) == "opposite, resolved"


def test_opposite_difference_and_missing_intervals() -> None:
    d = welch_difference([0.0, 1.0, 2.0], [10.0, 11.0, 12.0])
    assert d.high < 0 and d.verdict() == "opposite, resolved"
    one_seed = welch_difference([5.0], [1.0, 2.0])
    assert one_seed == Difference(3.5, None, None, None)
    assert one_seed.verdict() == "no interval (one seed)" and one_seed.text() == "+3.50"
    assert welch_difference([1.0, 1.0], [1.0, 1.0]).low is None  # no spread at all
    with pytest.raises(ValueError, match="at least one value"):
        welch_difference([], [1.0])


def test_seeds_for_half_width_by_hand() -> None:
    # std 1 in both rows: n seeds give dof 2 (n - 1) and half-width t * sqrt(2 / n):
    # n 2: 4.30 * 1 = 4.30; n 3: 2.78 * 0.816 = 2.27; n 4: 2.45 * 0.707 = 1.73
    assert seeds_for_half_width(1.0, 1.0, 5.0) == 2
    assert seeds_for_half_width(1.0, 1.0, 2.0) == 4
    assert seeds_for_half_width(1.0, 1.0, 2.2669) == 4
    assert seeds_for_half_width(1.0, 1.0, 2.2670) == 3
    assert seeds_for_half_width(0.0, 0.0, 1.0) == 2
    assert seeds_for_half_width(50.0, 50.0, 1.0, limit=10) is None
