"""Which (framework, mode) to ship: per model (and batch size) on a target, the fastest by
p50 (or the best by the user's --objective: p99, size, energy) whose accuracy stays within the
budget of the fp32 baseline of the same framework (in the metric's direction) and that meets
the user's limits (harness/limits.py: p99, peak memory, size, energy), among the cases whose
timing can be trusted. When no mode meets them, the answer says so and names the closest.

The candidates are the current rows of the target (regress.current_rows: each mode as the
newest run that measured it left it; a mode that errored last night is not a candidate
today). accuracy_delta is the row's own comparison with fp32 in the same run, same framework
and target, as the report computes it. A case that ran throttled, or whose timed loop hit its
time cap before its minimums (`valid` false), is excluded with that reason; a noisy one
(IQR/median >= the noise threshold) stays a candidate, flagged in the answer and its evidence,
and a runner-up within the noise is called a near tie. `quantbench recommend`, the answer at
the end of a run and the dashboard all call `recommend()`, so they always agree.

Where the run raced its finalists (harness/race.py: the `race` column of their rows), the race's
leader among the finalists eligible now is the choice and its verdict the headline ("ship X: 1.32x
faster than Y [...]" or "a tie: X or Y, within N%"; a race of p99s when p99 is the objective);
without one, the headline says the p50s come from separate processes and a single-round speedup
has no between-process interval. The runner-up's margin is in the objective's own terms
(harness/history/margins.py: "+12% p50", "the choice's p99 1.40x lower", "the choice 0.31 MB
smaller: sizes are exact, no race needed", "the choice 0.012 mJ less per inference").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

import pandas as pd

from harness.history.candidate import (DEFAULT_MAX_DROP, Candidate, as_limits, candidate, group_limits, rank,  # noqa: F401 (re-exported)
                                       untrusted_timing)
from harness.history.margins import BETTER, NOT_RACED, Margin, figure, margin  # noqa: F401 (NOT_RACED re-exported)
from harness.history.regress import current_rows
from harness.limits import Limits
from harness.metrics import row_higher_is_better
from harness.race import Race, describe
from harness.rounds import level_text
from harness.stats import NOISE_THRESHOLD
from harness.values import number


ONE_PAIR = "one process pair: no between-process interval"


@dataclass(frozen=True)
class Recommendation:
    target: str
    model: str
    batch_size: int
    max_drop: float  # points
    choice: Optional[Candidate]
    candidates: list[Candidate] = field(default_factory=list)  # fastest first, ineligible last
    tie: float = 0.10  # a runner-up slower by no more than this (relative) is called a near tie
    noise: float = NOISE_THRESHOLD  # IQR/median at or above which a candidate's timing is flagged noisy
    limits: Limits = field(default_factory=Limits)  # the limits applied (max_drop is their accuracy budget)
    race: Optional[Race] = None  # the race of the eligible finalists (harness/race.py) that decided the choice

    @property
    def closest(self) -> Optional[Candidate]:
        """With no choice: the mode nearest to meeting the limits (within the accuracy budget, its
        timing trusted, the smallest relative excess over the limits it breaks), or None. A mode
        with no reading for a limited figure is never the closest: how far it is cannot be told."""
        over = [c for c in self.candidates if c.broke and math.isfinite(c.excess)]
        return min(over, key=lambda c: (c.excess, len(c.broke), rank(c, self.limits))) if over else None

    def _margin(self, runner_up: dict[str, Any]) -> Optional[Margin]:
        """How the choice beats `runner_up` on the objective (harness/history/margins.py)."""
        return margin(self.choice.row, runner_up, self.limits.goal, self.tie, self.noise)

    @property
    def answer(self) -> str:
        """'framework/mode' or 'none' (what the dashboard marks and tests compare)."""
        return f"{self.choice.row['framework']}/{self.choice.row['mode']}" if self.choice else "none"

    def headline(self) -> str:
        """The answer in one line: 'digits-cnn on local: ship tflite static-int8 (litert-torch): 1.52x
        faster than tflite fp32, -0.20 pts, 0.30 of the size; runner-up ...'."""
        batch = "" if self.batch_size == 1 else f" (batch {self.batch_size})"
        where = f"{self.model}{batch} on {self.target}"
        if self.choice is None:
            return f"{where}: nothing to ship: {self.evidence()[0]}"
        r = self.choice.row
        others = [c for c in self.candidates if c.eligible and c is not self.choice]
        if self.race is not None:  # the finalists raced: its verdict is the answer
            names = {c.row["case_id"]: label(c.row) for c in self.candidates}
            what = describe(self.race, names) + ("" if r["mode"] == "fp32" else f"; {label(r)}: {_gains(r)}")
        else:
            goal = self.limits.goal
            best = "" if goal == "p50" else f"{figure(r, goal)}, "  # what it minimised, then its gains
            if r["mode"] == "fp32":
                what = (f"ship {label(r)}: {best}no quantized mode within {self.max_drop:g} accuracy points "
                        f"{BETTER[goal]}")
            else:
                what = f"ship {label(r)}: {best}{_gains(r)}"
            what += _timing_flags(r, self.noise)
            if others:
                o, m = others[0].row, self._margin(others[0].row)
                own = (f": {_gains(o)}" if o["mode"] != "fp32" else "") if goal == "p50" else f": {figure(o, goal)}"
                what += f"; runner-up {label(o)}{own}" + (
                    f" ({m.text}{', ' + m.near if m.near else ''}; {m.basis})" if m else "")
        excluded = [c for c in self.candidates if not c.eligible and c.untrusted]
        if excluded:
            what += f"; {len(excluded)} excluded for untrusted timing ({', '.join(label(c.row) for c in excluded)})"
        return f"{where}: {what}"

    def evidence(self) -> list[str]:
        """Lines that justify the answer: the choice, the runner-up, what was excluded and why."""
        if self.choice is None:
            untrusted = [c for c in self.candidates if c.untrusted]
            closest = self.closest
            unread = [c for c in self.candidates if c.broke and not math.isfinite(c.excess)]
            if closest is not None:
                lines = [f"no mode meets: {self.limits.describe()}; closest: {_slashed(closest.row)} "
                         f"({closest.why.removeprefix('over the limits: ')})"]
            elif unread:
                lines = [f"no mode meets: {self.limits.describe()}; none within the accuracy budget has the readings to "
                         f"judge ({unread[0].why.removeprefix('over the limits: ')})"]
            elif untrusted:
                lines = [f"no mode of {self.model} on {self.target} has a trusted timing within {self.max_drop:g} "
                         f"accuracy points of fp32 ({len(untrusted)} excluded for their timing; see below)"]
            else:
                lines = [f"no mode of {self.model} is within {self.max_drop:g} accuracy points of fp32 on {self.target}"]
        else:
            r = self.choice.row
            iqr = number(r.get("iqr_over_median"))
            goal = self.limits.goal
            lines = [f"{self.answer} ({r.get('recipe')}): " + ("" if goal == "p50" else f"{figure(r, goal)}, ")
                     + f"p50 {r['latency_p50_ms']:.4g} ms"
                     + (f", {r['speedup']:.2f}x vs {r['framework']} fp32" if number(r.get("speedup")) else "")
                     + f"; {self.choice.why}"
                     + (f"; size {r['size_ratio']:.2f}x fp32" if number(r.get("size_ratio")) else "")
                     + (f"; {int(number(r.get('n_runs')))} timed runs" if number(r.get("n_runs")) is not None else "")
                     + (f", IQR/median {iqr:.3f}" if iqr is not None else ", IQR/median unknown")
                     + (f" (noisy: >= {self.noise:g})" if iqr is not None and iqr >= self.noise else "")
                     + f"; run {r['run_id']}"]
            others = [c for c in self.candidates if c.eligible and c is not self.choice]
            if self.race is not None:
                lines.append(race_evidence(self.race, {c.row["case_id"]: _slashed(c.row) for c in self.candidates}))
            elif others:
                o, m = others[0].row, self._margin(others[0].row)
                tie = f"; {m.near} on this evidence" if m and m.near else ""
                if self.limits.goal == "p50" and m is not None:
                    how = f"p50 {o['latency_p50_ms']:.4g} ms ({m.relative:+.1%} slower{tie}; {m.basis})"
                else:
                    how = figure(o, self.limits.goal) + (f" ({m.text}{tie}; {m.basis})" if m else "")
                lines.append(f"runner-up {_slashed(o)}: {how}; {others[0].why}")
        for c in self.candidates:
            if not c.eligible:
                lines.append(f"excluded {_slashed(c.row)}: {c.why}")
        return lines


