"""Power, energy and thermal sensors, sampled by the runner around the timed window.

Standard library only (the runner ships to devices). A profile names which readers
to try; every reader takes a `root` so tests can point it at a recorded sysfs tree.

Two kinds of power sensor:
  - "power": read() returns instantaneous watts; sampled every `interval_s` in a thread.
  - "energy": read() returns a cumulative counter in joules (wrap-around already
    handled by the reader); read at the start and end of the window.

This module is the registry: register readers in READERS (name -> factory) and list them
per profile in PROFILES; discover() finds a profile's sensors and probes. What a Sensor and a
Probe are lives in sensors_base, the window around the timed loop in sensors_window; each
device family's readers in sensors_<family>.
A factory returns a list of Sensor (possibly empty) and never raises for a missing
device: it returns [] (the reason comes from `discover`), or raises NoSensor("exact
reason") so the row says precisely why (e.g. "no /sys/class/powercap on this host").
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Optional, Tuple

# what a sensor and a probe are (sensors_base) and the window around the timed loop
# (sensors_window), named here too: the runner and the tests know them as sensors.X
from .sensors_base import NoSensor, Probe, Sensor, ThermalProbe, UnavailableProbe, read_text, thermal_zones
from .sensors_window import (DEFAULT_INTERVAL_S, HOLE_PERIODS, MIN_COVERAGE, SAMPLES_PER_WINDOW, PowerWindow, measure,
                             min_window, prime, sampled_coverage, throttle_reasons, throttling)

__all__ = ["DEFAULT_INTERVAL_S", "HOLE_PERIODS", "MIN_COVERAGE", "NoSensor", "PROBES", "PROFILES", "PowerWindow", "Probe",
           "READERS", "SAMPLES_PER_WINDOW", "Sensor", "ThermalProbe", "UnavailableProbe", "discover", "measure",
           "min_window", "prime", "read_text", "sampled_coverage", "thermal_zones", "throttle_reasons", "throttling"]


def _sibling(module: str, factory: str) -> Callable[[str, dict], list]:
    """A factory defined in a sibling module, imported on first use (no import cycle)."""
    def load(root: str, settings: dict) -> list:
        return getattr(importlib.import_module(f"{__package__}.{module}"), factory)(root, settings)
    return load


# reader name -> factory(root, settings) -> list of Sensor
READERS: Dict[str, Callable[[str, dict], List[Sensor]]] = {
    "rapl": _sibling("sensors_rapl", "find_rapl"),  # CPU package energy (Intel/AMD RAPL via powercap)
    "nvml": _sibling("sensors_nvml", "find_nvml"),  # NVIDIA GPU energy counter, else sampled power
    "ina3221": _sibling("sensors_jetson", "find_ina3221"),  # Jetson INA3221 rails, JetPack 5+ hwmon
    "ina3221x": _sibling("sensors_jetson", "find_ina3221x"),  # Jetson INA3221 rails, JetPack 4 iio
    "tegrastats": _sibling("sensors_jetson", "find_tegrastats"),  # Jetson rails parsed from tegrastats lines
    "pmic": _sibling("sensors_pi", "find_pmic"),  # Raspberry Pi 5 PMIC rails (vcgencmd pmic_read_adc)
    "meter": _sibling("sensors_meter", "find_meter"),  # the target's sensors.meter_command (prints watts)
}
# reader name -> factory(root, settings) -> list of Probe
PROBES: Dict[str, Callable[[str, dict], List[Probe]]] = {
    "thermal": lambda root, settings: [ThermalProbe(root)],
    "nvml": _sibling("sensors_nvml", "nvml_probes"),  # GPU clocks, temperature, throttle reasons, memory
    "vcgencmd": _sibling("sensors_pi", "find_vcgencmd_probe"),  # Pi firmware temperature and get_throttled
    "soctherm_oc": _sibling("sensors_jetson", "find_soctherm_oc"),  # Jetson hardware throttling counters
    "cooling": _sibling("sensors_cooling", "find_cooling"),  # cpufreq/devfreq cooling devices capping clocks
}
# profile -> (power readers to try in order, probes). The first reader that finds a sensor wins.
PROFILES: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "generic-linux": (("rapl",), ("thermal",)),
    "x86-rapl": (("rapl",), ("thermal",)),
    "nvidia-gpu": (("nvml",), ("thermal", "nvml")),
    "raspberry-pi-4": ((), ("thermal", "vcgencmd", "cooling")),
    "raspberry-pi-5": (("pmic",), ("thermal", "vcgencmd", "cooling")),
    "jetson-orin": (("ina3221", "tegrastats"), ("thermal", "soctherm_oc", "cooling")),
    "jetson-nano": (("ina3221", "ina3221x", "tegrastats"), ("thermal", "soctherm_oc", "cooling")),
}


def discover(profile: str, root: str = "/", settings: Optional[dict] = None) -> Tuple[List[Sensor], List[Probe], str]:
    """Sensors and probes for a profile, and the reason when there is no power sensor."""
    settings = settings or {}
    readers, probe_names = PROFILES.get(profile, PROFILES["generic-linux"])
    if settings.get("meter_command"):  # an external meter the target names comes before the board's own sensors
        readers = ("meter",) + tuple(readers)
    probes: List[Probe] = []
    for name in probe_names:
        if name in PROBES:
            probes.extend(PROBES[name](root, settings))
    tried = []
    for name in readers:
        if name not in READERS:
            continue
        try:
            found = READERS[name](root, settings)
        except NoSensor as exc:
            tried.append(f"{name}: {exc}")
            continue
        if found:
            return found, probes, ""
        tried.append(name)
    if tried:
        return [], probes, f"no power sensor found on this {profile} device (tried {', '.join(tried)})"
    return [], probes, f"no power sensor on {profile} (a target can name an external meter: sensors.meter_command)"
