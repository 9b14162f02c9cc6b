"""An external power meter: a command the target names that prints the watts now.

For boards without a power sensor (Raspberry Pi 3/4) or to measure at the wall: e.g. a
USB power meter's CLI or a smart plug's script. The target's `sensors.meter_command` names
it; the runner runs it every `sensors.meter_interval_s` during the window and takes the last
number it prints (so `12.3`, `12.3 W` and `power=12.3W` all work).
Standard library only (the runner ships to devices).
"""
from __future__ import annotations

import re
from typing import List

from .commands import CommandRunner, argv_of, run_command
from .sensors_base import NoSensor, Sensor

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def parse_watts(text: str) -> float:
    numbers = NUMBER.findall(text)
    if not numbers:
        raise ValueError(f"no number in the meter's output {text.strip()[:120]!r}")
    return float(numbers[-1])


class MeterCommand(Sensor):
    name = "meter"
    kind = "power"

    def __init__(self, argv: List[str], interval_s: float, run: CommandRunner = run_command) -> None:
        self.argv = argv
        self.run = run
        self.min_interval_s = interval_s
        self.source = f"external meter `{' '.join(argv)}` (watts as it prints them)"

    def read(self) -> float:
        return parse_watts(self.run(self.argv))


def find_meter(root: str, settings: dict, run: CommandRunner = run_command) -> List[Sensor]:
    setting = settings.get("meter_command")
    if not setting:
        return []
    argv = argv_of(setting, "")
    if argv is None:
        raise NoSensor(f"the meter command {setting!r} (sensors.meter_command) was not found on the device")
    try:
        parse_watts(run(argv))
    except Exception as exc:
        raise NoSensor(f"the meter command {setting!r} (sensors.meter_command) gave no reading: {exc}") from exc
    return [MeterCommand(argv, float(settings.get("meter_interval_s", 0.5)), run)]
