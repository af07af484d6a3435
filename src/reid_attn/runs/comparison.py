"""Differences between ablation rows, with their uncertainty over seeds.

Each row's figure is a mean over independently seeded runs. The difference of two rows' means
gets a Welch 95% confidence interval (unequal variances, Welch-Satterthwaite degrees of
freedom; the rows may have different seed counts). A difference is *resolved* when its
interval excludes zero. The paper (Li & Wang 2021) reports every added component as an
improvement (Table 1: "Ours" above every other row, +8.73 Rank-1 / +14.45 mAP over the
Baseline), so a verdict compares the sign of a resolved difference with a positive one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Two-sided confidence level of every interval in the report.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` (points) with its Welch interval ``[low, high]`` (None with fewer
    than two seeds in a row, or no spread at all) and degrees of freedom."""

    delta: float
    low: float | None
    high: float | None
    dof: float | None

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (points), None without an interval."""
        return None if self.low is None else (self.high - self.low) / 2

    @property
    def resolved(self) -> bool:
        """Whether the interval excludes zero."""
        return self.low is not None and (self.low > 0 or self.high < 0)

    def verdict(self, expected_sign: int = 1) -> str:
        """``same direction as the paper, resolved`` / ``not resolved`` / ``opposite to the
        paper, resolved`` for a paper that expects a difference of sign ``expected_sign``;
        ``no interval (one seed)`` without an interval."""
        if self.low is None:
            return "no interval (one seed)"
        if not self.resolved:
            return "not resolved"
        same = (self.delta > 0) == (expected_sign > 0)
        return "same direction as the paper, resolved" if same else "opposite, resolved"

    def text(self, digits: int = 2) -> str:
        """``+4.10 [+1.20, +7.00]`` (points), or ``+4.10`` without an interval."""
        if self.low is None:
            return f"{self.delta:+.{digits}f}"
        return f"{self.delta:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def welch_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> Difference:
    """``mean(a) - mean(b)`` with its two-sided Welch t interval at ``confidence``:
    ``delta +- t_{(1+c)/2, dof} * sqrt(s_a^2/n_a + s_b^2/n_b)``, sample variances (ddof 1),
    ``dof = se^4 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1))``.

    Args:
        a, b: one value per seed (e.g. mAP in points), at least one each.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("welch_difference needs at least one value on each side")
    delta = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Difference(delta, None, None, None)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se2 = va + vb
    if se2 == 0:
        return Difference(delta, None, None, None)
    dof = se2**2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, dof) * math.sqrt(se2))
    return Difference(delta, delta - half, delta + half, float(dof))


def seeds_for_half_width(
    std_a: float, std_b: float, half_width: float, confidence: float = CONFIDENCE, limit: int = 100
) -> int | None:
    """The smallest number of seeds ``n`` per row (both rows) for which the Welch interval of
    the difference is expected to be no wider than ``+-half_width``, given the rows' seed
    standard deviations (points): ``t_{(1+c)/2, dof(n)} * sqrt((s_a^2 + s_b^2) / n) <=
    half_width``. None when more than ``limit`` seeds would be needed."""
    var = std_a**2 + std_b**2
    for n in range(2, limit + 1):
        if var == 0:
            return n
        dof = (var / n) ** 2 / ((std_a**2 / n) ** 2 / (n - 1) + (std_b**2 / n) ** 2 / (n - 1))
        if stats.t.ppf((1 + confidence) / 2, dof) * math.sqrt(var / n) <= half_width:
            return n
    return None
