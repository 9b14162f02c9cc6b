"""Raspberry Pi readings through the firmware's `vcgencmd` (standard library only).

Pi 5: `vcgencmd pmic_read_adc` prints the PMIC's ADC, one rail per line:
      VDD_CORE_A current(7)=1.42880000A
      VDD_CORE_V volt(15)=0.76798460V
      EXT5V_V volt(24)=5.05716000V
Power is the sum of V x A over the rails that report both. The 5 V input (EXT5V) has a
voltage but no current, so USB/HAT loads and the PMIC's own losses are not in the figure.
Pi 3/4 have no power sensor at all (their firmware answers pmic_read_adc with an error).

Every Pi: `vcgencmd measure_temp` (temp=55.8'C) and `vcgencmd get_throttled`
(throttled=0x50000): bits 0-3 are conditions now, bits 16-19 the same since boot. The
since-boot bits stay set until reboot, so a window that starts with one set cannot see that
condition happen again inside it: the probe then says "unknown" (what it saw: it happened before
the window) rather than "not throttled".
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from .commands import CommandRunner, argv_of, run_command
from .sensors_base import NoSensor, Probe, Sensor, UnavailableProbe

PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=([-+0-9.eE]+)[AV]\s*$")
TEMP_LINE = re.compile(r"temp=([-0-9.]+)'C")
THROTTLED_LINE = re.compile(r"throttled=(0x[0-9a-fA-F]+)")

# get_throttled bit -> what it means (the same condition "since boot" is bit + 16)
THROTTLE_BITS = {
    0: "under-voltage",
    1: "arm frequency capped",
    2: "throttled",
    3: "soft temperature limit",
}
PMIC_SOURCE = ("vcgencmd pmic_read_adc: sum of V x A over {n} PMIC rails (the 5 V input current is not "
               "reported, so USB/HAT loads and PMIC losses are not included)")


def parse_pmic_read_adc(text: str) -> Dict[str, Tuple[Optional[float], Optional[float]]]:
    """rail -> (volts, amps); either is None when the PMIC does not report it."""
    rails: Dict[str, List[Optional[float]]] = {}
    for line in text.splitlines():
        match = PMIC_LINE.match(line)
        if match:
            rail, unit, value = match.group(1), match.group(2), float(match.group(3))
            rails.setdefault(rail, [None, None])[0 if unit == "V" else 1] = value
    return {rail: (v, a) for rail, (v, a) in rails.items()}


def pmic_power_w(text: str) -> Tuple[float, List[str]]:
    """Sum of V x A over rails with both readings, and those rails' names."""
    both = {rail: v * a for rail, (v, a) in parse_pmic_read_adc(text).items() if v is not None and a is not None}
    return sum(both.values()), sorted(both)


def parse_temp(text: str) -> Optional[float]:
    match = TEMP_LINE.search(text)
    return float(match.group(1)) if match else None


def parse_throttled(text: str) -> Optional[int]:
    match = THROTTLED_LINE.search(text)
    return int(match.group(1), 16) if match else None


def throttle_reasons(before: Optional[int], after: Optional[int]) -> Optional[List[str]]:
    """Why the Pi throttled during a window bracketed by two get_throttled values
    ([] = it did not; None = unknown). A condition counts when it is active at either end
    or its since-boot bit became set in between. A since-boot bit already set at the start
    cannot show another occurrence during the window: unless some condition was seen, the
    answer is then None (`blind_spots` says which and why)."""
    if before is None or after is None:
        return None
    reasons = []
    for bit, what in THROTTLE_BITS.items():
        if (before | after) & (1 << bit):
            reasons.append(f"vcgencmd: {what} (active)")
        elif after & (1 << (bit + 16)) and not before & (1 << (bit + 16)):
            reasons.append(f"vcgencmd: {what} (occurred during the case)")
    if not reasons and blind_spots(before, after):
        return None
    return reasons


def blind_spots(before: int, after: int) -> List[str]:
    """Conditions get_throttled cannot rule out for the window: their since-boot bit was set
    before it began (sticky until reboot) and they were not active at either end."""
    return [what for bit, what in THROTTLE_BITS.items()
            if before & (1 << (bit + 16)) and not (before | after) & (1 << bit)]


