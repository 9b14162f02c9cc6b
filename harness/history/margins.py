"""How the choice beats its runner-up, in the objective's own terms, where no race decided it.

    p50     '+12% p50' (a near tie within the tie margin, or within the noise of two noisy cases);
            the p50s come from separate processes: 'p50s from separate processes, not raced'
    p99     "the choice's p99 1.40x lower" (a near tie within the tie margin); 'p99s from separate processes,
            not raced'. p99 is a latency: the race (harness/race.py) measures it like p50 when the
            answer minimises it, and its verdict then replaces this margin
    size    'the choice 0.31 MB smaller' ('the same size': the lower p50 ranks them); 'sizes are exact: no race
            needed'. An artifact's size is the same on every run of the same code: nothing to race
    energy  'the choice 0.012 mJ less per inference' (a near tie within the larger spread of either case's
            per-window energy readings, (max - min) / median, as harness/history/verdicts.py judges
            energy); 'energy from separate windows, not raced'. Energy is not raced: a window's
            energy is the board's power over the timed window, other processes' load included, and
            most targets have no power sensor to read it per round; the readings' own spread is
            the evidence, and without two windows a side there is none ('one energy window')

`margin(choice, runner_up, goal, tie, noise)` -> Margin; `figure(row, goal)` is the objective's
figure of a row as the evidence quotes it ('p99 0.42 ms', 'size 0.0968 MB').
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from harness.history.verdicts import energy_readings, energy_spread
from harness.limits import MB
from harness.values import number

NOT_RACED = "p50s from separate processes, not raced"
BASIS = {"p50": NOT_RACED, "p99": "p99s from separate processes, not raced",
         "size": "sizes are exact: no race needed", "energy": "energy from separate windows, not raced"}
# the choice's words when fp32 itself is the best: 'no quantized mode within 1 accuracy points <is faster>'
BETTER = {"p50": "is faster", "p99": "has a lower p99", "size": "is smaller", "energy": "uses less energy per inference"}


@dataclass(frozen=True)
class Margin:
    relative: float  # the runner-up's figure / the choice's - 1 (the objective's figure)
    text: str  # the runner-up against the choice: '+12% p50', "the choice's p99 1.40x lower", 'the choice 0.31 MB smaller'
    near: str  # '' or why the two cannot be told apart on this evidence
    basis: str  # where the figures come from: BASIS[goal]


def figure(row: Mapping[str, Any], goal: str) -> str:
    """The objective's figure of a row: 'p50 1.2 ms', 'p99 0.42 ms', 'size 0.0968 MB', 'energy 0.12 mJ/inference'."""
    if goal == "size":
        size = number(row.get("size_bytes"))
        return "size unknown" if size is None else f"size {size / MB:.3g} MB"
    if goal == "energy":
        energy = number(row.get("energy_mj_per_inf"))
        return "energy unknown" if energy is None else f"energy {energy:.3g} mJ/inference"
    value = number(row.get(f"latency_{goal}_ms"))
    return f"{goal} unknown" if value is None else f"{goal} {value:.4g} ms"


def _noise(choice: Mapping[str, Any], runner_up: Mapping[str, Any], margin: float, noise: float) -> str:
    iqr = [v for v in (number(choice.get("iqr_over_median")), number(runner_up.get("iqr_over_median")))
           if v is not None and v >= noise]
    return f"within the noise (IQR/median {max(iqr):.2f})" if iqr and margin <= max(iqr) else ""


def _energy_near(choice: Mapping[str, Any], runner_up: Mapping[str, Any], margin: float) -> str:
    readings = [energy_readings(r, "energy_round_mj") for r in (choice, runner_up)]
    if any(len(r) < 2 for r in readings):
        return "one energy window on a side: no spread to judge the difference by"
    spread = max(energy_spread(r) for r in readings)
    return f"within the energy readings' spread ({spread:.2f})" if margin <= spread else ""


def margin(choice: Mapping[str, Any], runner_up: Mapping[str, Any], goal: str, tie: float,
           noise: float) -> Optional[Margin]:
    """How `choice` beats `runner_up` on `goal` (None when either lacks the figure)."""
    column = {"size": "size_bytes", "energy": "energy_mj_per_inf"}.get(goal, f"latency_{goal}_ms")
    mine, theirs = number(choice.get(column)), number(runner_up.get(column))
    if mine is None or theirs is None or mine <= 0:
        return None
    relative = theirs / mine - 1.0
    basis = BASIS[goal]
    if goal == "p50":
        near = "a near tie" if relative <= tie else _noise(choice, runner_up, relative, noise)
        return Margin(relative, f"{relative:+.0%} p50", near, basis)
    if goal == "p99":
        return Margin(relative, f"the choice's p99 {theirs / mine:.2f}x lower", "a near tie" if relative <= tie else "", basis)
    if goal == "size":
        smaller = (theirs - mine) / MB
        text = f"the choice {smaller:.3g} MB smaller" if smaller > 0 else "the same size (the lower p50 ranks them)"
        return Margin(relative, text, "", basis)
    less = theirs - mine
    text = f"the choice {less:.3g} mJ less per inference" if less > 0 else "the same energy per inference"
    return Margin(relative, text, _energy_near(choice, runner_up, relative), basis)
