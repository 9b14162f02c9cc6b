"""The timed window as the sensors see it: how long it must be (min_window), the sampled
power window (PowerWindow), and measure(), which wraps the timed loop in idle power, the
window and the probes' before/after snapshots. Standard library only (the runner ships to devices).
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from .sensors_base import Probe, Sensor


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

    def trace(self) -> List[Tuple[float, float]]:
        """(seconds since the window opened, total watts) of every sample, floored to 0.1 ms:
        rounding to nearest put the last sample past the window (1.503 in a 1.50299 s window)."""
        return [(math.floor((t - self.started) * 1e4) / 1e4, w) for t, w in self.samples]

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
            power_trace=window.trace(),  # (seconds since the window opened, total watts) of every sample
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
