"""Which mode to ship on a whole fleet, and the device-by-mode view of it.

Per (model, batch), by the objective the devices' answers minimise (p50 by default, or p99,
size, energy: harness/limits.py) and among the modes the same candidate rule keeps on each
device (accuracy budget, trusted timing, every limit): the (framework, mode) that is each
device's own choice ("fastest on every device", "smallest on every device", ...); when no mode
is, the best trade-off: among the modes eligible on every device, the one whose figure of the
objective is closest to each device's own choice's (smallest geometric mean of its figure /
that choice's, then the smallest worst case). Devices are the targets of the rows (a pool
counts as one device: its boards are identical). The per-device answers are
`recommend.recommend`'s (a race's leader included), so both always agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd

from harness.history.margins import figure
from harness.history.recommend import Candidate, Recommendation, limits_suffix
from harness.history.regress import current_rows
from harness.limits import Limits
from harness.values import number

# objective -> the fleet's words for a mode that is every device's own choice, and for that choice
BEST = {"p50": ("fastest on every device", "fastest"), "p99": ("lowest p99 on every device", "lowest p99"),
        "size": ("smallest on every device", "smallest"), "energy": ("least energy on every device", "least energy")}


def mode_key(row: dict[str, Any]) -> tuple[str, str]:
    return (str(row["framework"]), str(row["mode"]))


@dataclass(frozen=True)
class FleetChoice:
    """One (framework, mode) across the devices: its best eligible row on each (by the objective)."""

    key: tuple[str, str]
    rows: dict[str, dict[str, Any]]  # device -> row
    # device -> its figure of the objective / the device's own choice's (1.0: as good as the device's choice)
    slowdown: dict[str, float]
    chosen: frozenset = frozenset()  # the devices whose own choice it is

    @property
    def label(self) -> str:
        return f"{self.key[0]}/{self.key[1]}"

    @property
    def geomean(self) -> float:
        return math.exp(sum(math.log(s) for s in self.slowdown.values()) / len(self.slowdown))

    @property
    def everywhere_best(self) -> bool:
        """Each device's own choice (a race's leader where one decided it)."""
        return self.chosen == frozenset(self.rows)


@dataclass(frozen=True)
class FleetRecommendation:
    model: str
    batch_size: int
    max_drop: float
    devices: list[str]
    per_device: dict[str, Recommendation]
    choice: Optional[FleetChoice]
    runners_up: list[FleetChoice] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)  # mode label -> devices where it is not eligible
    limits: Limits = field(default_factory=Limits)  # the limits applied (the first device's; one suite: the same on each)

    @property
    def answer(self) -> str:
        return self.choice.label if self.choice else "none"

    @property
    def kind(self) -> str:
        if self.choice is None:
            return "none"
        return BEST[self.limits.goal][0] if self.choice.everywhere_best else "best trade-off"

    @property
    def _limits(self) -> str:
        """', p99 <= 3 ms, ..., minimising size': the devices' limits past the accuracy budget."""
        return limits_suffix(self.limits)

    def headline(self) -> str:
        """The fleet's answer in one line, beside each device's `Recommendation.headline`."""
        batch = "" if self.batch_size == 1 else f" (batch {self.batch_size})"
        where = f"{self.model}{batch} on the fleet ({', '.join(self.devices)})"
        if self.choice is None:
            return f"{where}: no mode is within {self.max_drop:g} accuracy points{self._limits} on every device"
        worst = max(self.choice.slowdown.items(), key=lambda kv: kv[1])
        tail = ("" if self.choice.everywhere_best
                else f"; at most {worst[1]:.2f}x its own {BEST[self.limits.goal][1]} (on {worst[0]}, by {self._figure_name})")
        return f"{where}: ship {self.choice.label} ({self.kind}){tail}"

    @property
    def _figure_name(self) -> str:
        return {"p50": "p50", "p99": "p99", "size": "size", "energy": "energy per inference"}[self.limits.goal]

    def evidence(self) -> list[str]:
        if self.choice is None:
            lines = [f"no (framework, mode) of {self.model} is within {self.max_drop:g} accuracy points of fp32{self._limits} on every "
                     f"device ({', '.join(self.devices)})"]
            for label, where in sorted(self.missing.items()):
                lines.append(f"{label}: not eligible on {', '.join(where)}")
            return lines
        c, goal = self.choice, self.limits.goal
        best = BEST[goal][1]
        lines = []
        for device in self.devices:
            r, own = c.rows[device], self.per_device[device]
            speedup = number(r.get("speedup"))
            tail = (f"its own {best}" if device in c.chosen
                    else f"{c.slowdown[device]:.2f}x its own {best}, {own.answer} ({figure(own.choice.row, goal)})")
            lines.append(f"{device}: {figure(r, goal)}" + (f", p50 {number(r['latency_p50_ms']):.4g} ms" if goal != "p50" else "")
                         + (f", {speedup:.2f}x vs fp32" if speedup else "") + f"; {tail}")
        for other in self.runners_up[:2]:
            lines.append(f"runner-up {other.label}: {self._figure_name} geometric mean {other.geomean:.2f}x each device's "
                         f"{best} (worst {max(other.slowdown.values()):.2f}x)")
        for label, where in sorted(self.missing.items()):
            lines.append(f"not a fleet candidate: {label} (not within budget on {', '.join(where)})")
        return lines


