"""Which mode to ship on a whole fleet, and the device-by-mode view of it.

Per (model, batch): the (framework, mode) that is within the accuracy budget on every device
and is each device's own fastest choice ("fastest on every device"); when no mode is, the best
trade-off: among the modes eligible on every device, the one whose p50 is closest to each
device's own best (smallest geometric mean of p50 / that device's best p50, then the smallest
worst case). Devices are the targets of the rows (a pool counts as one device: its boards are
identical). The per-device answers are `recommend.recommend`'s, so both always agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd

from harness.history.recommend import Candidate, Recommendation, limits_suffix
from harness.history.regress import current_rows
from harness.values import number


def mode_key(row: dict[str, Any]) -> tuple[str, str]:
    return (str(row["framework"]), str(row["mode"]))


@dataclass(frozen=True)
class FleetChoice:
    """One (framework, mode) across the devices: its fastest eligible row on each."""

    key: tuple[str, str]
    rows: dict[str, dict[str, Any]]  # device -> row
    slowdown: dict[str, float]  # device -> p50 / the device's own best p50 (1.0 = it is the device's choice)

    @property
    def label(self) -> str:
        return f"{self.key[0]}/{self.key[1]}"

    @property
    def geomean(self) -> float:
        return math.exp(sum(math.log(s) for s in self.slowdown.values()) / len(self.slowdown))

    @property
    def everywhere_fastest(self) -> bool:
        return all(s <= 1.0 + 1e-12 for s in self.slowdown.values())


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

    @property
    def answer(self) -> str:
        return self.choice.label if self.choice else "none"

    @property
    def kind(self) -> str:
        if self.choice is None:
            return "none"
        return "fastest on every device" if self.choice.everywhere_fastest else "best trade-off"

    @property
    def _limits(self) -> str:
        """', p99 <= 3 ms, ...': the devices' limits past the accuracy budget (one suite: the same on each)."""
        return limits_suffix(self.per_device[self.devices[0]].limits) if self.devices else ""

    def headline(self) -> str:
        """The fleet's answer in one line, beside each device's `Recommendation.headline`."""
        batch = "" if self.batch_size == 1 else f" (batch {self.batch_size})"
        where = f"{self.model}{batch} on the fleet ({', '.join(self.devices)})"
        if self.choice is None:
            return f"{where}: no mode is within {self.max_drop:g} accuracy points{self._limits} on every device"
        worst = max(self.choice.slowdown.items(), key=lambda kv: kv[1])
        tail = "" if self.choice.everywhere_fastest else f"; at most {worst[1]:.2f}x its own fastest (on {worst[0]})"
        return f"{where}: ship {self.choice.label} ({self.kind}){tail}"

    def evidence(self) -> list[str]:
        if self.choice is None:
            lines = [f"no (framework, mode) of {self.model} is within {self.max_drop:g} accuracy points of fp32{self._limits} on every "
                     f"device ({', '.join(self.devices)})"]
            for label, where in sorted(self.missing.items()):
                lines.append(f"{label}: not eligible on {', '.join(where)}")
            return lines
        c = self.choice
        lines = []
        for device in self.devices:
            r, own = c.rows[device], self.per_device[device]
            speedup = number(r.get("speedup"))
            tail = ("its own fastest" if c.slowdown[device] <= 1.0 + 1e-12
                    else f"{c.slowdown[device]:.2f}x its own fastest, {own.answer} ({number(own.choice.row['latency_p50_ms']):.4g} ms)")
            lines.append(f"{device}: p50 {number(r['latency_p50_ms']):.4g} ms" + (f", {speedup:.2f}x vs fp32" if speedup else "")
                         + f"; {tail}")
        for other in self.runners_up[:2]:
            lines.append(f"runner-up {other.label}: geometric mean {other.geomean:.2f}x each device's fastest "
                         f"(worst {max(other.slowdown.values()):.2f}x)")
        for label, where in sorted(self.missing.items()):
            lines.append(f"not a fleet candidate: {label} (not within budget on {', '.join(where)})")
        return lines


def _eligible_by_key(rec: Recommendation) -> dict[tuple[str, str], Candidate]:
    """The fastest eligible candidate of each (framework, mode) on one device (candidates are
    sorted fastest first, eligible first)."""
    found: dict[tuple[str, str], Candidate] = {}
    for cand in rec.candidates:
        if cand.eligible:
            found.setdefault(mode_key(cand.row), cand)
    return found


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
        eligible = {d: _eligible_by_key(per_device[d]) for d in devices}
        keys = sorted(set().union(*[set(e) for e in eligible.values()]))
        missing = {f"{k[0]}/{k[1]}": [d for d in devices if k not in eligible[d]] for k in keys}
        choices = []
        for key in keys:
            if any(key not in eligible[d] for d in devices):
                continue
            rows = {d: eligible[d][key].row for d in devices}
            slowdown = {d: number(rows[d]["latency_p50_ms"]) / number(per_device[d].choice.row["latency_p50_ms"]) for d in devices}
            choices.append(FleetChoice(key, rows, slowdown))
        choices.sort(key=lambda c: (not c.everywhere_fastest, round(c.geomean, 9), max(c.slowdown.values()), c.label))
        out.append(FleetRecommendation(model, batch, max_drop, devices, per_device, choices[0] if choices else None,
                                       choices[1:], {k: v for k, v in missing.items() if v}))
    return out


def format_fleet(recs: list[FleetRecommendation]) -> str:
    blocks = []
    for rec in recs:
        head = (f"{rec.model} (batch {rec.batch_size}) on the fleet ({', '.join(rec.devices)}), budget {rec.max_drop:g} "
                f"accuracy points: {rec.answer}" + (f" ({rec.kind})" if rec.choice else ""))
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
