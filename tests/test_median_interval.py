"""The interval of a median over a few rounds says its true confidence: an exact order-statistic
(binomial) interval, checked against simulated experiments with a known median."""
from __future__ import annotations

import numpy as np
import pytest

from harness.intervals import median_interval, order_statistic_level

EXPERIMENTS = 2000
TOLERANCE = 0.025  # 2.5 points: about 2.5 standard errors of a 2,000-experiment coverage at 75%


@pytest.mark.parametrize("n, level, rank", [(2, 0.5, 1), (3, 0.75, 1), (5, 0.9375, 1), (6, 0.96875, 1),
                                            (8, 1 - 2 / 256, 1), (9, 1 - 2 * 10 / 512, 2), (17, None, 5)])
def test_the_stated_level_is_the_exact_binomial_one(n, level, rank):
    got = median_interval(np.arange(n, dtype=float)[::-1])  # any order
    assert got.rank == rank and got.n == n
    assert (got.low, got.high) == (rank - 1, n - rank)
    assert got.level == pytest.approx(level if level is not None else order_statistic_level(n, rank))
    # the narrowest pair that reaches 95% when n allows, else [min, max] with its true level
    if got.level >= 0.95 and rank < n // 2:
        assert order_statistic_level(n, rank + 1) < 0.95
    if got.level < 0.95:
        assert rank == 1


def test_no_interval_from_one_value():
    assert median_interval([1.5]) is None and median_interval([]) is None


def _coverage(draw, true_median: float, n: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    samples = draw(rng, (EXPERIMENTS, n))
    hits, levels = 0, set()
    for values in samples:
        interval = median_interval(values)
        hits += interval.low <= true_median <= interval.high
        levels.add(interval.level)
    (level,) = levels  # one n, one level
    return hits / EXPERIMENTS, level


@pytest.mark.parametrize("n", [3, 5, 8])
@pytest.mark.parametrize("name, draw, true_median", [
    # paired ratios around a 1.6x speedup, 10% lognormal noise: the median of the ratios is 1.6
    ("lognormal", lambda rng, shape: 1.6 * np.exp(rng.normal(0.0, 0.10, shape)), 1.6),
    # a skewed one (a process now and then far slower): exponential, median ln 2
    ("exponential", lambda rng, shape: rng.exponential(1.0, shape), np.log(2.0)),
])
def test_empirical_coverage_matches_the_stated_level(n, name, draw, true_median):
    coverage, level = _coverage(draw, true_median, n, seed=n)
    assert abs(coverage - level) <= TOLERANCE, (name, n, coverage, level)
    if n == 3:
        assert level == 0.75 and coverage < 0.80  # three rounds cannot give a 95% interval, and it says so
