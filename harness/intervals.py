"""95% confidence intervals for an accuracy scored on a finite evaluation set.

The row's `accuracy_ci_low` / `accuracy_ci_high` say how far the score could move with
another draw of the same number of samples, which matters most when a profile scores a
subset (`eval_samples`). The method follows the metric (`Metric.interval`):

  - "wilson": the score is a fraction of samples that pass (top-1, top-5); Wilson's score
    interval for a binomial proportion, which stays inside [0, 1] and behaves near 0 and 1
    where the normal approximation does not;
  - "bootstrap": any other score. When the metric gives per-sample values whose mean is
    the score (cosine to fp32, squared or absolute error), a percentile bootstrap of that
    mean; otherwise the metric itself is re-scored on resampled evaluation sets (macro F1,
    a user's function), within a small time allowance;
  - "none": no interval (e.g. nearest-neighbour agreement, whose neighbours change when
    samples repeat).
Resampling is seeded, so the same outputs give the same interval in every run.

`median_interval` is the interval of a median over a handful of values (a speedup's paired
rounds): an exact order-statistic (binomial) interval that states its real confidence level,
since a percentile bootstrap of a median over n <= 5 values returns their extremes and covers
the true median far less often than the 95% it claims (75% at n = 3).
"""
from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile
RESAMPLES = 1000  # bootstrap resamples of a per-sample mean (vectorised: milliseconds)
RESCORE_RESAMPLES = 200  # resamples when the metric itself must be re-scored
RESCORE_ALLOWANCE_S = 2.0  # at most this long re-scoring; fewer than MIN_RESCORES fit: no interval
MIN_RESCORES = 50
SEED = 0

Interval = Optional[tuple[float, float]]


def wilson(successes: float, n: int, z: float = Z95) -> Interval:
    """Wilson score interval of a proportion successes / n."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_mean(values: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """Percentile bootstrap interval of the mean of `values`."""
    values = np.asarray(values, dtype=np.float64).ravel()
    n = len(values)
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 100):  # in blocks: (100, n) indices at a time keeps memory small
        idx = rng.integers(0, n, size=(min(100, resamples - start), n))
        means[start:start + len(idx)] = values[idx].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_rescore(score: Callable[[np.ndarray], Optional[float]], n: int, resamples: int = RESCORE_RESAMPLES,
                      allowance_s: float = RESCORE_ALLOWANCE_S, seed: int = SEED) -> Interval:
    """Percentile bootstrap interval of `score(indices)` over resampled index sets; None when
    fewer than MIN_RESCORES resamples fit the time allowance or the metric fails on them."""
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    values = []
    deadline = time.perf_counter() + allowance_s
    for _ in range(resamples):
        try:
            value = score(rng.integers(0, n, size=n))
        except Exception:  # noqa: BLE001 - a resample the metric cannot score (e.g. a class missing)
            return None
        if value is not None and np.isfinite(value):
            values.append(float(value))
        if time.perf_counter() > deadline:
            break
    if len(values) < MIN_RESCORES:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


class MedianInterval(NamedTuple):
    """An order-statistic interval of a median: [low, high] = the k-th smallest and k-th largest
    of the n values; `level` is its exact confidence (not a nominal one)."""

    low: float
    high: float
    level: float  # probability that [low, high] holds the true median, for any continuous distribution
    rank: int  # k: low and high are the k-th smallest and k-th largest values
    n: int


def order_statistic_level(n: int, k: int) -> float:
    """Exact coverage of [X(k), X(n+1-k)] for the median of a continuous distribution: the true
    median lies between them unless fewer than k of the n values fall on one side of it,
    so 1 - 2 P(Binomial(n, 1/2) <= k - 1) (n = 3, k = 1: 0.75; n = 5: 0.9375; n = 6: 0.969)."""
    if n < 2 or not 1 <= k <= n // 2:
        return 0.0
    tail = sum(math.comb(n, i) for i in range(k)) / 2.0 ** n
    return 1.0 - 2.0 * tail


def median_interval(values: Sequence[float], confidence: float = 0.95) -> Optional[MedianInterval]:
    """Exact (binomial) order-statistic interval for the median of `values`: the narrowest
    symmetric pair of order statistics whose level is at least `confidence`, or, when n is too
    small for that (n <= 5 at 95%), the widest one, [min, max], with its true level. None
    with fewer than two values. Order statistics commute with monotone maps, so the interval of
    ratios is the same whether taken on the ratios or on their logs."""
    ordered = sorted(float(v) for v in values)
    n = len(ordered)
    if n < 2:
        return None
    k = 1
    while k + 1 <= n // 2 and order_statistic_level(n, k + 1) >= confidence:
        k += 1
    return MedianInterval(ordered[k - 1], ordered[n - k], order_statistic_level(n, k), k, n)
