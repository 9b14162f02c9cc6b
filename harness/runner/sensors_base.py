"""What a sensor and a probe are, and the readers every profile shares (thermal zones).

Standard library only (the runner ships to devices). Two kinds of power sensor:
  - "power": read() returns instantaneous watts; sampled every `interval_s` in a thread.
  - "energy": read() returns a cumulative counter in joules (wrap-around already
    handled by the reader); read at the start and end of the window.
A probe takes a before/after snapshot (temperatures, throttling flags, clocks).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

def read_text(path: str) -> str:
    """A sysfs/procfs file's content, stripped. Raises OSError like open()."""
    with open(path) as f:
        return f.read().strip()


class NoSensor(Exception):
    """Raised by a reader factory that found nothing; the message is the exact reason."""


class Sensor:
    name = "sensor"  # e.g. "ina3221:VDD_IN", "rapl:package-0", "nvml:0"
    kind = "power"  # "power" (watts now) or "energy" (cumulative joules)
    source = ""  # the `power_source` text, e.g. "ina3221 VDD_IN (total board power)"
    # Shortest window this sensor measures meaningfully (e.g. NVML's counter updates every
    # ~100 ms): the runner extends the timed loop to at least this long (see min_window).
    min_window_s = 0.0
    # Longest a "power" sensor wants between reads (one process per read, e.g. vcgencmd, should
    # not run every 50 ms on the cores being measured): the window samples no faster than this.
    min_interval_s = 0.0

    def read(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Probe:
    """A before/after snapshot (temperatures, throttling flags, clocks).

    A snapshot may carry "temps_c": {label: degrees C} (the row's temp_before_c/temp_after_c
    are the hottest over all probes) and "throttled": bool. `throttled(before, after)` turns
    the two snapshots into the reasons the device throttled during the case; `measure` sets
    the row's `throttled` from every probe that can tell."""

    name = "probe"
    # Whether this probe can see throttling at all (a temperature probe cannot). `throttled`
    # is False only when every such probe of the case answered; see measure().
    sees_throttling = False

    def snapshot(self) -> Dict[str, object]:
        raise NotImplementedError

    def unknown(self, before: Dict[str, object], after: Dict[str, object]) -> str:
        """Why throttled() could not tell (the snapshots' own error, if they carry one)."""
        for snap in (before, after):
            for key in ("error", "unavailable"):
                if snap.get(key):
                    return str(snap[key])
        return "it gave no reading"

    def throttled(self, before: Dict[str, object], after: Dict[str, object]) -> Optional[List[str]]:
        """Why the device throttled between the snapshots: [] = it did not, None = this probe
        cannot tell. Default: the snapshots' own "throttled" flags."""
        flags = {when: snap.get("throttled") for when, snap in (("start", before), ("end", after))
                 if snap.get("throttled") is not None}
        if not flags:
            return None
        return [f"{self.name}: throttled at the {when} of the window" for when, on in flags.items() if on]


def thermal_zones(root: str = "/") -> Dict[str, float]:
    """Every /sys/class/thermal/thermal_zone*/temp, in degrees C, keyed by zone type."""
    base = os.path.join(root, "sys/class/thermal")
    temps: Dict[str, float] = {}
    try:
        zones = sorted(z for z in os.listdir(base) if z.startswith("thermal_zone"))
    except OSError:
        return temps
    for zone in zones:
        try:
            milli = float(read_text(os.path.join(base, zone, "temp")))
            try:
                label = read_text(os.path.join(base, zone, "type")) or zone
            except OSError:
                label = zone
            temps[label if label not in temps else f"{label}:{zone}"] = milli / 1000.0
        except (OSError, ValueError):
            continue
    return temps


class UnavailableProbe(Probe):
    """A throttling probe the profile has but this device could not start (e.g. vcgencmd not
    installed): it cannot tell, and says why, so `throttled` is never False by its silence."""

    sees_throttling = True

    def __init__(self, name: str, reason: str) -> None:
        self.name, self.reason = name, reason

    def snapshot(self) -> Dict[str, object]:
        return {"unavailable": self.reason}

    def throttled(self, before: Dict[str, object], after: Dict[str, object]) -> Optional[List[str]]:
        return None


class ThermalProbe(Probe):
    name = "thermal"

    def __init__(self, root: str = "/") -> None:
        self.root = root

    def snapshot(self) -> Dict[str, object]:
        return {"temps_c": thermal_zones(self.root)}
