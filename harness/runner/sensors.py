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


# A sampled ("power") sensor needs at least this many samples in a window; one that reads no
# faster than every min_interval_s therefore needs a window of this many intervals.
SAMPLES_PER_WINDOW = 5
# Below this fraction of the window covered by samples there is no energy figure: a sampler
# that failed part-way would otherwise stand its early samples in for the whole window.
MIN_COVERAGE = 0.90
# A stretch without a sample counts as a hole only beyond this many sampling periods (a busy
# CPU delays single readings; a failed or hung reader leaves long stretches).
HOLE_PERIODS = 3
DEFAULT_INTERVAL_S = 0.05  # a sampled sensor's pace unless it asks for a slower one (min_interval_s)


def _needs(sensor: Sensor, read_s: float) -> Tuple[float, str]:
    if sensor.kind == "power":
        period = max(sensor.min_interval_s, DEFAULT_INTERVAL_S) + read_s
        if SAMPLES_PER_WINDOW * period > sensor.min_window_s:
            return (SAMPLES_PER_WINDOW * period,
                    f"{sensor.name} gives a reading every {period:.2g} s here and needs {SAMPLES_PER_WINDOW} in the window")
    return sensor.min_window_s, f"{sensor.name} needs a window of at least {sensor.min_window_s:g} s"


def min_window(sensors: List[Sensor], settings: Optional[dict] = None, read_s: float = 0.0) -> Tuple[float, str]:
    """The shortest timed window the sensors need, and why (empty when none is needed): the
    sensor's own minimum, and for a sampled sensor SAMPLES_PER_WINDOW readings at its pace
    (its interval plus `read_s`, what one reading took here; see prime()).
    settings["min_window_s"] overrides the sensors' own figure."""
    settings = settings or {}
    if not sensors:
        return 0.0, ""
    if "min_window_s" in settings:
        return float(settings["min_window_s"]), "the target's sensors.min_window_s setting"
    seconds, why = max((_needs(s, read_s) for s in sensors), key=lambda need: need[0])
    return (seconds, why) if seconds > 0 else (0.0, "")


def prime(sensors: List[Sensor]) -> float:
    """One reading of every sampled sensor before any window, so a reader's start-up (a process
    to launch, a first line to wait for) falls in no window. Returns the slowest reading's
    seconds (the pace min_window plans with); errors show up in the windows instead."""
    slowest = 0.0
    for sensor in sensors:
        if sensor.kind == "power":
            began = time.monotonic()
            try:
                sensor.read()
            except Exception:
                continue
            slowest = max(slowest, time.monotonic() - began)
    return slowest


def sampled_coverage(times: List[float], start: float, stop: float, period: float) -> float:
    """Share of [start, stop] that has power samples at the sampler's pace: a stretch (between
    two samples, or at either end) longer than HOLE_PERIODS sampling periods is a hole, less
    those periods. 1.0 for a sampler that kept its pace to the end, about the share up to the failure
    for one that stopped, less for one that hung; a late beat or a slow thread start is no hole."""
    if stop <= start:
        return 0.0
    inside = sorted(t for t in times if start <= t <= stop)
    if not inside:
        return 0.0
    points = [start] + inside + [stop]
    holes = sum(max(0.0, (b - a) - HOLE_PERIODS * period) for a, b in zip(points, points[1:]))
    return max(0.0, 1.0 - holes / (stop - start))


