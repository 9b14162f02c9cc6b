"""Row columns about power, energy, throttling and temperature, from the runner's power facts.

A figure that was not measured stays None and a text column says why: `power_source`
("none: ..." for the window), `idle_power_note` (the idle wait), `throttle_note` (which probe
could not tell). Energy is per call of the batch (`energy_mj_per_inf`, like the latencies)
and per sample (`energy_mj_per_sample`, like `throughput_ips`).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional


def fill_power_columns(row: dict[str, Any], result: Mapping[str, Any]) -> None:
    power = result.get("power") or {}
    if power.get("power_source"):
        row["power_source"] = power["power_source"]
    row["idle_power_w"] = power.get("idle_power_w")
    row["power_mean_w"] = power.get("power_mean_w")
    row["power_coverage"] = power.get("power_coverage")
    if power.get("idle_power_note"):
        row["idle_power_note"] = power["idle_power_note"]
    n_runs, batch = result.get("n_runs") or 0, int(result.get("batch_size") or 1)
    if row["power_mean_w"] is not None and n_runs:
        # mean power over the timed window x the window / timed calls (one inference = one call of the batch)
        row["energy_mj_per_inf"] = 1000.0 * row["power_mean_w"] * power.get("window_s", result["duration_s"]) / n_runs
        row["energy_mj_per_sample"] = row["energy_mj_per_inf"] / batch
    if "throttled" in power:
        row["throttled"] = None if power["throttled"] is None else bool(power["throttled"])
        row["throttle_reasons"] = "; ".join(power.get("throttle_reasons") or []) or None
        row["throttle_note"] = "; ".join(power.get("throttle_unknown") or []) or None
    for when in ("before", "after"):  # the hottest reading of any probe (thermal zones, vcgencmd, ...)
        temps = [t for snap in (power.get(f"probes_{when}") or {}).values() for t in (snap.get("temps_c") or {}).values()
                 if t is not None]
        row[f"temp_{when}_c"] = max(temps) if temps else None


def power_trace(result: Mapping[str, Any]) -> list[tuple[float, float]]:
    """(seconds since the timed window opened, watts) of every power sample of the window."""
    return [(float(t), float(w)) for t, w in ((result.get("power") or {}).get("power_trace") or [])]


def combined_throttling(values: list[Optional[bool]]) -> Optional[bool]:
    """Several windows (rounds) of one case: throttled if any was, not throttled only if none
    was and every one could tell."""
    if any(v is True for v in values):
        return True
    return False if values and all(v is False for v in values) else None