def race_evidence(race: Race, names: dict[str, str]) -> str:
    """The race in the evidence: its verdict, then every finalist's figure (p50 or p99) per round."""
    per = "; ".join(f"{names.get(c, c)}: " + " ".join(f"{row[i]:.4g}" for row in race.per_round_ms) + " ms"
                    for i, c in enumerate(race.finalists))
    return (f"race of the finalists ({race.stopped}, {race.seconds:.1f} s of {race.cap_s:g} s, run {race.run_id}): "
            f"{describe(race, names)}; {race.statistic} per round: {per}")


def _raced(group: pd.DataFrame, cands: list[Candidate], limits: Limits) -> Optional[Race]:
    """The race stored with the group's rows (their `race` column) among the finalists eligible
    now, when it covers the best eligible candidate and raced the objective's figure (a p50 race
    for p50, a p99 race for p99; size and energy are not raced): rows of the race's own run, two
    finalists or more."""
    if "race" not in group or not cands or not cands[0].eligible:
        return None
    eligible = {c.row["case_id"]: c.row for c in cands if c.eligible}
    for text in group["race"].dropna().unique():
        race = Race.from_json(text)
        if race is None or race.statistic != limits.goal:
            continue
        here = [c for c in race.finalists if c in eligible and eligible[c].get("run_id") == race.run_id]
        if len(here) >= 2 and cands[0].row["case_id"] in here:
            return race.among(here)
    return None


