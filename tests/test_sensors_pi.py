"""Raspberry Pi readings: parsers against verbatim vcgencmd output, and one real case measured
with the raspberry-pi-5 / raspberry-pi-4 profiles while vcgencmd replays recorded output."""
import pytest

from harness.runner import sensors
from harness.runner.sensors_pi import (find_pmic, parse_pmic_read_adc, parse_temp, parse_throttled,
                                       pmic_power_w, throttle_reasons)
from tests.replay import SENSORS, measure_one_case, vcgencmd

PI5 = SENSORS / "raspberry-pi-5"
PI4 = SENSORS / "raspberry-pi-4"


def test_pmic_rails_pair_volts_with_amps():
    text = (PI5 / "pmic_read_adc.txt").read_text()
    rails = parse_pmic_read_adc(text)
    assert len(rails) == 14
    assert rails["VDD_CORE"] == (0.89369880, 5.03652000)
    assert rails["EXT5V"] == (4.92450000, None)  # the input: voltage only
    assert rails["BATT"] == (0.00341880, None)
    watts, used = pmic_power_w(text)
    assert len(used) == 12 and "EXT5V" not in used
    # independent arithmetic over the same lines
    values = {line.split()[0]: float(line.split("=")[1][:-1]) for line in text.splitlines()}
    expected = sum(values[f"{r}_V"] * values[f"{r}_A"] for r in used)
    assert watts == pytest.approx(expected)


def test_temp_and_throttled_lines():
    assert parse_temp("temp=55.8'C\n") == 55.8
    assert parse_throttled("throttled=0x50005\n") == 0x50005
    assert parse_throttled('error=2 error_msg="Command not registered"') is None


@pytest.mark.parametrize("before, after, expected", [
    (0x0, 0x0, []),
    # happened since boot, before this case: the sticky bits would hide another occurrence during it
    (0x50000, 0x50000, None),
    (0x0, 0x50000, ["vcgencmd: under-voltage (occurred during the case)", "vcgencmd: throttled (occurred during the case)"]),
    (0x50005, 0x50005, ["vcgencmd: under-voltage (active)", "vcgencmd: throttled (active)"]),
    (0x0, 0x80008, ["vcgencmd: soft temperature limit (active)"]),
    # throttling had occurred before, under-voltage is new: what it can see, it says
    (0x40000, 0x50000, ["vcgencmd: under-voltage (occurred during the case)"]),
    (0x50000, 0x50004, ["vcgencmd: throttled (active)"]),
    (None, 0x5, None),
])
def test_throttle_bits(before, after, expected):
    assert throttle_reasons(before, after) == expected


def test_a_condition_set_before_the_window_is_unknown_not_false_and_says_what_it_saw():
    from harness.runner.sensors_pi import VcgencmdProbe

    probe = VcgencmdProbe(vcgencmd("raspberry-pi-4"))  # get_throttled replays throttled=0x50000
    before, after = probe.snapshot(), probe.snapshot()
    assert before["get_throttled"] == "0x50000"
    assert probe.throttled(before, after) is None
    assert probe.unknown(before, after) == (
        "under-voltage, throttled had occurred before the window began (get_throttled 0x50000 at its start: "
        "since-boot bits set, none active at either end), so one during the window would not show")


def test_a_pi4_has_no_pmic_and_says_so():
    with pytest.raises(sensors.NoSensor, match="no rail with volts and amps"):
        find_pmic("/", {"vcgencmd": vcgencmd("raspberry-pi-4")})
    found, probes, reason = sensors.discover("raspberry-pi-4", "/", {"vcgencmd": vcgencmd("raspberry-pi-4")})
    assert found == [] and reason.startswith("no power sensor on raspberry-pi-4")
    assert "vcgencmd" in [p.name for p in probes]


def test_missing_vcgencmd_is_named():
    with pytest.raises(sensors.NoSensor, match="vcgencmd"):
        find_pmic("/", {"vcgencmd": "/nonexistent/vcgencmd"})


def test_pi5_case_has_power_energy_temperature_and_throttling(tmp_path):
    empty_sysfs = tmp_path / "no-sysfs"  # temperatures come from vcgencmd alone
    empty_sysfs.mkdir()
    row, result = measure_one_case(tmp_path, "pi5", "raspberry-pi-5", {"vcgencmd": vcgencmd("raspberry-pi-5"), "root": str(empty_sysfs)})
    assert row["status"] == "ok", row["reason"]
    watts, _ = pmic_power_w((PI5 / "pmic_read_adc.txt").read_text())
    assert row["power_source"].startswith("vcgencmd pmic_read_adc: sum of V x A over 12 PMIC rails")
    assert "input current is not reported" in row["power_source"]
    assert row["power_mean_w"] == pytest.approx(watts)
    assert row["idle_power_w"] == pytest.approx(watts)
    power = result["power"]
    assert power["power_samples"] >= 1 and all(len(sample) == 2 for sample in power["power_trace"])
    assert row["energy_mj_per_inf"] == pytest.approx(1000 * watts * power["window_s"] / row["n_runs"])
    assert row["throttled"] is True
    assert "vcgencmd: under-voltage (active)" in power["throttle_reasons"]
    assert row["temp_before_c"] == 55.8 and row["temp_after_c"] == 55.8


def test_pi4_case_has_empty_power_columns_with_the_reason(tmp_path):
    empty_sysfs = tmp_path / "no-sysfs"
    empty_sysfs.mkdir()
    row, _ = measure_one_case(tmp_path, "pi4", "raspberry-pi-4", {"vcgencmd": vcgencmd("raspberry-pi-4"), "root": str(empty_sysfs)})
    assert row["status"] == "ok", row["reason"]
    assert row["power_source"].startswith("none: no power sensor on raspberry-pi-4")
    assert row["power_mean_w"] is None and row["idle_power_w"] is None and row["energy_mj_per_inf"] is None
    # 0x50000: throttled since boot, before the case; whether again during it, the sticky bits cannot say
    assert row["throttled"] is None and row["throttle_reasons"] is None
    assert row["throttle_note"].startswith("vcgencmd: could not tell (under-voltage, throttled had occurred before the window began")
    assert row["temp_before_c"] == 48.7


def test_external_meter_fills_power_on_a_pi4(tmp_path):
    import sys

    meter = tmp_path / "meter.py"
    meter.write_text("print('power=3.25W')\n")
    row, result = measure_one_case(tmp_path, "pi4-meter", "raspberry-pi-4",
                                   {"vcgencmd": vcgencmd("raspberry-pi-4"), "meter_command": [sys.executable, str(meter)],
                                    "meter_interval_s": 0.1})
    assert row["status"] == "ok", row["reason"]
    assert row["power_source"].startswith("external meter")
    assert row["power_mean_w"] == pytest.approx(3.25)
    assert row["energy_mj_per_inf"] == pytest.approx(1000 * 3.25 * result["power"]["window_s"] / row["n_runs"])
