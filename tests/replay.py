"""Helpers for tests of device sensors that cannot exist on a test machine: recorded sysfs
trees and tool output under tests/fixtures/sensors/, tools replayed by tests/fixtures/bin/,
and one real case measured by the real runner on the local target with a device profile."""
from __future__ import annotations

import sys
from pathlib import Path

from harness import Suite
from harness.models import digits_cnn
from harness import settings
from harness.session import BenchSession, SessionOptions
from targets.inventory import parse_target

FIXTURES = Path(__file__).parent / "fixtures"
SENSORS = FIXTURES / "sensors"


def vcgencmd(recorded: str) -> list[str]:
    """The `sensors.vcgencmd` setting that replays tests/fixtures/sensors/<recorded>/."""
    return [sys.executable, str(FIXTURES / "bin" / "vcgencmd.py"), str(SENSORS / recorded)]


def tegrastats(recorded: str) -> list[str]:
    """The `sensors.tegrastats` setting that replays tests/fixtures/sensors/tegrastats/<recorded>.txt."""
    return [sys.executable, str(FIXTURES / "bin" / "tegrastats.py"), str(SENSORS / "tegrastats" / f"{recorded}.txt")]


def fp32_case():
    return Suite(model=digits_cnn, frameworks=("onnxruntime",), modes=("fp32",), name="sensors").cases()[0]


def measure_one_case(tmp_path: Path, name: str, profile: str, sensors: dict) -> tuple[dict, dict]:
    """(row, runner result) of the fp32 digits case on a local target with this profile."""
    config = parse_target(name, {"kind": "local", "profile": profile, "sensors": {"idle_s": 0.3, **sensors}}, "test")
    options = SessionOptions(results_dir=tmp_path / "results", cache_dir=settings.cache_dir(),
                             min_runs=20, min_duration_s=0.3, max_duration_s=2, warmup_runs=2, run_id=name)
    session = BenchSession(config, options)
    try:
        case = fp32_case()
        row = session.run_case(case)
    finally:
        session.close()
    import json

    result = json.loads((session.store.dir / "work" / case.case_id / "result.json").read_text())
    return row, result
