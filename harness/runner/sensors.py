"""Power, energy and thermal sensors, sampled by the runner around the timed window.

Standard library only (the runner ships to devices). A profile names which readers
to try; every reader takes a `root` so tests can point it at a recorded sysfs tree.

Two kinds of power sensor:
  - "power": read() returns instantaneous watts; sampled every `interval_s` in a thread.
  - "energy": read() returns a cumulative counter in joules (wrap-around already
    handled by the reader); read at the start and end of the window.

Register readers in READERS (name -> factory) and list them per profile in PROFILES.
A factory returns a list of Sensor (possibly empty) and never raises for a missing
device: it returns [] (the reason comes from `discover`), or raises NoSensor("exact
reason") so the row says precisely why (e.g. "no /sys/class/powercap on this host").
"""
from __future__ import annotations

import importlib
import os
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple


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

    def snapshot(self) -> Dict[str, object]:
        raise NotImplementedError

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


class ThermalProbe(Probe):
    name = "thermal"

    def __init__(self, root: str = "/") -> None:
        self.root = root

    def snapshot(self) -> Dict[str, object]:
        return {"temps_c": thermal_zones(self.root)}


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


def min_window(sensors: List[Sensor], settings: Optional[dict] = None) -> Tuple[float, str]:
    """The shortest timed window the sensors need, and why (empty when none is needed).
    settings["min_window_s"] overrides the sensors' own figure."""
    settings = settings or {}
    if not sensors:
        return 0.0, ""
    if "min_window_s" in settings:
        return float(settings["min_window_s"]), "the target's sensors.min_window_s setting"
    slowest = max(sensors, key=lambda s: s.min_window_s, default=None)
    if slowest is None or slowest.min_window_s <= 0:
        return 0.0, ""
    return slowest.min_window_s, f"{slowest.name} needs a window of at least {slowest.min_window_s:g} s"


class PowerWindow:
    """Samples power sensors in a background thread between __enter__ and __exit__."""

    def __init__(self, sensors: List[Sensor], interval_s: float = 0.05) -> None:
        self.sensors = sensors
        self.interval_s = max([interval_s] + [s.min_interval_s for s in sensors if s.kind == "power"])
        self.error = ""  # why sampling stopped early, when a sensor failed
        self.samples: List[Tuple[float, float]] = []  # (monotonic time, total watts) of "power" sensors
        self._energy_start: Dict[str, float] = {}
        self._energy_end: Dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.started = self.stopped = 0.0

    def _power_now(self) -> Optional[float]:
        power = [s for s in self.sensors if s.kind == "power"]
        return sum(s.read() for s in power) if power else None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                watts = self._power_now()
            except Exception as exc:  # keep what was sampled; measure() says why the rest is missing
                self.error = f"{type(exc).__name__}: {exc}"
                return
            if watts is not None:
                self.samples.append((time.monotonic(), watts))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PowerWindow":
        self._energy_start = {s.name: s.read() for s in self.sensors if s.kind == "energy"}
        self.started = time.monotonic()
        if any(s.kind == "power" for s in self.sensors):
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.stopped = time.monotonic()
        self._energy_end = {s.name: s.read() for s in self.sensors if s.kind == "energy"}

    @property
    def seconds(self) -> float:
        return self.stopped - self.started

    def mean_power_w(self) -> Optional[float]:
        """Mean total power over the window: counters' energy / time, plus sampled watts."""
        total = 0.0
        have = False
        if self._energy_start:
            joules = sum(self._energy_end[k] - self._energy_start[k] for k in self._energy_start)
            total += joules / self.seconds if self.seconds > 0 else 0.0
            have = True
        if self.samples:
            total += sum(w for _, w in self.samples) / len(self.samples)
            have = True
        return total if have else None


def measure(sensors: List[Sensor], probes: List[Probe], none_reason: str, timed: Callable[[], dict],
            idle_s: float = 1.0, interval_s: float = 0.05) -> Tuple[dict, dict]:
    """Idle power just before the window, then `timed()` inside a sampled window.

    Returns (timed()'s result, power facts for the row)."""
    before = {p.name: p.snapshot() for p in probes}
    facts: Dict[str, object] = {"probes_before": before}
    if sensors:
        with PowerWindow(sensors, interval_s) as idle:
            time.sleep(idle_s)
        with PowerWindow(sensors, interval_s) as window:
            result = timed()
        source = ", ".join(s.source or s.name for s in sensors)
        facts.update(
            power_source=source,
            idle_power_w=idle.mean_power_w(),
            power_mean_w=window.mean_power_w(),
            window_s=window.seconds,
            power_samples=len(window.samples),
            # (seconds since the window opened, total watts) of every sample
            power_trace=[(round(t - window.started, 4), w) for t, w in window.samples],
        )
        if facts["power_mean_w"] is None and (window.error or idle.error):
            facts["power_source"] = f"none: {source} failed ({window.error or idle.error})"
    else:
        result = timed()
        facts.update(power_source=f"none: {none_reason}")
    after = {p.name: p.snapshot() for p in probes}
    facts["probes_after"] = after
    reasons = [throttle_reasons(p, before.get(p.name, {}), after.get(p.name, {})) for p in probes]
    known = [r for r in reasons if r is not None]
    if known:  # at least one probe can tell
        facts["throttle_reasons"] = [why for r in known for why in r]
        facts["throttled"] = bool(facts["throttle_reasons"])
    for s in sensors:
        s.close()
    return result, facts


def throttle_reasons(probe: Probe, before: Dict[str, object], after: Dict[str, object]) -> Optional[List[str]]:
    try:
        return probe.throttled(before, after)
    except Exception:  # a probe that cannot compare says nothing rather than failing the case
        return None