def recipe_slug(row: dict[str, Any]) -> str:
    """The recipe's short name as in the case id (e.g. 'litert-torch', 'qdq'), or ''."""
    case_id, batch = str(row.get("case_id") or ""), number(row.get("batch_size"))
    head = f"{row.get('model')}-{row.get('framework')}-{row.get('mode')}"
    tail = f"-b{int(batch)}" if batch is not None else ""
    if case_id.startswith(head) and tail and case_id.endswith(tail):
        return case_id[len(head):len(case_id) - len(tail)].lstrip("-")
    return ""


def _slashed(row: dict[str, Any]) -> str:
    """'torch/dynamic-int8 (torchao)': the evidence's name of a candidate, recipes apart."""
    slug = recipe_slug(row)
    return f"{row['framework']}/{row['mode']}" + (f" ({slug})" if slug else "")


def label(row: dict[str, Any]) -> str:
    """'tflite static-int8 (litert-torch)'."""
    slug = recipe_slug(row)
    return f"{row['framework']} {row['mode']}" + (f" ({slug})" if slug else "")


def _gains(row: dict[str, Any]) -> str:
    """'1.52x faster than tflite fp32 (one process pair: no between-process interval), -0.20 pts, 0.30
    of the size', or over paired rounds '1.55x [1.50-1.61 @75%] faster than ...', from the row's own
    comparisons."""
    parts = []
    speedup = number(row.get("speedup"))
    if speedup is not None and speedup > 0:
        low, high, level = (number(row.get(c)) for c in ("speedup_ci_low", "speedup_ci_high", "speedup_ci_level"))
        if low is not None and high is not None:  # over paired rounds: the interval at its true level
            at = f" @{level_text(level)}" if level is not None else ""
            parts.append(f"{speedup:.2f}x [{low:.2f}-{high:.2f}{at}] faster than {row['framework']} fp32" if speedup >= 1
                         else f"{1 / speedup:.2f}x [{1 / high:.2f}-{1 / low:.2f}{at}] slower than {row['framework']} fp32")
        else:
            parts.append((f"{speedup:.2f}x faster than {row['framework']} fp32" if speedup >= 1
                          else f"{1 / speedup:.2f}x slower than {row['framework']} fp32") + f" ({ONE_PAIR})")
    delta = number(row.get("accuracy_delta"))
    if delta is not None:
        parts.append(f"{100 * delta:+.2f} pts" + ("" if row_higher_is_better(row) else " (lower is better)"))
    size = number(row.get("size_ratio"))
    if size is not None:
        parts.append(f"{size:.2f} of the size")
    return ", ".join(parts) or "no comparison with fp32"


