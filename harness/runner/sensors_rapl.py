"""CPU package energy from RAPL through Linux powercap (standard library only).

/sys/class/powercap/intel-rapl:N is package domain N (its `name` file says "package-N";
AMD CPUs use the same driver and names). `energy_uj` is a cumulative microjoule counter
that wraps to zero past `max_energy_range_uj`. Sub-zones (intel-rapl:N:M: core, uncore,
dram) are parts of the package figure and are not added again; intel-rapl-mmio:N mirrors
the package counter through MMIO and is skipped; psys (whole platform) is not a package.

Since CVE-2020-8694 (the PLATYPUS side channel) `energy_uj` is readable only by root on
most kernels, and virtual machines rarely expose powercap at all: in both cases the
factory raises NoSensor with the exact reason, which becomes the row's power_source.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional

from .sensors_base import NoSensor, Sensor, read_text

POWERCAP = "sys/class/powercap"
PACKAGE_ZONE = re.compile(r"intel-rapl:\d+")


class RaplPackage(Sensor):
    """One package's energy counter, unwrapped into joules since the first read."""

    kind = "energy"

    def __init__(self, zone_dir: str, label: str, max_range_uj: int) -> None:
        self.path = os.path.join(zone_dir, "energy_uj")
        self.max_range_uj = max_range_uj
        self.name = f"rapl:{label}"
        self.source = f"RAPL {label} (CPU package energy counter, {os.path.basename(zone_dir)})"
        self._last: Optional[int] = None
        self._total_uj = 0

    def read(self) -> float:
        raw = int(read_text(self.path))
        if self._last is not None:
            delta = raw - self._last
            if delta < 0:  # the counter passed max_energy_range_uj and restarted from zero
                delta += self.max_range_uj
            self._total_uj += delta
        self._last = raw
        return self._total_uj / 1e6


def _zone_problem(path: str) -> Optional[str]:
    """Why `energy_uj` at `path` cannot be read, or None when it can."""
    try:
        int(read_text(path))
    except PermissionError:
        return (f"{path} is readable only by root (since CVE-2020-8694): run the runner as root, "
                f"or grant read access with `chmod o+r {path}` after each boot")
    except (OSError, ValueError) as exc:
        return f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc})"
    return None


def find_rapl(root: str, settings: dict) -> List[Sensor]:
    """One sensor per CPU package; NoSensor with the exact reason when RAPL is unusable."""
    base = os.path.join(root, POWERCAP)
    if not os.path.isdir(base):
        raise NoSensor(f"no {'/' + POWERCAP if root in ('', '/') else base} on this host "
                       "(RAPL is not exposed, as usual inside virtual machines and containers)")
    zones = sorted((z for z in os.listdir(base) if PACKAGE_ZONE.fullmatch(z)), key=lambda z: int(z.split(":")[1]))
    sensors: List[Sensor] = []
    problems: List[str] = []
    for zone in zones:
        zone_dir = os.path.join(base, zone)
        try:
            label = read_text(os.path.join(zone_dir, "name"))
            max_range_uj = int(read_text(os.path.join(zone_dir, "max_energy_range_uj")))
        except (OSError, ValueError) as exc:
            problems.append(f"{zone_dir} is incomplete ({exc})")
            continue
        if not label.startswith("package"):
            continue
        problem = _zone_problem(os.path.join(zone_dir, "energy_uj"))
        if problem:
            problems.append(problem)
        else:
            sensors.append(RaplPackage(zone_dir, label, max_range_uj))
    # Some packages but not all would under-report the CPU's energy: then report none.
    if problems:
        raise NoSensor("; ".join(problems))
    if not sensors:
        present = ", ".join(sorted(os.listdir(base))) or "nothing"
        raise NoSensor(f"{base} has no RAPL package domain (it holds {present}); "
                       "load the intel_rapl_msr kernel module (AMD needs Linux 5.11 or newer)")
    return sensors