class PmicPower(Sensor):
    """Raspberry Pi 5 PMIC rails, summed."""

    name = "vcgencmd:pmic_read_adc"
    kind = "power"
    min_interval_s = 0.25  # one firmware call (a process) per read: keep it off the measured cores

    def __init__(self, vcgencmd: List[str], rails: int, run: CommandRunner = run_command) -> None:
        self.argv = vcgencmd + ["pmic_read_adc"]
        self.run = run
        self.source = PMIC_SOURCE.format(n=rails)

    def read(self) -> float:
        watts, rails = pmic_power_w(self.run(self.argv))
        if not rails:
            raise OSError(f"`{' '.join(self.argv)}` printed no rail with both volts and amps")
        return watts


class VcgencmdProbe(Probe):
    """SoC temperature and the firmware's throttling flags, before and after the window."""

    name = "vcgencmd"
    sees_throttling = True  # get_throttled: under-voltage, frequency capping, throttling, soft temperature limit

    def __init__(self, vcgencmd: List[str], run: CommandRunner = run_command) -> None:
        self.vcgencmd = vcgencmd
        self.run = run

    def _ask(self, command: str) -> str:
        try:
            return self.run(self.vcgencmd + [command])
        except Exception as exc:  # a probe that cannot read reports nothing rather than failing the case
            return f"error: {exc}"

    def snapshot(self) -> Dict[str, object]:
        temp = parse_temp(self._ask("measure_temp"))
        answer = self._ask("get_throttled")
        throttled = parse_throttled(answer)
        snap: Dict[str, object] = {"temps_c": {"vcgencmd": temp} if temp is not None else {},
                                   "get_throttled": None if throttled is None else hex(throttled)}
        if throttled is None:
            snap["error"] = f"`vcgencmd get_throttled` gave no throttled=0x... line: ...{' '.join(answer.split())[-120:]!r}"
        return snap

    def throttled(self, before: Dict[str, object], after: Dict[str, object]) -> Optional[List[str]]:
        return throttle_reasons(_bits(before), _bits(after))

    def unknown(self, before: Dict[str, object], after: Dict[str, object]) -> str:
        """What it saw when it cannot tell: a condition that had already occurred before the
        window (its sticky since-boot bit hides another occurrence during it)."""
        start, end = _bits(before), _bits(after)
        if start is None or end is None:
            return super().unknown(before, after)
        return (f"{', '.join(blind_spots(start, end))} had occurred before the window began "
                f"(get_throttled {before['get_throttled']} at its start: since-boot bits set, none active at "
                f"either end), so one during the window would not show")


def _bits(snap: Dict[str, object]) -> Optional[int]:
    return None if snap.get("get_throttled") is None else int(str(snap["get_throttled"]), 16)


def _vcgencmd(settings: dict) -> Optional[List[str]]:
    return argv_of(settings.get("vcgencmd"), "vcgencmd")


def find_pmic(root: str, settings: dict, run: CommandRunner = run_command) -> List[Sensor]:
    """The Pi 5 PMIC as one power sensor; NoSensor with the reason where it cannot be read."""
    argv = _vcgencmd(settings)
    if argv is None:
        raise NoSensor(f"vcgencmd ({settings.get('vcgencmd') or 'vcgencmd'}) not found; "
                       "install raspberrypi-utils or set the target's sensors.vcgencmd")
    try:
        text = run(argv + ["pmic_read_adc"])
    except Exception as exc:
        raise NoSensor(f"`vcgencmd pmic_read_adc` failed ({exc})") from exc
    _, rails = pmic_power_w(text)
    if not rails:
        raise NoSensor(f"`vcgencmd pmic_read_adc` reports no rail with volts and amps "
                       f"(a Pi before the 5 has no PMIC ADC): {text.strip()[:120]!r}")
    return [PmicPower(argv, len(rails), run)]


def find_vcgencmd_probe(root: str, settings: dict, run: CommandRunner = run_command) -> List[Probe]:
    argv = _vcgencmd(settings)
    if argv is None:  # a Pi without vcgencmd cannot see under-voltage or firmware throttling: say so
        return [UnavailableProbe("vcgencmd", f"vcgencmd ({settings.get('vcgencmd') or 'vcgencmd'}) not found; "
                                             "install raspberrypi-utils or set the target's sensors.vcgencmd")]
    return [VcgencmdProbe(argv, run)]
