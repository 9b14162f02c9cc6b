"""Steps in a case's history: where its level changed for good, not just night to night.

Optimal partitioning (Jackson et al. 2005, the exact form of PELT) of log(values) into
segments of constant mean: minimise the sum of squared deviations plus a penalty per
segment, by dynamic programming over all cut points (O(n^2), fine for a few hundred
runs). Working in log space makes the noise and the steps relative. The penalty is the
BIC-style 2 * sigma^2 * log(n), with sigma estimated robustly from the differences of
neighbouring points (MAD).

The segmentation's cuts are candidates; two rules then merge segments until neither merges
any more (`settle`):
  - a step is a level that persists: a segment must be held by at least MIN_LEVEL (3) of its
    runs, runs that lie nearer its median level than either neighbour's (`support`). One or
    two bad nights (a busy machine, a throttled board) get a segment of their own from the
    squared-error fit, or share one with a good night, and are merged back into the nearer
    level: an outlier, not a regression followed by an improvement. A slow last night alone
    is not a regression until MIN_LEVEL runs confirm the level (the run's own gate judges
    that night). The history's first segment needs two runs (MIN_FIRST_LEVEL): there is no
    earlier level for it to be an excursion from, and a history that starts with two nights
    and then moves for good has a step;
  - a boundary counts as a regression or an improvement only when the median levels on
    either side differ by more than the gate's relative threshold: neighbouring segments
    closer than that are merged, smallest gap first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

REGRESSION, IMPROVEMENT = "regression", "improvement"
SIGMA_FLOOR = 1e-3  # relative noise floor: a perfectly flat history still has timer resolution
MIN_LEVEL = 3  # runs a new level must hold to count as one (a shorter excursion is an outlier)
MIN_FIRST_LEVEL = 2  # runs the history's first level needs: there is no earlier level to be an outlier from


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


def support(values: np.ndarray, segs: list[tuple[int, int]]) -> list[int]:
    """For each segment, how many of its runs lie nearer (log scale) its own median level than
    either neighbour's: the runs that hold it as a level of its own."""
    y = np.log(values)
    lv = [float(np.median(y[a:b])) for a, b in segs]
    out = []
    for j, (a, b) in enumerate(segs):
        own = np.abs(y[a:b] - lv[j])
        rival = np.full(b - a, np.inf)
        for k in (j - 1, j + 1):
            if 0 <= k < len(segs):
                rival = np.minimum(rival, np.abs(y[a:b] - lv[k]))
        out.append(int(np.sum(own < rival)))
    return out


def merge_transient(values: np.ndarray, segs: list[tuple[int, int]], min_level: int = MIN_LEVEL) -> list[tuple[int, int]]:
    """Merge each segment held by fewer than `min_level` of its runs (support; the history's first
    segment: MIN_FIRST_LEVEL) into its nearer neighbour, the weakest first: an excursion of a
    night or two, or two bad nights that the segmentation grouped with a good one, is not a level."""
    segs = list(segs)
    y = np.log(values)
    while len(segs) > 1:
        held = support(values, segs)
        need = [min(MIN_FIRST_LEVEL, min_level) if j == 0 else min_level for j in range(len(segs))]
        short = [h - n for h, n in zip(held, need)]
        j = int(np.argmin(short))
        if short[j] >= 0:
            break
        lv = [float(np.median(y[a:b])) for a, b in segs]
        nearer = [k for k in (j - 1, j + 1) if 0 <= k < len(segs)]
        k = min(nearer, key=lambda k: abs(lv[k] - lv[j]))
        lo, hi = min(j, k), max(j, k)
        segs[lo:hi + 1] = [(segs[lo][0], segs[hi][1])]
    return segs


def settle(values: np.ndarray, segs: list[tuple[int, int]], threshold: float,
           min_level: int = MIN_LEVEL) -> list[tuple[int, int]]:
    """The segments that are steps: transient ones and those closer than the threshold merged,
    until neither rule merges any more."""
    while True:
        merged = merge_small(values, merge_transient(values, segs, min_level), threshold)
        if merged == segs:
            return segs
        segs = merged


def detect_steps(values: Sequence[float], threshold: float = 0.10, lower_is_better: bool = True,
                 penalty_scale: float = 2.0, min_level: int = MIN_LEVEL) -> list[Step]:
    """The boundaries between the settled segments: each a level of at least `min_level` runs,
    the medians on either side more than `threshold` apart."""
    values = np.asarray(values, dtype=np.float64)
    segs = settle(values, segments(values, penalty_scale), threshold, min_level)
    steps = []
    for (a0, a1), (b0, b1) in zip(segs, segs[1:]):
        before, after = float(np.median(values[a0:a1])), float(np.median(values[b0:b1]))
        change = after / before - 1.0
        worse = change if lower_is_better else -change
        kind = REGRESSION if worse > 0 else IMPROVEMENT
        steps.append(Step(b0, before, after, change, kind))
    return steps


def levels(values: Sequence[float], threshold: float = 0.10, penalty_scale: float = 2.0,
           min_level: int = MIN_LEVEL) -> list[tuple[int, int, float]]:
    """The settled segments as (start, end, median level), for drawing."""
    values = np.asarray(values, dtype=np.float64)
    segs = settle(values, segments(values, penalty_scale), threshold, min_level)
    return [(a, b, float(np.median(values[a:b]))) for a, b in segs]
