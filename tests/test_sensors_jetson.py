"""Jetson readings: tegrastats parsing against verbatim lines from four JetPack generations,
INA3221 rails from recorded sysfs trees (hwmon and the older iio layout), over-current
throttling counters, and real cases measured with the jetson-orin / jetson-nano profiles."""
import shutil
import threading

import pytest

from harness.runner import sensors
from harness.runner.sensors_cooling import find_cooling
from harness.runner.sensors_jetson import board_total, find_ina3221, find_ina3221x, find_soctherm_oc, parse_tegrastats
from tests.replay import SENSORS, measure_one_case, tegrastats

LINES = SENSORS / "tegrastats"


def line(name: str) -> str:
    return (LINES / f"{name}.txt").read_text().splitlines()[0]


def test_tegrastats_orin_jetpack6_uses_vdd_in():
    rails = parse_tegrastats(line("orin-nano-jp6"))
    assert rails == {"VDD_IN": 5.704, "VDD_CPU_GPU_CV": 0.831, "VDD_SOC": 1.624}  # RAM 2461/7620MB is not a rail
    assert board_total(rails) == (5.704, "VDD_IN (total board power)")


def test_tegrastats_agx_orin_sums_its_rails():
    rails = parse_tegrastats(line("agx-orin-jp6"))
    assert rails == {"VDD_GPU_SOC": 1.995, "VDD_CPU_CV": 0.0, "VIN_SYS_5V0": 2.524}
    watts, how = board_total(rails)
    assert watts == pytest.approx(4.519)
    assert how.startswith("sum of rails VDD_CPU_CV + VDD_GPU_SOC + VIN_SYS_5V0")


def test_tegrastats_old_nano_without_units():
    rails = parse_tegrastats(line("nano-jp4"))
    assert rails == {"POM_5V_IN": 0.933, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.123}
    assert board_total(rails) == (0.933, "POM_5V_IN (total board power)")
    assert parse_tegrastats(line("tx1-jp4"))["VDD_IN"] == 2.532  # instantaneous 2532, not the 2698 average


def test_tegrastats_jetpack7_three_values_and_gpc_array():
    rails = parse_tegrastats(line("agx-orin-jp7"))  # also carries GR3D_FREQ 12%@[1300,1300] and cpu@52.968C/52.968C
    assert rails == {"VDD_GPU_SOC": 5.139, "VDD_CPU_CV": 3.268, "VIN_SYS_5V0": 5.5}


def test_ina3221_hwmon_input_rail():
    (sensor,) = find_ina3221(str(SENSORS / "jetson-orin-nano"), {})
    assert sensor.source == "ina3221 VDD_IN (total board power)"
    assert sensor.read() == pytest.approx(5.048 * 1.130)  # in1_input mV x curr1_input mA


def test_ina3221_hwmon_without_input_rail_sums_and_says_so():
    (sensor,) = find_ina3221(str(SENSORS / "jetson-agx-orin"), {})
    assert sensor.source.startswith("ina3221 sum of rails VDD_CPU_CV + VDD_GPU_SOC + VIN_SYS_5V0")
    assert sensor.read() == pytest.approx(19.120 * 0.269 + 19.120 * 0.171 + 5.000 * 1.100)


def test_ina3221x_iio_layout():
    assert find_ina3221(str(SENSORS / "jetson-nano"), {}) == []
    (sensor,) = find_ina3221x(str(SENSORS / "jetson-nano"), {})
    assert sensor.source == "ina3221x POM_5V_IN (total board power)"
    assert sensor.read() == pytest.approx(0.933)


def test_no_rails_and_no_tegrastats_is_one_reason(tmp_path):
    found, _, reason = sensors.discover("jetson-orin", str(tmp_path), {})
    assert found == []
    assert "no INA3221 rails" in reason and "tegrastats" in reason


def test_soctherm_counters_tell_throttling(tmp_path):
    root = tmp_path / "sysfs"
    shutil.copytree(SENSORS / "jetson-orin-nano", root)
    (probe,) = find_soctherm_oc(str(root), {})
    before = probe.snapshot()
    assert probe.throttled(before, probe.snapshot()) == []
    (root / "sys/class/hwmon/hwmon3/oc3_event_cnt").write_text("31\n")
    assert probe.throttled(before, probe.snapshot()) == ["soctherm oc3: 4 hardware throttling event(s) (under-voltage/over-current)"]


