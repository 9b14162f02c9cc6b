"""NVIDIA Jetson power rails and hardware throttling counters (standard library only).

Power, in the order the profiles try it:
  - JetPack 5+: the INA3221 hwmon driver,
      sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in<N>_label   rail name ("NC" = not connected)
                                                in<N>_input   bus voltage, mV
                                                curr<N>_input current, mA
    (in7 is the "sum of shunt voltages" and has no current: it is not a rail).
  - JetPack 4 and older: the ina3221x IIO driver,
      sys/bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_<N>, in_power<N>_input (mW).
  - Otherwise `tegrastats`, whose rails read `NAME now/average` in mW, with or without the
    unit, and on JetPack 7 a third value: `VDD_IN 5704mW/5704mW`, `POM_5V_IN 933/933`,
    `VDD_GPU_SOC 5139mW/5139mW/5139mW`. Only the first (instantaneous) value is used.

Total board power is the input rail (VDD_IN, or POM_5V_IN on the Nano/TX1) where the board
has one, else the sum of every rail; `power_source` says which.

Throttling: Orin's hwmon "soctherm_oc" counts hardware throttling events (oc1 under-voltage,
oc2 average over-current, oc3 instantaneous over-current); a counter that grew across the
case means the clocks were cut during it.
"""
from __future__ import annotations

import glob
import os
import re
import subprocess
import threading
from typing import Dict, List, Optional, Tuple

from .commands import argv_of
from .sensors_base import NoSensor, Probe, Sensor, read_text

INA3221_HWMON = "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"
INA3221X_IIO = "sys/bus/i2c/drivers/ina3221x/*/iio:device*"
HWMON = "sys/class/hwmon/hwmon*"
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")  # the board's input rail, where it has one
NOT_A_RAIL = ("NC", "sum of shunt voltages")
# `NAME 5704mW/5704mW[/5704mW]` or `NAME 933/933`; the lookahead keeps `RAM 2461/7620MB` out
TEGRASTATS_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/\d+(?:mW)?(?:/\d+(?:mW)?)?(?![\w/])")


def board_total(rails: Dict[str, float]) -> Tuple[float, str]:
    """(watts, how): the input rail where present, else the sum of all rails."""
    for name in TOTAL_RAILS:
        if name in rails:
            return rails[name], f"{name} (total board power)"
    names = sorted(rails)
    return sum(rails.values()), f"sum of rails {' + '.join(names)} (no VDD_IN/POM_5V_IN input rail on this board)"


def parse_tegrastats(line: str) -> Dict[str, float]:
    """rail -> instantaneous watts from one tegrastats line ({} when it has no rails)."""
    return {name: int(now) / 1000.0 for name, now in TEGRASTATS_RAIL.findall(line)}


# -- sysfs rails ------------------------------------------------------------------------
class SysfsRails(Sensor):
    """Board power from INA3221 rails in sysfs: the input rail, or the sum of all."""

    kind = "power"

    def __init__(self, driver: str, rails: Dict[str, Tuple[str, ...]]) -> None:
        total = next((name for name in TOTAL_RAILS if name in rails), None)
        # rail -> (mW file,) or (mV file, mA file); only the input rail when the board has one
        self.files = {total: rails[total]} if total else dict(rails)
        _, how = board_total({name: 0.0 for name in self.files})
        self.name = f"{driver}:{'+'.join(sorted(self.files))}"
        self.source = f"{driver} {how}"

    def rails_w(self) -> Dict[str, float]:
        watts = {}
        for name, files in self.files.items():
            if len(files) == 1:
                watts[name] = float(read_text(files[0])) / 1e3
            else:
                watts[name] = float(read_text(files[0])) * float(read_text(files[1])) / 1e6
        return watts

    def read(self) -> float:
        return board_total(self.rails_w())[0]


def _readable(files: Tuple[str, ...]) -> bool:
    try:
        for path in files:
            float(read_text(path))
    except (OSError, ValueError):
        return False
    return True


def find_ina3221(root: str, settings: dict) -> List[Sensor]:
    """JetPack 5+ hwmon layout."""
    rails: Dict[str, Tuple[str, ...]] = {}
    for hwmon in sorted(glob.glob(os.path.join(root, INA3221_HWMON))):
        for label_file in sorted(glob.glob(os.path.join(hwmon, "in*_label"))):
            channel = os.path.basename(label_file)[2:-len("_label")]
            try:
                label = read_text(label_file)
            except OSError:
                continue
            files = (os.path.join(hwmon, f"in{channel}_input"), os.path.join(hwmon, f"curr{channel}_input"))
            if label and label not in NOT_A_RAIL and _readable(files):
                rails[label] = files
    return [SysfsRails("ina3221", rails)] if rails else []


