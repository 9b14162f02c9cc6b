"""The accuracy budget, judged in one place.

A case with a budget (points of the metric it may lose against its fp32 baseline, in the
metric's direction) gets `within_budget` when it is measured (`within_budget`); a test fails
on it through `failure` (`verdict` decides whether that fails the test), and the comparison
table and the summary show `text` for a stored row. All three read the same loss
(`harness.metrics.accuracy_loss`: positive is worse) and the same "cannot be checked" rule:
no fp32 accuracy to compare with is a verdict of its own, a case whose evaluation was skipped
(past its time budget) is not judged at all.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from harness.metrics import accuracy_loss, row_higher_is_better
from harness.values import number, plain
from harness.vocabulary import STATUS_ERROR, STATUS_OK

TOLERANCE = 1e-9  # a loss equal to the budget is within it


def within_budget(budget: Optional[float], row: Mapping[str, Any],
                  baseline: Optional[Mapping[str, Any]]) -> Optional[bool]:
    """Whether the measured row keeps within `budget` points of its fp32 baseline; None when
    there is no budget or it cannot be checked (no fp32 accuracy, or this case's was not scored)."""
    if budget is None:
        return None
    if baseline is None or baseline.get("accuracy") is None or row.get("accuracy") is None:
        return None
    loss_points = accuracy_loss(row["accuracy"], baseline["accuracy"], bool(row["higher_is_better"]))
    return bool(loss_points <= budget + TOLERANCE)


def failure(case, row: Mapping[str, Any], baseline: Optional[Mapping[str, Any]]) -> Optional[str]:
    """Why an ok case does not meet its accuracy budget (over it, or it cannot be checked), or None."""
    if case.budget is None or row["status"] != STATUS_OK:
        return None
    if row.get("within_budget") is None:
        if row.get("accuracy") is None and row.get("eval_samples") == 0:
            return None  # not scored within the case's time budget: its reason says so, its latency stands
        why = baseline["reason"] if baseline else "no fp32 baseline"
        return f"{case.case_id}: accuracy budget {case.budget} points cannot be checked: fp32 baseline failed ({why})"
    if not row["within_budget"]:
        loss = accuracy_loss(row["accuracy"], baseline["accuracy"], bool(row["higher_is_better"]))
        lower = "" if row["higher_is_better"] else f" ({row['metric']}: lower is better)"
        return (f"{case.case_id}: accuracy {row['accuracy']:.4f} vs fp32 {baseline['accuracy']:.4f}{lower} "
                f"loses {loss:.2f} points, over the {case.mode} budget of {case.budget} points")
    return None


def verdict(case, row: Mapping[str, Any], baseline: Optional[Mapping[str, Any]],
            fail_over_budget: bool = False) -> Optional[str]:
    """Why the case's test fails, or None when it passes (n/a is a skip, handled by the caller).
    An error fails; a case over its accuracy budget is a verdict shown in the table and the
    summary, and fails only with `fail_over_budget` (the flag, or the suite's setting)."""
    if row["status"] == STATUS_ERROR:
        return f"{case.case_id}: {row['reason']}"
    if fail_over_budget or case.fail_over_budget:
        return failure(case, row, baseline)
    return None


def loss(row: Mapping[str, Any]) -> Optional[float]:
    """Accuracy points a stored row lost vs its fp32, in the metric's direction (positive = worse)."""
    delta = number(row.get("accuracy_delta"))
    if delta is None:
        return None
    return accuracy_loss(delta, 0.0, row_higher_is_better(row))


def text(row: Mapping[str, Any]) -> str:
    """'over budget: -4.80 pts, a loss of 4.80 > 1' for an ok row over its accuracy budget,
    'budget not checked: ...' when its fp32 gave no accuracy, else ''. The sign is the row's
    delta_pts; the comparison is the loss in the metric's direction."""
    budget = number(row.get("accuracy_budget"))
    within = plain(row.get("within_budget"))
    if row.get("status") != STATUS_OK or budget is None:
        return ""
    if within is None:
        if number(row.get("accuracy")) is None:
            return ""  # not scored (e.g. past the case's time budget): its own reason says so
        return f"budget {budget:g} not checked: no fp32 accuracy to compare with"
    if bool(within):
        return ""
    points, delta = loss(row), number(row.get("accuracy_delta"))
    if points is None or delta is None:
        return "over budget"
    lower = "" if row_higher_is_better(row) else " (lower is better)"
    return f"over budget: {100 * delta:+.2f} pts{lower}, a loss of {points:.2f} > {budget:g}"
