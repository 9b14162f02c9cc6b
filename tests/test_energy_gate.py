"""The energy gate judges what the inferences cost, on the energy readings' own evidence: the
energy above the idle power read just before each window (other processes' steady load taken
out), a margin from the spread of each side's per-window readings (rounds) rather than from the
latency's IQR, and no verdict at all from a single window."""
from __future__ import annotations

import sys

import pytest

from harness import Suite, Timing, settings
from harness.history.gates import Gates
from harness.history.regress import IMPROVEMENT, NOISY, REGRESSION, SAME, UNJUDGED, judge_case
from harness.power_columns import Power
from harness.models import digits_cnn
from harness.session import BenchSession, SessionOptions
from targets.inventory import parse_target

QUIET = Gates(noise=10.0)  # latency's own noise flag out of the way


def window(mean_w: float, idle_w: float, n_runs: int = 1000, window_s: float = 2.0) -> dict:
    """A runner result's power facts for one timed window (as sensors.measure writes them)."""
    return {"power": {"power_source": "meter", "power_mean_w": mean_w, "idle_power_w": idle_w, "window_s": window_s},
            "n_runs": n_runs, "duration_s": window_s, "batch_size": 1}


def row(windows: list[dict], **extra) -> dict:
    """A result row's columns from its rounds' windows (Power.merge, as the pipeline makes it)."""
    power = Power.merge([Power.from_result(w) for w in windows])
    return {"case_id": "c", "run_id": "r", "latency_p50_ms": 1.0, **power.columns(), **extra}


def energy(new: dict, old: dict, gates: Gates = QUIET) -> dict:
    (verdict,) = [v for v in judge_case(new, old, gates) if v["quantity"].startswith("energy")]
    return verdict


def test_energy_above_idle_is_what_the_window_added_to_the_idle_power():
    one = row([window(12.0, 10.0)])
    assert one["energy_mj_per_inf"] == pytest.approx(1000 * 12.0 * 2.0 / 1000)
    assert one["energy_above_idle_mj_per_inf"] == pytest.approx(1000 * 2.0 * 2.0 / 1000)
    three = row([window(12.0, 10.0), window(12.5, 10.0), window(11.9, 10.0)])  # rounds: the median, every figure kept
    assert three["energy_above_idle_mj_per_inf"] == pytest.approx(4.0)
    assert three["energy_above_idle_round_mj"] == "4 5 3.8" and three["energy_round_mj"] == "24 25 23.8"
    assert "energy_above_idle_mj_per_inf" not in row([window(12.0, None)])  # no idle reading: no figure, not 0


def test_other_processes_load_does_not_fire_the_gate():
    """The same inferences (2 W above idle) while another process adds 7 W to the board: the
    total energy rises by 140%, the energy above idle does not move."""
    quiet = row([window(5.0, 3.0), window(5.05, 3.0), window(4.95, 3.0)])
    loaded = row([window(12.0, 10.0), window(12.05, 10.0), window(11.95, 10.0)])
    assert loaded["energy_mj_per_inf"] / quiet["energy_mj_per_inf"] > 2.3  # the total would be a regression
    verdict = energy(loaded, quiet)
    assert verdict["quantity"] == "energy_above_idle_mj_per_inf"
    assert verdict["verdict"] == SAME and abs(verdict["change"]) < 1e-9
    # the inferences costing 50% more is still a regression, whatever the load
    heavier = row([window(13.0, 10.0), window(13.05, 10.0), window(12.95, 10.0)])
    assert energy(heavier, quiet)["verdict"] == REGRESSION
    assert energy(quiet, heavier)["verdict"] == IMPROVEMENT


def test_the_margin_comes_from_the_energy_readings_spread_not_the_latency_noise():
    old = row([window(5.0, 3.0), window(5.0, 3.0), window(5.0, 3.0)])
    tight = row([window(5.4, 3.0), window(5.4, 3.0), window(5.4, 3.0)])  # +20% above idle, readings agree
    spread = row([window(5.4, 3.0), window(5.9, 3.0), window(5.1, 3.0)])  # +20% median, readings spread 33%
    # a noisy latency (IQR/median 0.6 on both sides) no longer widens the energy gate ...
    noisy = {"iqr_over_median": 0.6}
    verdict = energy({**tight, **noisy}, {**old, **noisy}, Gates())
    assert verdict["verdict"] == REGRESSION and verdict["change"] == pytest.approx(0.2)
    # ... the energy readings' own spread does
    verdict = energy(spread, old)
    assert verdict["verdict"] == NOISY
    assert verdict["detail"].startswith("within the noise: energy above idle: threshold 0.1 widened to 0.433")


def test_a_single_window_is_not_judged_and_says_why():
    old = row([window(5.0, 3.0)])
    new = row([window(6.0, 3.0), window(6.0, 3.0), window(6.0, 3.0)])
    verdict = energy(new, old)
    assert verdict["verdict"] == UNJUDGED and verdict["method"] == "none"
    assert verdict["detail"] == ("not judged: one energy window on the old side (no spread of its own to judge a "
                                 "+50.0% change against); measure with --qb-rounds 3 or more")
    inside = energy(row([window(3.0, 3.1), window(3.0, 3.1)]), row([window(5.0, 3.0), window(5.0, 3.0)]))
    assert inside["verdict"] == UNJUDGED and "not positive" in inside["detail"]


def test_a_real_run_in_rounds_keeps_each_windows_energy(tmp_path):
    """Three rounds on the local target with an external meter (a process printing watts): the
    row keeps one energy figure per window, the median as its energy, and an idle figure."""
    meter = tmp_path / "meter.py"
    meter.write_text("print('power=2.5W')\n")
    config = parse_target("metered", {"kind": "local", "profile": "generic-linux", "sensors": {
        "idle_s": 0.3, "meter_command": [sys.executable, str(meter)], "meter_interval_s": 0.1}}, "test")
    options = SessionOptions(results_dir=tmp_path / "results", cache_dir=settings.cache_dir(), threads=1, rounds=3,
                             run_id="metered")
    case = Suite(model=digits_cnn, frameworks=("onnxruntime",), modes=("fp32",), name="energy",
                 timing=Timing(warmup_runs=2, min_runs=20, min_duration_s=0.3, max_duration_s=2.0)).cases()[0]
    session = BenchSession(config, options)
    try:
        got = session.run_case(case)
    finally:
        session.close()
    assert got["status"] == "ok", got["reason"]
    readings = [float(v) for v in got["energy_round_mj"].split()]
    assert len(readings) == 3 and got["energy_mj_per_inf"] == pytest.approx(sorted(readings)[1], rel=1e-5)  # 6 digits kept
    assert [float(v) for v in got["energy_above_idle_round_mj"].split()] == pytest.approx([0.0] * 3, abs=1e-9)