class PowerWindow:
    """Power over one window: energy counters read at its ends, "power" sensors sampled in a
    background thread. The window ends when the `with` block does (the timed loop's end):
    a read still in flight then is waited for but does not stretch the window, and counts
    only if it started inside it."""

    def __init__(self, sensors: List[Sensor], interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.sensors = sensors
        self.interval_s = max([interval_s] + [s.min_interval_s for s in sensors if s.kind == "power"])
        self.clock = clock
        self.error = ""  # why sampling stopped early, or a counter could not be read
        self.reads: List[Tuple[float, float, float]] = []  # (read started, read ended, total watts) of "power" sensors
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
            began = self.clock()
            try:
                watts = self._power_now()
            except Exception as exc:  # keep what was sampled; the coverage shows what is missing
                self.error = f"{type(exc).__name__}: {exc}"
                return
            if watts is not None:
                self.reads.append((began, self.clock(), watts))
            self._stop.wait(self.interval_s)

    def _read_counters(self) -> Dict[str, float]:
        try:
            return {s.name: s.read() for s in self.sensors if s.kind == "energy"}
        except Exception as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"
            return {}

    def __enter__(self) -> "PowerWindow":
        self._energy_start = self._read_counters()
        self.started = self.clock()
        if any(s.kind == "power" for s in self.sensors):
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped = self.clock()  # the window is what ran inside the block, nothing after
        self._stop.set()
        self._energy_end = self._read_counters()
        if self._thread is not None:
            self._thread.join()  # an in-flight read finishes, outside the window
        self.reads = [r for r in self.reads if r[0] < self.stopped]

    @property
    def seconds(self) -> float:
        return self.stopped - self.started

    @property
    def samples(self) -> List[Tuple[float, float]]:
        """(time of the read, watts): a read's midpoint, at most the window's end."""
        return [(min((a + b) / 2, self.stopped), w) for a, b, w in self.reads]

    def coverage(self) -> float:
        """Share of the window the power samples cover (1.0 with counters only)."""
        if not any(s.kind == "power" for s in self.sensors):
            return 1.0
        if not self.reads:
            return 0.0
        durations = sorted(b - a for a, b, _ in self.reads)
        period = self.interval_s + durations[len(durations) // 2]
        times = [t for t, _ in self.samples]
        if len(times) > 2:  # the pace the sampler really kept (a busy CPU slows its thread evenly)
            gaps = sorted(b - a for a, b in zip(times, times[1:]))
            period = max(period, gaps[len(gaps) // 2])
        return sampled_coverage(times, self.started, self.stopped, period)

    def power(self) -> Tuple[Optional[float], str]:
        """(mean total power over the window in watts, "") or (None, why there is no figure)."""
        total = 0.0
        if any(s.kind == "energy" for s in self.sensors):
            names = [s.name for s in self.sensors if s.kind == "energy"]
            if set(self._energy_start) != set(names) or set(self._energy_end) != set(names):
                return None, f"reading the counter failed ({self.error})"
            stuck = [n for n in names if self._energy_end[n] - self._energy_start[n] <= 0]
            if stuck:
                return None, f"the counter did not advance over {self.seconds:.2f} s ({', '.join(stuck)})"
            if self.seconds <= 0:
                return None, "the window has no duration"
            total += sum(self._energy_end[n] - self._energy_start[n] for n in names) / self.seconds
        if any(s.kind == "power" for s in self.sensors):
            covered = self.coverage()
            if covered < MIN_COVERAGE:
                failed = f"; sampling stopped: {self.error}" if self.error else ""
                return None, (f"power samples cover {covered:.0%} of the {self.seconds:.2f} s window, below the "
                              f"{MIN_COVERAGE:.0%} needed for a figure ({len(self.reads)} samples{failed})")
            total += sum(w for _, _, w in self.reads) / len(self.reads)
        return total, ""

    def mean_power_w(self) -> Optional[float]:
        return self.power()[0]


def _snapshots(probes: List[Probe]) -> Dict[str, Dict[str, object]]:
    snaps: Dict[str, Dict[str, object]] = {}
    for probe in probes:
        try:
            snaps[probe.name] = probe.snapshot()
        except Exception as exc:  # a probe that fails says why instead of failing the case
            snaps[probe.name] = {"error": f"{type(exc).__name__}: {exc}"}
    return snaps


def throttling(probes: List[Probe], before: Dict[str, Dict[str, object]], after: Dict[str, Dict[str, object]],
               profile: str) -> Dict[str, object]:
    """`throttled` True when any probe saw throttling, False only when every probe that can see
    it on this device answered "no", else None with `throttle_unknown` naming who could not tell."""
    capable = [p for p in probes if p.sees_throttling]
    if not capable:
        return {"throttled": None, "throttle_reasons": [],
                "throttle_unknown": [f"no probe of profile {profile} can see throttling"]}
    reasons: List[str] = []
    unknown: List[str] = []
    for probe in capable:
        b, a = before.get(probe.name, {}), after.get(probe.name, {})
        said = throttle_reasons(probe, b, a)
        if said is None:
            unknown.append(f"{probe.name}: could not tell ({probe.unknown(b, a)})")
        else:
            reasons.extend(said)
    return {"throttled": True if reasons else (None if unknown else False), "throttle_reasons": reasons,
            "throttle_unknown": unknown}


def measure(sensors: List[Sensor], probes: List[Probe], none_reason: str, timed: Callable[[], dict],
            idle_s: float = 1.0, interval_s: float = DEFAULT_INTERVAL_S, profile: str = "generic-linux") -> Tuple[dict, dict]:
    """Idle power over `idle_s` just before the window, then `timed()` inside a sampled window;
    probes snapshot right at the window's ends (after the idle wait, not before it). The caller
    primes the sensors and sizes both windows (prime, min_window).

    Returns (timed()'s result, power facts for the row)."""
    facts: Dict[str, object] = {}
    if sensors:
        with PowerWindow(sensors, interval_s) as idle:
            time.sleep(idle_s)
        before = _snapshots(probes)
        with PowerWindow(sensors, interval_s) as window:
            result = timed()
        after = _snapshots(probes)
        source = ", ".join(s.source or s.name for s in sensors)
        watts, why = window.power()
        idle_watts, idle_why = idle.power()
        facts.update(
            power_source=source if watts is not None else f"none: {source}: {why}",
            idle_power_w=idle_watts,
            power_mean_w=watts,
            window_s=window.seconds,
            power_samples=len(window.reads),
            power_coverage=window.coverage(),
            # (seconds since the window opened, total watts) of every sample
            power_trace=[(round(t - window.started, 4), w) for t, w in window.samples],
        )
        if idle_why:
            facts["idle_power_note"] = f"none: {idle_why}"
    else:
        before = _snapshots(probes)
        result = timed()
        after = _snapshots(probes)
        facts.update(power_source=f"none: {none_reason}")
    facts["probes_before"], facts["probes_after"] = before, after
    facts.update(throttling(probes, before, after, profile))
    for s in sensors:
        s.close()
    return result, facts


def throttle_reasons(probe: Probe, before: Dict[str, object], after: Dict[str, object]) -> Optional[List[str]]:
    try:
        return probe.throttled(before, after)
    except Exception:  # a probe that cannot compare says nothing rather than failing the case
        return None