def _eligible_by_key(rec: Recommendation) -> dict[tuple[str, str], Candidate]:
    """The best eligible candidate of each (framework, mode) on one device (candidates are sorted
    best first by the objective, a race's leader first, eligible first)."""
    found: dict[tuple[str, str], Candidate] = {}
    for cand in rec.candidates:
        if cand.eligible:
            found.setdefault(mode_key(cand.row), cand)
    return found


def _relative(row: dict[str, Any], rec: Recommendation) -> float:
    """A row's figure of the device's objective / the device's own choice's (both eligible: both have it)."""
    column = rec.limits.column
    mine, best = number(row.get(column)), number(rec.choice.row.get(column))
    return mine / best if best else (1.0 if mine == best else math.inf)


def recommend_fleet(recs: list[Recommendation]) -> list[FleetRecommendation]:
    """One fleet answer per (model, batch) measured on at least two devices."""
    by_model: dict[tuple[str, int], dict[str, Recommendation]] = {}
    for rec in recs:
        by_model.setdefault((rec.model, rec.batch_size), {})[rec.target] = rec
    out = []
    for (model, batch), per_device in sorted(by_model.items()):
        if len(per_device) < 2:
            continue
        devices = sorted(per_device)
        max_drop = next(iter(per_device.values())).max_drop
        limits = per_device[devices[0]].limits
        eligible = {d: _eligible_by_key(per_device[d]) for d in devices}
        keys = sorted(set().union(*[set(e) for e in eligible.values()]))
        missing = {f"{k[0]}/{k[1]}": [d for d in devices if k not in eligible[d]] for k in keys}
        choices = []
        for key in keys:
            if any(key not in eligible[d] for d in devices):
                continue
            rows = {d: eligible[d][key].row for d in devices}
            slowdown = {d: _relative(rows[d], per_device[d]) for d in devices}
            chosen = frozenset(d for d in devices if mode_key(per_device[d].choice.row) == key)
            choices.append(FleetChoice(key, rows, slowdown, chosen))
        choices.sort(key=lambda c: (not c.everywhere_best, round(c.geomean, 9), max(c.slowdown.values()), c.label))
        out.append(FleetRecommendation(model, batch, max_drop, devices, per_device, choices[0] if choices else None,
                                       choices[1:], {k: v for k, v in missing.items() if v}, limits))
    return out


def format_fleet(recs: list[FleetRecommendation]) -> str:
    blocks = []
    for rec in recs:
        head = (f"{rec.model} (batch {rec.batch_size}) on the fleet ({', '.join(rec.devices)}), budget {rec.max_drop:g} "
                f"accuracy points{limits_suffix(rec.limits)}: {rec.answer}" + (f" ({rec.kind})" if rec.choice else ""))
        blocks.append("\n".join([head] + [f"    {line}" for line in rec.evidence()]))
    return "\n".join(blocks)


def heatmap_cells(rows: pd.DataFrame) -> dict[tuple[str, int], pd.DataFrame]:
    """(model, batch) -> one row per (device, framework, mode) with the current speedup and
    accuracy delta: the data of the dashboard's device-by-mode heatmap (fastest recipe of a
    mode where there are several)."""
    latest = current_rows(rows)
    out = {}
    if latest.empty:
        return out
    ok = latest[(latest["status"] == "ok") & latest["latency_p50_ms"].notna()]
    for (model, batch), group in ok.groupby(["model", "batch_size"], sort=True):
        best = group.sort_values("latency_p50_ms").drop_duplicates(["target", "framework", "mode"], keep="first")
        out[(str(model), int(batch))] = best[["target", "framework", "mode", "recipe", "speedup", "accuracy_delta",
                                              "latency_p50_ms", "within_budget"]].reset_index(drop=True)
    return out
