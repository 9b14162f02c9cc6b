"""Step detection over a case's history: a level that persists is a step; one or two bad
nights, or a slow last night alone, are outliers, not steps (issue 22, defect 7)."""
from __future__ import annotations

import numpy as np
import pytest

from harness.history.stepdetect import IMPROVEMENT, REGRESSION, detect_steps, levels, segments

MIN_LEVEL = 3  # runs a new level must hold to be a step (stepdetect.MIN_LEVEL)

SEEDS = range(8)


def _nights(seed: int, n: int = 30, noise: float = 0.02) -> np.ndarray:
    """n nights of a 1.0 ms case with `noise` relative (lognormal) night-to-night noise."""
    return np.exp(np.random.default_rng(seed).normal(0.0, noise, n))


def _steps(values) -> list[tuple[int, str]]:
    return [(s.index, s.kind) for s in detect_steps(values)]


@pytest.mark.parametrize("seed", SEEDS)
def test_one_bad_night_is_not_two_steps(seed):
    nights = _nights(seed)
    nights[15] *= 1.5  # one night on a busy machine
    assert _steps(nights) == []  # before: "regression +51%" at 15 and "improvement -34%" at 16
    assert len(levels(nights)) == 1  # the trend draws one level through it
    two = _nights(seed)
    two[15:17] *= 1.5  # two bad nights in a row: still shorter than a level
    assert _steps(two) == []
    fast = _nights(seed)
    fast[10] /= 1.5  # a night that was fast for once
    assert _steps(fast) == []


@pytest.mark.parametrize("seed", SEEDS)
def test_a_slow_last_night_alone_is_not_a_regression(seed):
    nights = _nights(seed)
    nights[-1] *= 1.5
    assert _steps(nights) == []
    nights[-2] *= 1.5  # two: not yet
    assert _steps(nights) == []
    nights[-MIN_LEVEL] *= 1.5  # the third night confirms the new level
    assert _steps(nights) == [(30 - MIN_LEVEL, REGRESSION)]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_persistent_step_is_still_found(seed):
    stepped = _nights(seed)
    stepped[15:] *= 1.3
    steps = detect_steps(stepped)
    assert [(s.index, s.kind) for s in steps] == [(15, REGRESSION)]
    assert steps[0].change == pytest.approx(0.3, abs=0.05)
    stepped[15] *= 1.5  # an outlier on the step's first night does not move it or add one
    assert _steps(stepped) == [(15, REGRESSION)]
    back = _nights(seed)
    back[15:22] *= 1.3  # slower for a week, then fixed
    assert _steps(back) == [(15, REGRESSION), (22, IMPROVEMENT)]
    short = _nights(seed)
    short[15:15 + MIN_LEVEL] *= 1.3  # the shortest excursion that is a level
    assert _steps(short) == [(15, REGRESSION), (15 + MIN_LEVEL, IMPROVEMENT)]


def test_short_histories_and_bad_values():
    assert segments([]) == [] and segments([1.0]) == [(0, 1)] and detect_steps([]) == []
    assert detect_steps([1.0, 1.0, 1.0, 1.5, 1.5]) == []  # too short for two levels of MIN_LEVEL runs
    assert _steps([1.0, 1.0, 1.0, 1.5, 1.5, 1.5]) == [(3, REGRESSION)]
    with pytest.raises(ValueError):
        segments([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])


@pytest.mark.parametrize("seed", SEEDS)
def test_the_start_of_a_history(seed):
    young = _nights(seed, n=6)
    young[2:] *= 1.6  # two nights, then a level that held for four: a step
    assert _steps(young) == [(2, REGRESSION)]
    spike = _nights(seed)
    spike[0] *= 1.5  # the very first night slow alone: no earlier level, and no step either
    assert _steps(spike) == []
