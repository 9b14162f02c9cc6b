"""The power section of a result (`Power`): power, energy, throttling and temperature, from the
runner's power facts.

A figure that was not measured stays None and a text column says why: `power_source`
("none: ..." for the window), `idle_power_note` (the idle wait), `throttle_note` (which probe
could not tell). Energy is per call of the batch (`energy_mj_per_inf`, like the latencies)
and per sample (`energy_mj_per_sample`, like `throughput_ips`).

The board's power includes whatever else runs on it. The runner reads idle power just before
the window (`idle_power_w`), so `energy_above_idle_mj_per_inf` = (mean window power - idle
power) x window / calls is the energy the inferences added, other processes' steady load taken
out. Over rounds (several windows) both energies are the median of the rounds' figures, and
every round's figure is kept (`energy_round_mj`, `energy_above_idle_round_mj`): the regression
gate judges energy against the spread of these readings, and not at all from one window.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from harness.sections import UNSET, Section


@dataclass(frozen=True)
class Power(Section):
    """Power over the timed window, energy per call and per sample, throttling, temperatures."""

    NAME = "power"
    CORE = ("power_source", "idle_power_w", "power_mean_w", "energy_mj_per_inf", "throttled", "temp_before_c",
            "temp_after_c")
    EXTRA = ("power_coverage", "idle_power_note", "energy_mj_per_sample", "throttle_reasons", "throttle_note",
             "power_window_note", "energy_above_idle_mj_per_inf", "energy_round_mj", "energy_above_idle_round_mj")

    power_source: Any = None  # what measured it, or "none: why"
    idle_power_w: Any = None
    power_mean_w: Any = None
    energy_mj_per_inf: Any = None
    throttled: Any = None
    temp_before_c: Any = None
    temp_after_c: Any = None
    power_coverage: Any = UNSET
    idle_power_note: Any = UNSET
    energy_mj_per_sample: Any = UNSET
    throttle_reasons: Any = UNSET
    throttle_note: Any = UNSET
    power_window_note: Any = UNSET  # the timed loop was extended for the energy figure
    energy_above_idle_mj_per_inf: Any = UNSET  # (window power - idle power) x window / calls
    energy_round_mj: Any = UNSET  # energy_mj_per_inf of each round (window), space-separated
    energy_above_idle_round_mj: Any = UNSET  # energy_above_idle_mj_per_inf of each round
    reasons: tuple = field(default=(), repr=False)  # this window's throttle reasons, for merging rounds
    knows_throttling: bool = field(default=False, repr=False)  # the probes said whether it throttled
    throttling_from_rounds: bool = field(default=False, repr=False)  # only a later round's probes did

    @classmethod
    def from_result(cls, result: Mapping[str, Any], source: Optional[str] = None) -> "Power":
        """The runner's power facts; `source`: the power_source when the runner names none."""
        power = result.get("power") or {}
        mean = power.get("power_mean_w")
        values: dict[str, Any] = dict(power_source=power.get("power_source") or source,
                                      idle_power_w=power.get("idle_power_w"), power_mean_w=mean,
                                      power_coverage=power.get("power_coverage"))
        if power.get("idle_power_note"):
            values["idle_power_note"] = power["idle_power_note"]
        n_runs, batch = result.get("n_runs") or 0, int(result.get("batch_size") or 1)
        if mean is not None and n_runs:
            # mean power over the timed window x the window / timed calls (one inference = one call of the batch)
            window_s = power.get("window_s", result["duration_s"])
            values["energy_mj_per_inf"] = 1000.0 * mean * window_s / n_runs
            values["energy_mj_per_sample"] = values["energy_mj_per_inf"] / batch
            values["energy_round_mj"] = f"{values['energy_mj_per_inf']:.6g}"
            idle = power.get("idle_power_w")
            if idle is not None:  # what the inferences added to the board's power just before the window
                values["energy_above_idle_mj_per_inf"] = 1000.0 * (mean - idle) * window_s / n_runs
                values["energy_above_idle_round_mj"] = f"{values['energy_above_idle_mj_per_inf']:.6g}"
        if "throttled" in power:
            values.update(throttled=None if power["throttled"] is None else bool(power["throttled"]),
                          throttle_reasons="; ".join(power.get("throttle_reasons") or []) or None,
                          throttle_note="; ".join(power.get("throttle_unknown") or []) or None,
                          knows_throttling=True)
        for when in ("before", "after"):  # the hottest reading of any probe (thermal zones, vcgencmd, ...)
            temps = [t for snap in (power.get(f"probes_{when}") or {}).values()
                     for t in (snap.get("temps_c") or {}).values() if t is not None]
            values[f"temp_{when}_c"] = max(temps) if temps else None
        if power.get("window_extended"):
            values["power_window_note"] = power["window_extended"]
        return cls(**values, reasons=tuple(power.get("throttle_reasons") or ()))

    @classmethod
    def merge(cls, rounds: Sequence["Power"]) -> "Power":
        """Several windows (rounds) of one case: the first round's power and temperatures, the
        median energies with every round's figure (merge_energy); throttled in any round is
        throttled (combined_throttling), with every round's reasons."""
        first = merge_energy(rounds)
        if len(rounds) == 1 or not any(done.knows_throttling for done in rounds):
            return first
        reasons = list(dict.fromkeys(why for done in rounds for why in done.reasons))
        return replace(first, throttled=combined_throttling([done.throttled if done.knows_throttling else None
                                                             for done in rounds]),
                       throttle_reasons="; ".join(reasons) or None, knows_throttling=True,
                       throttling_from_rounds=not first.knows_throttling)


def merge_energy(rounds: Sequence[Power]) -> Power:
    """The first round's section with each energy as the median over the rounds that measured it
    and every such round's figure listed (a figure only some rounds have is not a spread)."""
    first = rounds[0]
    if len(rounds) == 1:
        return first
    changes: dict[str, Any] = {}
    for column, listed in (("energy_mj_per_inf", "energy_round_mj"),
                           ("energy_above_idle_mj_per_inf", "energy_above_idle_round_mj")):
        figures = [getattr(done, column) for done in rounds]
        if any(f is UNSET or f is None for f in figures):
            continue
        changes[column] = float(np.median(figures))
        changes[listed] = " ".join(f"{f:.6g}" for f in figures)
    if "energy_mj_per_inf" in changes:  # the same rounds, per sample
        changes["energy_mj_per_sample"] = float(np.median([done.energy_mj_per_sample for done in rounds]))
    return replace(first, **changes)


def power_trace(result: Mapping[str, Any]) -> list[tuple[float, float]]:
    """(seconds since the timed window opened, watts) of every power sample of the window."""
    return [(float(t), float(w)) for t, w in ((result.get("power") or {}).get("power_trace") or [])]


def combined_throttling(values: list[Optional[bool]]) -> Optional[bool]:
    """Several windows (rounds) of one case: throttled if any was, not throttled only if none
    was and every one could tell."""
    if any(v is True for v in values):
        return True
    return False if values and all(v is False for v in values) else None
