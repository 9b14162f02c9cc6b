"""Throttling seen by the Linux thermal framework (standard library only).

A cpufreq or devfreq cooling device (sys/class/thermal/cooling_device*/type such as
"cpufreq-cpu0", "thermal-cpufreq-0", "devfreq-gpu") caps that clock while its cur_state is
above 0, so a non-zero state at either end of the window means the case ran throttled.
Fans ("pwm-fan") cool without slowing anything and are not counted.
"""
from __future__ import annotations

import glob
import os
from typing import Dict, List, Optional

from .sensors_base import Probe, read_text

COOLING = "sys/class/thermal/cooling_device*"
CLOCK_CAPPERS = ("cpufreq", "devfreq")


class CoolingProbe(Probe):
    name = "cooling"
    sees_throttling = True

    def __init__(self, devices: Dict[str, str]) -> None:
        self.devices = devices  # sysfs dir -> type

    def snapshot(self) -> Dict[str, object]:
        states = {}
        for path, kind in self.devices.items():
            try:
                states[f"{os.path.basename(path)}:{kind}"] = int(read_text(os.path.join(path, "cur_state")))
            except (OSError, ValueError):
                continue
        return {"cur_state": states}

    def throttled(self, before: Dict[str, object], after: Dict[str, object]) -> Optional[List[str]]:
        first, last = before.get("cur_state") or {}, after.get("cur_state") or {}
        if not first and not last:
            return None
        return [f"thermal: {device} capping clocks (cooling state {max(first.get(device, 0), last.get(device, 0))})"
                for device in sorted(set(first) | set(last)) if max(first.get(device, 0), last.get(device, 0)) > 0]


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