def find_ina3221x(root: str, settings: dict) -> List[Sensor]:
    """JetPack 4 IIO layout."""
    rails: Dict[str, Tuple[str, ...]] = {}
    for device in sorted(glob.glob(os.path.join(root, INA3221X_IIO))):
        for name_file in sorted(glob.glob(os.path.join(device, "rail_name_*"))):
            channel = name_file.rsplit("_", 1)[1]
            try:
                label = read_text(name_file)
            except OSError:
                continue
            files = (os.path.join(device, f"in_power{channel}_input"),)
            if label and label not in NOT_A_RAIL and _readable(files):
                rails[label] = files
    return [SysfsRails("ina3221x", rails)] if rails else []


# -- tegrastats ---------------------------------------------------------------------------
class Tegrastats(Sensor):
    """A `tegrastats --interval N` process; read() returns the latest line's board power."""

    name = "tegrastats"
    kind = "power"

    def __init__(self, argv: List[str], interval_ms: int = 100, first_line_s: float = 5.0) -> None:
        self.argv = argv + ["--interval", str(int(interval_ms))]
        self.min_interval_s = interval_ms / 1000.0  # it prints no faster: sampling faster repeats values
        self.first_line_s = first_line_s
        self._proc: Optional[subprocess.Popen] = None
        self._latest: Optional[Dict[str, float]] = None
        self._last_line = ""
        self._got_line = threading.Event()

    @property
    def source(self) -> str:
        how = board_total(self._latest)[1] if self._latest else "rails"
        return f"tegrastats {how}, instantaneous values"

    def _follow(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._last_line = line.strip()
            rails = parse_tegrastats(line)
            if rails:
                self._latest = rails
                self._got_line.set()

    def read(self) -> float:
        if self._proc is None:
            self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          universal_newlines=True, bufsize=1)
            threading.Thread(target=self._follow, daemon=True).start()
        if not self._got_line.wait(self.first_line_s):
            raise OSError(f"`{' '.join(self.argv)}` printed no power rails within {self.first_line_s:g} s "
                          f"(last line: {self._last_line[:160]!r})")
        return board_total(self._latest)[0]

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def find_tegrastats(root: str, settings: dict) -> List[Sensor]:
    argv = argv_of(settings.get("tegrastats"), "tegrastats")
    if argv is None:
        named = settings.get("tegrastats")
        raise NoSensor(f"no INA3221 rails under {os.path.join(root, 'sys/bus/i2c/drivers')}, and "
                       + (f"the tegrastats command {named!r} does not exist" if named else
                          "no tegrastats on PATH (set the target's sensors.tegrastats to its path)"))
    return [Tegrastats(argv, int(settings.get("tegrastats_interval_ms", 100)))]


# -- hardware throttling counters -------------------------------------------------------------
class SocthermOcProbe(Probe):
    """Orin's soctherm over-current/under-voltage event counters (cumulative since boot)."""

    name = "soctherm_oc"
    sees_throttling = True

    def __init__(self, hwmon: str) -> None:
        self.hwmon = hwmon

    def snapshot(self) -> Dict[str, object]:
        counts = {}
        for path in sorted(glob.glob(os.path.join(self.hwmon, "oc*_event_cnt"))):
            try:
                counts[os.path.basename(path)[: -len("_event_cnt")]] = int(read_text(path))
            except (OSError, ValueError):
                continue
        return {"event_cnt": counts}

    def throttled(self, before: Dict[str, object], after: Dict[str, object]) -> Optional[List[str]]:
        first, last = before.get("event_cnt") or {}, after.get("event_cnt") or {}
        if not first or not last:
            return None
        return [f"soctherm {oc}: {last[oc] - first[oc]} hardware throttling event(s) (under-voltage/over-current)"
                for oc in sorted(first) if oc in last and last[oc] > first[oc]]


def find_soctherm_oc(root: str, settings: dict) -> List[Probe]:
    for hwmon in sorted(glob.glob(os.path.join(root, HWMON))):
        try:
            if read_text(os.path.join(hwmon, "name")) == "soctherm_oc":
                return [SocthermOcProbe(hwmon)]
        except OSError:
            continue
    return []

