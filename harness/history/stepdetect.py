"""Steps in a case's history: where its level changed for good, not just night to night.

Optimal partitioning (Jackson et al. 2005, the exact form of PELT) of log(values) into
segments of constant mean: minimise the sum of squared deviations plus a penalty per
segment, by dynamic programming over all cut points (O(n^2), fine for a few hundred
runs). Working in log space makes the noise and the steps relative. The penalty is the
BIC-style 2 * sigma^2 * log(n), with sigma estimated robustly from the differences of
neighbouring points (MAD), so one noisy night does not have to cut a segment. A boundary
counts as a regression or an improvement only when the median levels on either side
differ by more than the gate's relative threshold: neighbouring segments closer than that
are merged first, smallest gap first, so every remaining boundary is one or the other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

REGRESSION, IMPROVEMENT = "regression", "improvement"
SIGMA_FLOOR = 1e-3  # relative noise floor: a perfectly flat history still has timer resolution


@dataclass(frozen=True)
class Step:
    index: int  # position of the first point of the new level
    before: float  # median of the segment before
    after: float  # median of the segment from `index`
    change: float  # after / before - 1
    kind: str  # regression or improvement


def robust_sigma(y: np.ndarray) -> float:
    """Noise of a piecewise-constant series: MAD of first differences / sqrt(2), scaled to a sigma."""
    if len(y) < 3:
        return SIGMA_FLOOR
    d = np.diff(y)
    mad = float(np.median(np.abs(d - np.median(d))))
    return max(1.4826 * mad / math.sqrt(2.0), SIGMA_FLOOR)


def segments(values: Sequence[float], penalty_scale: float = 2.0) -> list[tuple[int, int]]:
    """[start, end) index pairs of the optimal segmentation of log(values)."""
    raw = np.asarray(values, dtype=np.float64)
    n = len(raw)
    if n == 0:
        return []
    if not (np.all(np.isfinite(raw)) and np.all(raw > 0)):
        raise ValueError("step detection needs positive, finite values")
    y = np.log(raw)
    sigma = robust_sigma(y)
    penalty = penalty_scale * sigma * sigma * math.log(max(n, 2))
    s1 = np.concatenate([[0.0], np.cumsum(y)])
    s2 = np.concatenate([[0.0], np.cumsum(y * y)])
    best = np.full(n + 1, np.inf)
    best[0] = -penalty
    last_cut = np.zeros(n + 1, dtype=int)
    for t in range(1, n + 1):
        s = np.arange(t)
        length = t - s
        cost = (s2[t] - s2[s]) - (s1[t] - s1[s]) ** 2 / length
        total = best[s] + np.maximum(cost, 0.0) + penalty
        k = int(np.argmin(total))
        best[t], last_cut[t] = total[k], k
    cuts, t = [], n
    while t > 0:
        cuts.append((int(last_cut[t]), int(t)))
        t = last_cut[t]
    return cuts[::-1]


def merge_small(values: np.ndarray, segs: list[tuple[int, int]], threshold: float) -> list[tuple[int, int]]:
    """Merge neighbouring segments whose medians differ by no more than `threshold` (relative),
    smallest difference first: a real but small shift is not a step worth marking."""
    segs = list(segs)
    while len(segs) > 1:
        levels = [float(np.median(values[a:b])) for a, b in segs]
        gaps = [abs(math.log(levels[i + 1] / levels[i])) for i in range(len(segs) - 1)]
        i = int(np.argmin(gaps))
        if gaps[i] > math.log1p(threshold):
            break
        segs[i:i + 2] = [(segs[i][0], segs[i + 1][1])]
    return segs


def detect_steps(values: Sequence[float], threshold: float = 0.10, lower_is_better: bool = True,
                 penalty_scale: float = 2.0) -> list[Step]:
    """The boundaries between segments after merging those closer than the threshold."""
    values = np.asarray(values, dtype=np.float64)
    segs = merge_small(values, segments(values, penalty_scale), threshold)
    steps = []
    for (a0, a1), (b0, b1) in zip(segs, segs[1:]):
        before, after = float(np.median(values[a0:a1])), float(np.median(values[b0:b1]))
        change = after / before - 1.0
        worse = change if lower_is_better else -change
        kind = REGRESSION if worse > 0 else IMPROVEMENT
        steps.append(Step(b0, before, after, change, kind))
    return steps


def levels(values: Sequence[float], threshold: float = 0.10, penalty_scale: float = 2.0) -> list[tuple[int, int, float]]:
    """The merged segments as (start, end, median level), for drawing."""
    values = np.asarray(values, dtype=np.float64)
    segs = merge_small(values, segments(values, penalty_scale), threshold)
    return [(a, b, float(np.median(values[a:b]))) for a, b in segs]