def _timing_flags(row: dict[str, Any], noise: float) -> str:
    iqr = number(row.get("iqr_over_median"))
    if iqr is None:
        return " [timing noise unknown: no IQR/median]"
    return f" [timing noisy: IQR/median {iqr:.2f}]" if iqr >= noise else ""


def recommend(rows: pd.DataFrame, limits: Union[Limits, float, None] = None, noise: float = NOISE_THRESHOLD,
              suite_limits: Optional[Mapping[str, Limits]] = None) -> list[Recommendation]:
    """One recommendation per (target, model, batch size) in `rows` (history rows; newest per case is used).
    `limits`: the command line's (Limits, or an accuracy budget in points; None: the defaults), over
    each suite's own in `suite_limits` (suite name -> Limits). `noise` is the IQR/median at which a
    candidate's timing is flagged (the gates' noise threshold)."""
    flags, declared = as_limits(limits), dict(suite_limits or {})
    latest = current_rows(rows)
    out = []
    if latest.empty:
        return out
    for (target, model, batch), group in latest.groupby(["target", "model", "batch_size"], sort=True):
        applied = group_limits(group["suite"] if "suite" in group else (), flags, declared)
        cands = [candidate(row, applied) for row in group.to_dict("records")]
        cands.sort(key=lambda c: (not c.eligible, *rank(c, applied)))
        race = _raced(group, cands, applied)
        if race is not None:  # the race's leader first: paired rounds decide, not separately timed p50s
            leader = race.verdict().leader
            cands.sort(key=lambda c: (not c.eligible, c.row["case_id"] != leader))  # stable: the rest keep their rank
        choice = cands[0] if cands and cands[0].eligible else None
        out.append(Recommendation(str(target), str(model), int(batch), applied.accuracy_drop, choice, cands, noise=noise,
                                  limits=applied, race=race))
    return out


def for_target(db, target: str, limits: Union[Limits, float, None] = None, noise: float = NOISE_THRESHOLD) -> list[Recommendation]:
    return recommend(db.results(target=target), limits, noise)


def limits_suffix(limits: Limits) -> str:
    """', p99 <= 3 ms, size <= 0.50x fp32, minimising size': the limits past the accuracy budget
    and a non-default objective, for the lines that name the budget."""
    rest = limits.describe(accuracy=False)
    return (f", {rest}" if rest else "") + (f", minimising {limits.goal}" if limits.goal != "p50" else "")


def format_recommendations(recs: list[Recommendation]) -> str:
    if not recs:
        return "(no results for this target in the database)"
    blocks = []
    for rec in recs:
        head = (f"{rec.model} (batch {rec.batch_size}) on {rec.target}, budget {rec.max_drop:g} accuracy points"
                f"{limits_suffix(rec.limits)}: {rec.answer}")
        blocks.append("\n".join([head] + [f"    {line}" for line in rec.evidence()] + [f"    answer: {rec.headline()}"]))
    return "\n".join(blocks)