def test_cooling_devices_capping_clocks(tmp_path):
    def device(i, kind, state):
        d = tmp_path / f"sys/class/thermal/cooling_device{i}"
        d.mkdir(parents=True)
        (d / "type").write_text(kind + "\n")
        (d / "cur_state").write_text(f"{state}\n")

    device(0, "pwm-fan", 5)  # a fan cools without slowing anything
    device(1, "cpufreq-cpu0", 0)
    (probe,) = find_cooling(str(tmp_path), {})
    before = probe.snapshot()
    # cur_state 0 at both ends, no kernel statistics: capping in between cannot be ruled out
    assert probe.throttled(before, before) is None
    assert "no stats/time_in_state_ms" in probe.unknown(before, before)
    (tmp_path / "sys/class/thermal/cooling_device1/cur_state").write_text("2\n")
    assert probe.throttled(before, probe.snapshot()) == ["thermal: cooling_device1:cpufreq-cpu0 capping clocks (cooling state 2)"]
    assert find_cooling(str(SENSORS / "jetson-orin-nano"), {}) == []  # only a fan there


def test_cooling_statistics_show_capping_between_the_window_ends(tmp_path):
    """cur_state is 0 at both ends, and the kernel's statistics (CONFIG_THERMAL_STATISTICS, in the
    format of drivers/thermal/thermal_sysfs.c) show the device spent time capping in between."""
    d = tmp_path / "sys/class/thermal/cooling_device0"
    (d / "stats").mkdir(parents=True)
    (d / "type").write_text("cpufreq-cpu0\n")
    (d / "cur_state").write_text("0\n")
    (d / "max_state").write_text("2\n")

    def stats(ms: tuple, transitions: int) -> None:
        (d / "stats/time_in_state_ms").write_text("".join(f"state{i}\t{t}\n" for i, t in enumerate(ms)))
        (d / "stats/total_trans").write_text(f"{transitions}\n")

    stats((812340, 5120, 0), 6)
    (probe,) = find_cooling(str(tmp_path), {})
    before = probe.snapshot()
    stats((813100, 5120, 0), 6)  # time passed in state 0 only
    assert probe.throttled(before, probe.snapshot()) == []  # it can see the whole window: not throttled
    stats((813400, 5360, 0), 8)  # capped for 240 ms and back, between the two reads
    assert probe.throttled(before, probe.snapshot()) == [
        "thermal: cooling_device0:cpufreq-cpu0 capped clocks during the window (240 ms above cooling state 0, "
        "2 state change(s))"]


def test_orin_case_from_sysfs(tmp_path):
    row, result = measure_one_case(tmp_path, "orin-nano", "jetson-orin", {"root": str(SENSORS / "jetson-orin-nano")})
    assert row["status"] == "ok", row["reason"]
    assert row["power_source"] == "ina3221 VDD_IN (total board power)"
    assert row["power_mean_w"] == pytest.approx(5.048 * 1.130) and row["idle_power_w"] == pytest.approx(5.048 * 1.130)
    assert row["energy_mj_per_inf"] == pytest.approx(1000 * 5.048 * 1.130 * result["power"]["window_s"] / row["n_runs"])
    assert row["throttled"] is False  # the recorded counters do not move
    assert row["temp_before_c"] == pytest.approx(48.843)


def test_agx_orin_case_throttled_by_over_current_events(tmp_path):
    root = tmp_path / "sysfs"
    shutil.copytree(SENSORS / "jetson-agx-orin", root)
    counter = root / "sys/class/hwmon/hwmon3/oc3_event_cnt"
    stop = threading.Event()

    def over_current_events():  # what soctherm does while the supply sags under load
        n = 0
        while not stop.wait(0.02):
            n += 1
            tmp = counter.with_name("oc3.tmp")
            tmp.write_text(f"{n}\n")
            tmp.replace(counter)

    events = threading.Thread(target=over_current_events)
    events.start()
    try:
        row, result = measure_one_case(tmp_path, "agx-orin", "jetson-orin", {"root": str(root)})
    finally:
        stop.set()
        events.join()
    assert row["status"] == "ok", row["reason"]
    assert row["power_source"].startswith("ina3221 sum of rails")
    assert row["power_mean_w"] == pytest.approx(19.120 * 0.269 + 19.120 * 0.171 + 5.000 * 1.100)
    assert row["energy_mj_per_inf"] > 0
    assert row["throttled"] is True
    assert any(r.startswith("soctherm oc3:") for r in result["power"]["throttle_reasons"])


def test_nano_case_from_tegrastats_lines(tmp_path):
    empty = tmp_path / "no-rails"
    empty.mkdir()
    row, result = measure_one_case(tmp_path, "nano", "jetson-nano", {"root": str(empty), "tegrastats": tegrastats("nano-jp4"),
                                                                      "tegrastats_interval_ms": 50})
    assert row["status"] == "ok", row["reason"]
    assert row["power_source"] == "tegrastats POM_5V_IN (total board power), instantaneous values"
    assert row["power_mean_w"] == pytest.approx(0.933)
    assert row["energy_mj_per_inf"] == pytest.approx(1000 * 0.933 * result["power"]["window_s"] / row["n_runs"])
    assert result["power"]["power_samples"] >= 2
