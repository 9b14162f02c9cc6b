"""How one quantity's change between a baseline row and a new row is judged: the verdicts, the
relative/absolute threshold verdict, and the energy gate (harness.history.regress applies them).

Energy is judged on its own evidence. The board's power includes other processes' load, so the
figure is the energy above the idle power the runner reads just before each window
(`energy_above_idle_mj_per_inf`) where both rows have it, else the total (`energy_mj_per_inf`).
Its margin comes from the energy readings themselves: threshold + gates.noise_k x the larger
relative spread ((max - min) / median) of either side's per-window figures (`energy_round_mj`,
`energy_above_idle_round_mj`: one per round), not from the latency's IQR/median; with a single
window on either side there is no spread to judge against, and the verdict is `not judged` with
the reason (as it is when the energy above idle is not positive).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from harness.history.gates import Gates
from harness.values import number, plain

REGRESSION, IMPROVEMENT, SAME, NOISY = "regression", "improvement", "same", "noisy"
UNJUDGED = "not judged"  # a quantity both rows have, without the evidence to judge it (energy from one window)


@dataclass(frozen=True)
class Quantity:
    column: str  # the result column
    gate: str  # the Gates field holding its threshold
    relative: bool  # change as new/old - 1 (else: absolute, in points)
    lower_is_better: bool
    timing: bool  # derived from the timed window: its margin widens when the case is noisy
    unit: str


# Energy (judge_energy): above idle where both rows have it, else the total; each with its rounds' figures.
ENERGY = (("energy_above_idle_mj_per_inf", "energy_above_idle_round_mj", "above idle"),
          ("energy_mj_per_inf", "energy_round_mj", "total"))


def verdict(q: Quantity, old: float, new: float, threshold: float) -> tuple[str, float]:
    """REGRESSION, IMPROVEMENT or SAME beyond `threshold` (relative, or points), and the change."""
    if q.relative:
        change = new / old - 1.0 if old else math.inf
        worse = change if q.lower_is_better else -change
        better = (old / new - 1.0 if new else math.inf) if q.lower_is_better else (new / old - 1.0)
    else:
        change = 100.0 * (new - old)  # points
        worse = -change if not q.lower_is_better else change
        better = -worse
    eps = 1e-12
    if worse > threshold + eps:
        return REGRESSION, change
    if better > threshold + eps:
        return IMPROVEMENT, change
    return SAME, change


def energy_readings(row: Mapping[str, Any], column: str) -> list[float]:
    """A row's per-window energy figures (its rounds), from the space-separated column."""
    text = plain(row.get(column))
    return [float(v) for v in str(text).split()] if text else []


def energy_spread(readings: Sequence[float]) -> float:
    """How far one side's energy readings disagree: (max - min) / median."""
    return float((max(readings) - min(readings)) / np.median(readings))


def judge_energy(new: Mapping[str, Any], old: Mapping[str, Any], gates: Gates) -> Optional[dict[str, Any]]:
    """The energy verdict (None when a side has no energy figure): above idle where both rows
    have it, judged against the larger spread of either side's per-window readings; `not
    judged` with one window on a side (no spread to judge against) or a figure above idle that
    is not positive (the inferences' energy is inside the idle reading's noise)."""
    for column, per_window, basis in ENERGY:
        a, b = number(old.get(column)), number(new.get(column))
        if a is not None and b is not None:
            break
    else:
        return None
    q = Quantity(column, "energy", True, True, False, "mJ")
    threshold = float(gates.energy)
    record = {"case_id": new.get("case_id"), "baseline_run_id": old.get("run_id"), "quantity": column, "old": a, "new": b,
              "change": b / a - 1.0 if a > 0 else None, "p_value": None, "method": "energy-spread"}
    if a <= 0 or b <= 0:
        return {**record, "verdict": UNJUDGED, "method": "none",
                "detail": f"not judged: energy {basis} is not positive (old {a:.4g}, new {b:.4g} mJ): the inferences' "
                          f"energy is inside the idle reading's noise"}
    readings = {side: energy_readings(row, per_window) for side, row in (("old", old), ("new", new))}
    single = [side for side, values in readings.items() if len(values) < 2]
    if single:
        return {**record, "verdict": UNJUDGED, "method": "none",
                "detail": f"not judged: one energy window on the {' and '.join(single)} side (no spread of its own to "
                          f"judge a {record['change']:+.1%} change against); measure with --qb-rounds 3 or more"}
    spreads = {side: energy_spread(values) for side, values in readings.items()}
    widened = threshold + gates.noise_k * max(spreads.values())
    wide, change = verdict(q, a, b, widened)
    narrow, _ = verdict(q, a, b, threshold)
    detail = (f"energy {basis}: threshold {threshold:g} widened to {widened:.3g} by the readings' spread (old "
              f"{spreads['old']:.3f} over {len(readings['old'])} windows, new {spreads['new']:.3f} over "
              f"{len(readings['new'])}: (max - min) / median)")
    if wide == SAME and narrow != SAME:
        return {**record, "change": change, "verdict": NOISY, "detail": f"within the noise: {detail}"}
    return {**record, "change": change, "verdict": wide, "detail": detail}

