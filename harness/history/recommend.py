"""Which (framework, mode) to ship: per model (and batch size) on a target, the fastest by
p50 whose accuracy stays within the budget of the fp32 baseline of the same framework.

The candidates are the current rows of the target (regress.current_rows: each mode as the
newest run that measured it left it; a mode that errored last night is not a candidate today). accuracy_delta is the row's own comparison with fp32 in
the same run, same framework and target, as the report computes it. `quantbench
recommend` and the dashboard both call `recommend()`, so they always agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd

from harness.history.regress import current_rows
from harness.metrics import accuracy_loss, row_higher_is_better
from harness.stats import NOISE_THRESHOLD
from harness.values import number

DEFAULT_MAX_DROP = 1.0  # accuracy points



@dataclass(frozen=True)
class Candidate:
    row: dict[str, Any]
    eligible: bool
    why: str  # why it is not eligible, or the accuracy evidence when it is

    @property
    def label(self) -> str:
        return f"{self.row['framework']} {self.row['mode']}"


@dataclass(frozen=True)
class Recommendation:
    target: str
    model: str
    batch_size: int
    max_drop: float  # points
    choice: Optional[Candidate]
    candidates: list[Candidate] = field(default_factory=list)  # fastest first, ineligible last
    tie: float = 0.10  # a runner-up slower by no more than this (relative) is called a near tie

    @property
    def answer(self) -> str:
        """'framework/mode' or 'none' (what the dashboard marks and tests compare)."""
        return f"{self.choice.row['framework']}/{self.choice.row['mode']}" if self.choice else "none"

    def evidence(self) -> list[str]:
        """Lines that justify the answer: the choice, the runner-up, what was excluded and why."""
        if self.choice is None:
            lines = [f"no mode of {self.model} is within {self.max_drop:g} accuracy points of fp32 on {self.target}"]
        else:
            r = self.choice.row
            lines = [f"{self.answer} ({r.get('recipe')}): p50 {r['latency_p50_ms']:.4g} ms"
                     + (f", {r['speedup']:.2f}x vs {r['framework']} fp32" if number(r.get("speedup")) else "")
                     + f"; {self.choice.why}"
                     + (f"; size {r['size_ratio']:.2f}x fp32" if number(r.get("size_ratio")) else "")
                     + (f"; {int(number(r.get('n_runs')))} timed runs" if number(r.get("n_runs")) is not None else "")
                     + (f", IQR/median {number(r.get('iqr_over_median')):.3f}" if number(r.get("iqr_over_median")) is not None else "")
                     + (" (noisy)" if (number(r.get("iqr_over_median")) or 0) >= NOISE_THRESHOLD else "")
                     + f"; run {r['run_id']}"]
            others = [c for c in self.candidates if c.eligible and c is not self.choice]
            if others:
                o = others[0].row
                margin = o["latency_p50_ms"] / r["latency_p50_ms"] - 1.0
                tie = f"; within {self.tie:.0%}, a near tie on this evidence" if margin <= self.tie else ""
                lines.append(f"runner-up {o['framework']}/{o['mode']}: p50 {o['latency_p50_ms']:.4g} ms "
                             f"({margin:+.1%} slower{tie}); {others[0].why}")
        for c in self.candidates:
            if not c.eligible:
                lines.append(f"excluded {c.row['framework']}/{c.row['mode']}: {c.why}")
        return lines


def _judge(row: dict[str, Any], max_drop: float) -> tuple[bool, str]:
    if row.get("status") != "ok":
        return False, f"status {row.get('status')}: {row.get('reason') or 'no reason recorded'}"
    if number(row.get("latency_p50_ms")) is None:
        return False, "no latency"
    if row.get("mode") == "fp32":
        return True, f"accuracy {row['accuracy']:.4f} (the fp32 baseline)" if number(row.get("accuracy")) is not None \
            else "the fp32 baseline (accuracy not scored)"
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


def recommend(rows: pd.DataFrame, max_drop: float = DEFAULT_MAX_DROP) -> list[Recommendation]:
    """One recommendation per (target, model, batch size) in `rows` (history rows; newest per case is used)."""
    latest = current_rows(rows)
    out = []
    if latest.empty:
        return out
    for (target, model, batch), group in latest.groupby(["target", "model", "batch_size"], sort=True):
        cands = []
        for row in group.to_dict("records"):
            ok, why = _judge(row, max_drop)
            cands.append(Candidate(row, ok, why))
        cands.sort(key=lambda c: (not c.eligible, number(c.row.get("latency_p50_ms")) or math.inf, c.label))
        choice = cands[0] if cands and cands[0].eligible else None
        out.append(Recommendation(str(target), str(model), int(batch), max_drop, choice, cands))
    return out


def for_target(db, target: str, max_drop: float = DEFAULT_MAX_DROP) -> list[Recommendation]:
    return recommend(db.results(target=target), max_drop)


def format_recommendations(recs: list[Recommendation]) -> str:
    if not recs:
        return "(no results for this target in the database)"
    blocks = []
    for rec in recs:
        head = f"{rec.model} (batch {rec.batch_size}) on {rec.target}, budget {rec.max_drop:g} accuracy points: {rec.answer}"
        blocks.append("\n".join([head] + [f"    {line}" for line in rec.evidence()]))
    return "\n".join(blocks)
