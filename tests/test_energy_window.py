"""The power window is the timed loop and its figure is only as good as its coverage: a slow
reader's in-flight read does not stretch it, a sampler that fails part-way or a counter that
does not move gives no figure (with the reason) instead of a wrong or zero one; `throttled`
is False only when every probe that can see throttling answered; the probes snapshot at the
window's start (not before the idle wait); the power trace lands in power.parquet and the
history database, the throttle reasons in the row."""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.runner import sensors
from harness.runner.sensors import MIN_COVERAGE, PowerWindow, Probe, Sensor, sampled_coverage
from tests.replay import SENSORS, measure_one_case, vcgencmd


class SlowMeter(Sensor):
    """A power reader that takes `read_s` per reading, like vcgencmd or an external meter
    spawning a process; after `fail_after` readings it fails (unplugged)."""

    kind, name, source = "power", "slow-meter", "test meter"

    def __init__(self, watts: float, read_s: float, fail_after: int = 10 ** 9) -> None:
        self.watts, self.read_s, self.fail_after, self.reads = watts, read_s, fail_after, 0

    def read(self) -> float:
        self.reads += 1
        if self.reads > self.fail_after:
            raise OSError("meter unplugged")
        time.sleep(self.read_s)
        return self.watts


class StuckCounter(Sensor):
    kind, name, source = "energy", "counter:0", "test energy counter"

    def read(self) -> float:
        return 1234.5  # joules since boot, and it never moves


def timed_sleep(seconds: float):
    def timed() -> dict:
        start = time.monotonic()
        time.sleep(seconds)
        return {"duration_s": time.monotonic() - start}
    return timed


def test_coverage_of_a_window_by_its_samples():
    steady = [0.025 + 0.05 * i for i in range(20)]
    assert sampled_coverage(steady, 0.0, 1.0, 0.05) == pytest.approx(1.0)
    late_beats = [0.14 * i for i in range(8)]  # a busy CPU: every reading 90 ms late
    assert sampled_coverage(late_beats, 0.0, 1.0, 0.05) == pytest.approx(1.0)
    stopped = [0.025 + 0.05 * i for i in range(6)]  # the sampler failed after 0.3 s
    assert sampled_coverage(stopped, 0.0, 1.0, 0.05) == pytest.approx(1 - (1.0 - 0.275 - 0.15))
    hung = [t for t in steady if not 0.3 < t < 0.8]  # one reading took half a second
    assert sampled_coverage(hung, 0.0, 1.0, 0.05) == pytest.approx(1 - (0.825 - 0.275 - 0.15))
    assert sampled_coverage([], 0.0, 1.0, 0.05) == 0.0 and sampled_coverage([0.5], 1.0, 1.0, 0.05) == 0.0


def test_a_slow_readers_in_flight_read_does_not_stretch_the_window():
    meter = SlowMeter(5.0, read_s=0.4)  # reads at 0-0.4, 0.45-0.85, 0.9-1.3 s: one in flight when the loop ends
    with PowerWindow([meter]) as window:
        loop = timed_sleep(1.0)()
    # the window closes when the loop returns; the read finishing 0.3 s later is waited for outside it
    assert window.seconds - loop["duration_s"] < 0.1
    assert all(t <= window.stopped for t, _ in window.samples)
    assert window.coverage() >= MIN_COVERAGE and window.mean_power_w() == pytest.approx(5.0)


def test_a_sampler_that_fails_part_way_gives_no_energy_figure():
    meter = SlowMeter(4.0, read_s=0.0, fail_after=3)
    result, facts = sensors.measure([meter], [], "", timed_sleep(1.0), idle_s=0.0)
    assert facts["power_mean_w"] is None and facts["power_coverage"] < MIN_COVERAGE
    assert facts["power_source"].startswith("none: test meter: power samples cover ")
    assert "below the 90% needed for a figure" in facts["power_source"]
    assert "sampling stopped: OSError: meter unplugged" in facts["power_source"]


def test_a_counter_that_does_not_advance_is_no_figure_not_zero():
    result, facts = sensors.measure([StuckCounter()], [], "", timed_sleep(0.2), idle_s=0.1)
    assert facts["power_mean_w"] is None and facts["idle_power_w"] is None
    assert facts["power_source"] == (f"none: test energy counter: the counter did not advance over "
                                     f"{facts['window_s']:.2f} s (counter:0)")


class ClockProbe(Probe):
    """Notes when it was asked (the NVML probe's start snapshot must be the window's start)."""

    name = "clock"

    def snapshot(self):
        return {"at": time.monotonic()}


def test_probes_snapshot_at_the_window_start_not_before_the_idle_wait():
    begun = time.monotonic()
    result, facts = sensors.measure([SlowMeter(1.0, 0.0)], [ClockProbe()], "", timed_sleep(0.3), idle_s=0.5)
    start = facts["probes_before"]["clock"]["at"]
    assert start - begun >= 0.5  # after the idle wait
    assert facts["probes_after"]["clock"]["at"] - start == pytest.approx(facts["window_s"], abs=0.1)


def pi_whose_vcgencmd_fails(tmp_path: Path) -> tuple[Path, list[str]]:
    """A Pi 4 sysfs with a cpufreq cooling device at rest, and a vcgencmd that answers
    measure_temp but fails get_throttled (as on a Pi whose firmware tool is broken)."""
    root = tmp_path / "sysfs"
    device = root / "sys/class/thermal/cooling_device0"
    device.mkdir(parents=True)
    (device / "type").write_text("cpufreq-cpu0\n")
    (device / "cur_state").write_text("0\n")
    (device / "max_state").write_text("3\n")
    recorded = tmp_path / "vcgencmd-broken"
    recorded.mkdir()
    shutil.copy(SENSORS / "raspberry-pi-4" / "measure_temp.txt", recorded / "measure_temp.txt")
    return root, [sys.executable, str(Path(vcgencmd("raspberry-pi-4")[1])), str(recorded)]


