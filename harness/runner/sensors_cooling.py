"""Throttling seen by the Linux thermal framework (standard library only).

A cpufreq or devfreq cooling device (sys/class/thermal/cooling_device*/type such as
"cpufreq-cpu0", "thermal-cpufreq-0", "devfreq-gpu") caps that clock while its cur_state is
above 0, so a non-zero state at either end of the window means the case ran throttled.
Fans ("pwm-fan") cool without slowing anything and are not counted.

cur_state is read at the window's ends only; a device that capped the clocks in between and
let go before the end is seen through the kernel's statistics (CONFIG_THERMAL_STATISTICS):
`stats/time_in_state_ms` ("state<N>\\t<ms>" per state, cumulative) and `stats/total_trans`
(state changes, cumulative). More time above state 0, or any state change, during the window
is throttling. A device without statistics whose cur_state is 0 at both ends cannot rule out
throttling in between: the probe says it cannot tell, and why.
"""
from __future__ import annotations

import glob
import os
from typing import Dict, List, Optional

from .sensors_base import Probe, read_text

COOLING = "sys/class/thermal/cooling_device*"
CLOCK_CAPPERS = ("cpufreq", "devfreq")


def parse_time_in_state(text: str) -> Dict[int, int]:
    """stats/time_in_state_ms ("state0\\t1234" per line) -> {state: cumulative ms}."""
    states = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("state"):
            states[int(parts[0][len("state"):])] = int(parts[1])
    return states


def _stats(path: str) -> Optional[Dict[str, int]]:
    """{"capped_ms": ms spent above state 0, "transitions": state changes}, both cumulative;
    None where the kernel keeps no statistics for the device."""
    try:
        states = parse_time_in_state(read_text(os.path.join(path, "stats", "time_in_state_ms")))
        transitions = int(read_text(os.path.join(path, "stats", "total_trans")))
    except (OSError, ValueError):
        return None
    if not states:
        return None
    return {"capped_ms": sum(ms for state, ms in states.items() if state > 0), "transitions": transitions}


class CoolingProbe(Probe):
    name = "cooling"
    sees_throttling = True

    def __init__(self, devices: Dict[str, str]) -> None:
        self.devices = devices  # sysfs dir -> type

    def snapshot(self) -> Dict[str, object]:
        states, stats = {}, {}
        for path, kind in self.devices.items():
            device = f"{os.path.basename(path)}:{kind}"
            try:
                states[device] = int(read_text(os.path.join(path, "cur_state")))
            except (OSError, ValueError):
                continue
            counted = _stats(path)
            if counted is not None:
                stats[device] = counted
        return {"cur_state": states, "stats": stats}

    def throttled(self, before: Dict[str, object], after: Dict[str, object]) -> Optional[List[str]]:
        first, last = before.get("cur_state") or {}, after.get("cur_state") or {}
        if not first and not last:
            return None
        reasons = [f"thermal: {device} capping clocks (cooling state {max(first.get(device, 0), last.get(device, 0))})"
                   for device in sorted(set(first) | set(last)) if max(first.get(device, 0), last.get(device, 0)) > 0]
        start, end = before.get("stats") or {}, after.get("stats") or {}
        for device in sorted(set(start) & set(end)):
            capped = end[device]["capped_ms"] - start[device]["capped_ms"]
            changed = end[device]["transitions"] - start[device]["transitions"]
            if (capped > 0 or changed > 0) and not any(r.startswith(f"thermal: {device} ") for r in reasons):
                reasons.append(f"thermal: {device} capped clocks during the window ({capped} ms above cooling state 0, "
                               f"{changed} state change(s))")
        if not reasons and self._blind(before, after):
            return None
        return reasons

    @staticmethod
    def _blind(before: Dict[str, object], after: Dict[str, object]) -> List[str]:
        """Devices read at the window's ends only (no statistics at both ends)."""
        devices = set(before.get("cur_state") or {}) | set(after.get("cur_state") or {})
        counted = set(before.get("stats") or {}) & set(after.get("stats") or {})
        return sorted(devices - counted)

    def unknown(self, before: Dict[str, object], after: Dict[str, object]) -> str:
        blind = self._blind(before, after)
        if not blind:
            return super().unknown(before, after)
        return (f"cur_state of {', '.join(blind)} was 0 at both ends of the window and is read only there; the kernel "
                f"keeps no stats/time_in_state_ms for it (CONFIG_THERMAL_STATISTICS) to show capping in between")


def find_cooling(root: str, settings: dict) -> List[Probe]:
    devices = {}
    for path in sorted(glob.glob(os.path.join(root, COOLING))):
        try:
            kind = read_text(os.path.join(path, "type"))
        except OSError:
            continue
        if any(word in kind for word in CLOCK_CAPPERS):
            devices[path] = kind
    return [CoolingProbe(devices)] if devices else []
