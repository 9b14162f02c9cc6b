"""What may be shipped: the one candidate rule behind `recommend()` (harness/history/recommend.py)
and the device table's `+` (harness/report_devices.py), so the mark beside the table and the
answer under it cannot disagree on the same rows.

A row is a candidate when it is a deployed artifact (not `execution="reference"`: an eager torch
program is how accuracy is debugged, not what ships, and never a speedup headline), it is ok
with a latency, its accuracy is scored and within the budget
(points, in the metric's direction) of its framework's fp32 (fp32 itself always is), its
timing can be trusted: not throttled, and its timed loop met its minimums (`valid`), it meets
every one of the user's limits (harness/limits.py: p99, peak memory, size, energy; a row with no
reading for a limited figure is out) and it has a figure for the objective. This module
imports no history code (report_devices is reached from harness.report, which the history
database imports).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from harness.limits import DEFAULT_MAX_DROP, Limits
from harness.metrics import accuracy_loss, row_higher_is_better
from harness.values import number, plain


@dataclass(frozen=True)
class Candidate:
    row: dict[str, Any]
    eligible: bool
    why: str  # why it is not eligible, or the accuracy evidence when it is
    untrusted: bool = False  # excluded because its timing cannot be trusted (throttled, minimums not met)
    broke: tuple[str, ...] = ()  # the Limits fields it breaks (it is otherwise eligible: accuracy, timing)
    excess: float = 0.0  # the sum of its relative excesses over those limits (inf: a figure missing)

    @property
    def label(self) -> str:
        return f"{self.row['framework']} {self.row['mode']}"



def untrusted_timing(row: dict[str, Any]) -> Optional[str]:
    """Why a row's timing cannot be trusted (it ran throttled, or its loop hit the time cap
    before its minimums), or None."""
    if plain(row.get("throttled")) is True or plain(row.get("throttled")) == 1:
        reasons = plain(row.get("throttle_reasons"))
        return "ran throttled" + (f" ({reasons})" if reasons else "") + ": its latency is not the device's normal speed"
    if plain(row.get("valid")) is False or plain(row.get("valid")) == 0:
        runs, seconds = number(row.get("n_runs")), number(row.get("duration_s"))
        took = f" after {int(runs)} runs in {seconds:.3g} s" if runs is not None and seconds is not None else ""
        return (f"timed loop stopped at its time cap{took}, before its minimum count and duration (valid=false); "
                f"rerun with a longer --max-duration")
    return untrusted_baseline(row)  # its speedup's fp32 side


REFERENCE = "reference"  # the row's `execution` for reference numerics (harness.sections.Provenance)


def _judge(row: dict[str, Any], max_drop: float) -> tuple[bool, str]:
    if plain(row.get("execution")) == REFERENCE:
        return False, (f"reference numerics, not a deployment format ({row.get('recipe')} runs eagerly; "
                       "its deployed form is another row)")
    if row.get("status") != "ok":
        return False, f"status {row.get('status')}: {row.get('reason') or 'no reason recorded'}"
    if number(row.get("latency_p50_ms")) is None:
        return False, "no latency"
    if row.get("mode") == "fp32":
        return True, f"accuracy {row['accuracy']:.4f} (the fp32 baseline)" if number(row.get("accuracy")) is not None \
            else "the fp32 baseline (accuracy not scored)"
    if number(row.get("accuracy")) is None:
        why = str(row.get("reason") or "").split(":", 1)[-1].strip()  # 'accuracy not scored: <why>'
        return False, "accuracy not scored" + (f" ({why})" if why else "")
    delta = number(row.get("accuracy_delta"))
    if delta is None:
        return False, "no accuracy comparison with fp32 (the fp32 baseline of this framework failed or was not run)"
    higher = row_higher_is_better(row)
    drop = accuracy_loss(delta, 0.0, higher)  # points lost in the metric's direction
    text = (f"accuracy {row['accuracy']:.4f} ({100 * delta:+.2f} pts vs fp32"
            f"{'' if higher else ', lower is better'}, budget {max_drop:g})")
    if drop > max_drop + 1e-9:
        return False, f"loses {drop:.2f} accuracy points vs fp32, over the budget of {max_drop:g}"
    return True, text


def as_limits(limits: Union[Limits, float, None]) -> Limits:
    """Limits, from Limits, an accuracy budget in points (the older spelling) or None (defaults)."""
    if isinstance(limits, Limits):
        return limits
    return Limits() if limits is None else Limits(max_accuracy_drop=float(limits))


def candidate(row: dict[str, Any], limits: Union[Limits, float, None] = None) -> Candidate:
    """The one rule for what may be shipped: an ok row with a latency, its accuracy scored and
    within the accuracy budget of its framework's fp32 (fp32 itself always), a trusted timing,
    within every other limit and with a figure for the objective. `limits`: Limits, or an
    accuracy budget in points. `recommend`, the device table's `+` (report_devices) and the
    dashboard all go through it."""
    limits = as_limits(limits)
    ok, why = _judge(row, limits.accuracy_drop)
    if not ok:
        return Candidate(row, False, why)
    distrust = untrusted_timing(row)
    if distrust:
        return Candidate(row, False, f"{distrust} (otherwise eligible: {why})", untrusted=True)
    broken = limits.broken(row)
    if broken:
        return Candidate(row, False, "over the limits: " + "; ".join(text for _, _, text in broken),
                         broke=tuple(name for name, _, _ in broken), excess=sum(e for _, e, _ in broken))
    missing = limits.missing_objective(row)
    if missing:
        return Candidate(row, False, missing)
    return Candidate(row, True, why)


def _or_inf(value: Any) -> float:
    figure = number(value)
    return math.inf if figure is None else figure


def rank(c: Candidate, limits: Limits) -> tuple:
    """Best first: the objective's figure (p50 by default), then p50, then the label."""
    return (_or_inf(c.row.get(limits.column)), _or_inf(c.row.get("latency_p50_ms")), c.label)


def group_limits(suites, flags: Limits, suite_limits: Mapping[str, Limits]) -> Limits:
    """The limits applied to one (target, model, batch): its suite's declared defaults
    (Suite(limits=...); the first suite by name that declares any) overridden by `flags`."""
    declared = [suite_limits[s] for s in sorted({str(s) for s in suites if isinstance(s, str)}) if s in suite_limits]
    return (declared[0] if declared else Limits()).override(flags)


def untrusted_baseline(row: dict[str, Any]) -> Optional[str]:
    """Why the fp32 side of a row's speedup cannot be trusted (the baseline rounds beside it, or
    the fp32 row, ran throttled or stopped at its time cap: the ratio is not the device's), or None."""
    throttled, valid = plain(row.get("baseline_throttled")), plain(row.get("baseline_valid"))
    if throttled is True or throttled == 1 or valid is False or (valid is not None and valid == 0):
        note = plain(row.get("baseline_timing_note")) or "its fp32 baseline's timing cannot be trusted"
        return f"{note}: the speedup it divides by is not the device's normal speed"
    return None
