"""The power section of a result (`Power`): power, energy, throttling and temperature, from the
runner's power facts.

A figure that was not measured stays None and a text column says why: `power_source`
("none: ..." for the window), `idle_power_note` (the idle wait), `throttle_note` (which probe
could not tell). Energy is per call of the batch (`energy_mj_per_inf`, like the latencies)
and per sample (`energy_mj_per_sample`, like `throughput_ips`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Sequence

from harness.sections import UNSET, Section


@dataclass(frozen=True)
class Power(Section):
    """Power over the timed window, energy per call and per sample, throttling, temperatures."""

    NAME = "power"
    CORE = ("power_source", "idle_power_w", "power_mean_w", "energy_mj_per_inf", "throttled", "temp_before_c",
            "temp_after_c")
    EXTRA = ("power_coverage", "idle_power_note", "energy_mj_per_sample", "throttle_reasons", "throttle_note",
             "power_window_note")

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
            values["energy_mj_per_inf"] = 1000.0 * mean * power.get("window_s", result["duration_s"]) / n_runs
            values["energy_mj_per_sample"] = values["energy_mj_per_inf"] / batch
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
        """Several windows (rounds) of one case: the first round's power and temperatures;
        throttled in any round is throttled (combined_throttling), with every round's reasons."""
        first = rounds[0]
        if len(rounds) == 1 or not any(done.knows_throttling for done in rounds):
            return first
        reasons = list(dict.fromkeys(why for done in rounds for why in done.reasons))
        return replace(first, throttled=combined_throttling([done.throttled if done.knows_throttling else None
                                                             for done in rounds]),
                       throttle_reasons="; ".join(reasons) or None, knows_throttling=True,
                       throttling_from_rounds=not first.knows_throttling)


def power_trace(result: Mapping[str, Any]) -> list[tuple[float, float]]:
    """(seconds since the timed window opened, watts) of every power sample of the window."""
    return [(float(t), float(w)) for t, w in ((result.get("power") or {}).get("power_trace") or [])]


def combined_throttling(values: list[Optional[bool]]) -> Optional[bool]:
    """Several windows (rounds) of one case: throttled if any was, not throttled only if none
    was and every one could tell."""
    if any(v is True for v in values):
        return True
    return False if values and all(v is False for v in values) else None