def test_throttled_is_unknown_when_a_probe_that_sees_more_could_not_tell(tmp_path):
    root, broken = pi_whose_vcgencmd_fails(tmp_path)
    row, result = measure_one_case(tmp_path, "pi4-broken", "raspberry-pi-4", {"vcgencmd": broken, "root": str(root)})
    assert row["status"] == "ok", row["reason"]
    # the cooling device says "not capping", but only vcgencmd sees under-voltage and firmware throttling
    assert row["throttled"] is None
    assert row["throttle_note"].startswith("vcgencmd: could not tell (`vcgencmd get_throttled` gave no throttled=0x... line")
    assert 'Command not registered: get_throttled' in row["throttle_note"]
    assert row["temp_before_c"] is not None  # measure_temp still answered


def test_throttle_reasons_reach_the_row_and_false_needs_every_probe(tmp_path):
    root, broken = pi_whose_vcgencmd_fails(tmp_path)
    row, _ = measure_one_case(tmp_path, "pi5", "raspberry-pi-5", {"vcgencmd": vcgencmd("raspberry-pi-5"), "root": str(root)})
    assert row["throttled"] is True and "vcgencmd: under-voltage (active)" in row["throttle_reasons"]
    # the recorded Pi 4 (throttled=0x50000: throttled since boot) and a cooling device without statistics:
    # neither can see the window itself, so the row does not say "not throttled"
    row, _ = measure_one_case(tmp_path, "pi4", "raspberry-pi-4", {"vcgencmd": vcgencmd("raspberry-pi-4"), "root": str(root)})
    assert row["throttled"] is None and row["throttle_reasons"] is None
    assert "vcgencmd: could not tell (under-voltage, throttled had occurred before the window began" in row["throttle_note"]
    assert "cooling: could not tell (cur_state of cooling_device0:cpufreq-cpu0 was 0 at both ends" in row["throttle_note"]
    # a Pi with nothing since boot and a cooling device with kernel statistics sees the whole window: False
    fresh = tmp_path / "vcgencmd-fresh"
    fresh.mkdir()
    shutil.copy(SENSORS / "raspberry-pi-4" / "measure_temp.txt", fresh / "measure_temp.txt")
    (fresh / "get_throttled.txt").write_text("throttled=0x0\n")
    stats = root / "sys/class/thermal/cooling_device0/stats"
    stats.mkdir()
    (stats / "time_in_state_ms").write_text("state0\t5301820\nstate1\t0\nstate2\t0\nstate3\t0\n")
    (stats / "total_trans").write_text("0\n")
    seeing = [broken[0], broken[1], str(fresh)]
    row, _ = measure_one_case(tmp_path, "pi4-seeing", "raspberry-pi-4", {"vcgencmd": seeing, "root": str(root)})
    assert row["throttled"] is False and row["throttle_reasons"] is None and row["throttle_note"] is None
    row, _ = measure_one_case(tmp_path, "plain", "generic-linux", {"root": str(root)})
    assert row["throttled"] is None and row["throttle_note"] == "no probe of profile generic-linux can see throttling"


def test_power_trace_goes_to_power_parquet_and_the_history_database(tmp_path):
    from harness.history.db import HistoryDB

    meter = tmp_path / "meter.py"
    meter.write_text("print('power=2.5W')\n")
    row, result = measure_one_case(tmp_path, "metered", "raspberry-pi-4",
                                   {"vcgencmd": vcgencmd("raspberry-pi-5"), "meter_command": [sys.executable, str(meter)],
                                    "meter_interval_s": 0.1})
    assert row["status"] == "ok", row["reason"] and row["power_mean_w"] == pytest.approx(2.5)
    run_dir = tmp_path / "results" / "metered"
    power = pd.read_parquet(run_dir / "power.parquet")
    trace = result["power"]["power_trace"]
    assert len(trace) == result["power"]["power_samples"] >= 2
    assert power["case_id"].unique().tolist() == [row["case_id"]]
    assert power["t_s"].tolist() == [t for t, _ in trace] and set(power["power_w"]) == {2.5}
    assert power["t_s"].max() <= result["power"]["window_s"]

    db = HistoryDB(f"sqlite:///{tmp_path / 'history.sqlite'}")
    db.append_run_dir(run_dir)
    stored = db.power(run_id="metered")
    assert stored["t_s"].tolist() == power["t_s"].tolist() and stored["power_w"].tolist() == power["power_w"].tolist()
    got = db.results(run_id="metered").iloc[0]
    assert got["throttled"] is True or got["throttled"] == 1
    assert "vcgencmd: under-voltage (active)" in got["throttle_reasons"]
    assert got["energy_mj_per_sample"] == pytest.approx(row["energy_mj_per_sample"])


def test_the_power_trace_never_ends_past_the_window():
    """A sample read at the window's very end: its time, to 0.1 ms, is still inside the window
    (rounding to nearest once gave 1.503 s in a 1.50299 s window, and the trace test flaked)."""
    window = PowerWindow([])
    window.started, window.stopped = 10.0, 11.50299
    window.reads = [(10.7, 10.8, 2.0), (11.50292, 11.50299, 2.5)]
    trace = window.trace()
    assert [w for _, w in trace] == [2.0, 2.5]
    assert all(0.0 <= t <= window.seconds for t, _ in trace), (trace, window.seconds)
