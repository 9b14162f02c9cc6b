"""A speedup is only as trustworthy as its fp32 side: when the fp32 baseline the speedup divides
by ran throttled (its paired rounds beside the case, or its row with one round) or stopped at its
time cap, the row says so (baseline_throttled, baseline_valid, baseline_timing_note), the table
marks the speedup, and the candidate rule does not ship it. Before, only the baseline's p50s were
kept and the row said throttled=False, valid=True while its ratio was inflated.

Real runner processes on the local target with the raspberry-pi-4 profile; the Pi's `vcgencmd`
is replayed from recorded output (tests/fixtures/bin/vcgencmd.py): a Pi that reports under-voltage
and throttling (raspberry-pi-5's recorded throttled=0x50005) while the fp32 baseline runs, and
nothing (throttled=0x0) while the case does."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from harness import Suite, Timing
from harness.baselines import baseline_timing
from harness.history.candidate import candidate
from harness import settings
from harness.report import comparison_table, frame
from harness.session import BenchSession, SessionOptions
from targets.inventory import parse_target
from tests import onnx_models
from tests.replay import FIXTURES, SENSORS

CACHE = settings.cache_dir()
FP32, DYNAMIC = "logreg-onnxruntime-fp32-b1", "logreg-onnxruntime-dynamic-int8-dyn-b1"

# vcgencmd for a job: the recorded Pi that throttles while an fp32 baseline runs (its own row's job,
# or a baseline round beside the case), the quiet one otherwise. The runner's cwd is its job's folder.
PICK = """import os, runpy, sys
quiet, throttling = sys.argv.pop(1), sys.argv.pop(1)
baseline = "baseline-round" in os.getcwd() or "-fp32-" in os.path.basename(os.getcwd())
sys.argv[1:1] = [throttling if baseline else quiet]
runpy.run_path(sys.argv[0].replace("pick.py", "vcgencmd.py"), run_name="__main__")
"""


@pytest.fixture(scope="module")
def logreg(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logreg")
    return onnx_models.logreg_spec(folder)


@pytest.fixture(scope="module")
def vcgencmd(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("vcgencmd")
    shutil.copy(FIXTURES / "bin" / "vcgencmd.py", folder / "vcgencmd.py")
    (folder / "pick.py").write_text(PICK)
    quiet = folder / "quiet"
    quiet.mkdir()
    shutil.copy(SENSORS / "raspberry-pi-4" / "measure_temp.txt", quiet / "measure_temp.txt")
    (quiet / "get_throttled.txt").write_text("throttled=0x0\n")
    return [sys.executable, str(folder / "pick.py"), str(quiet), str(SENSORS / "raspberry-pi-5")]


def run(logreg, vcgencmd, tmp_path: Path, rounds: int) -> dict[str, dict]:
    config = parse_target("pi4", {"kind": "local", "profile": "raspberry-pi-4",
                                  "sensors": {"idle_s": 0.1, "vcgencmd": vcgencmd, "root": str(tmp_path)}}, "test")
    options = SessionOptions(results_dir=tmp_path / "results", cache_dir=CACHE, threads=1, run_id=f"r{rounds}", rounds=rounds)
    suite = Suite(model=logreg, modes=("fp32", "dynamic-int8"), name="baseline-timing",
                  budgets={"dynamic-int8": 100.0},
                  timing=Timing(warmup_runs=2, min_runs=20, min_duration_s=0.1, max_duration_s=2.0))
    session = BenchSession(config, options)
    try:
        return {case.case_id: session.run_case(case) for case in suite.cases()}
    finally:
        session.close()


@pytest.mark.parametrize("rounds", [1, 2])
def test_a_throttled_fp32_baseline_makes_the_speedup_say_so(logreg, vcgencmd, tmp_path, rounds):
    rows = run(logreg, vcgencmd, tmp_path, rounds)
    row, fp32 = rows[DYNAMIC], rows[FP32]
    assert row["status"] == fp32["status"] == "ok", (row["reason"], fp32["reason"])
    assert fp32["throttled"] is True  # the premise: the Pi throttled while the fp32 ran, and not while the case did
    assert row["throttled"] is False and row["valid"] is True and row["speedup"] is not None
    assert row["baseline_throttled"] is True and row["baseline_valid"] is True
    where = f"row {FP32}" if rounds == 1 else "round 1/2"
    assert row["baseline_timing_note"].startswith(f"fp32 baseline {where} ran throttled (vcgencmd: under-voltage (active)")
    judged = candidate(row, 100.0)  # an accuracy budget of 100 points: only the timing decides
    assert not judged.eligible and judged.untrusted
    assert "not the device's normal speed" in judged.why
    table = comparison_table(frame(rows.values()))
    line = next(line for line in table.splitlines() if "dynamic-int8" in line)
    assert f"{row['speedup']:.2f}x" in line and "!" in line.split(f"{row['speedup']:.2f}x", 1)[1][:20]
    assert "speedup !: its fp32 baseline ran throttled or missed its minimums" in table


def test_a_time_capped_or_unknown_baseline_round():
    """Runner results of the baseline's paired rounds: one stopped at its time cap; a probe
    that could not tell leaves baseline_throttled unknown, not False."""
    quiet = {"valid": True, "power": {"throttled": False, "throttle_reasons": []}}
    capped = {"valid": False, "power": {"throttled": False, "throttle_reasons": []}}
    blind = {"valid": True, "power": {"throttled": None, "throttle_reasons": []}}
    assert baseline_timing(None, [quiet, quiet]) == {"baseline_throttled": False, "baseline_valid": True}
    out = baseline_timing(None, [quiet, capped])
    assert out["baseline_valid"] is False and out["baseline_throttled"] is False
    assert out["baseline_timing_note"] == "fp32 baseline round 2/2 stopped at its time cap before its minimums (valid=false)"
    assert baseline_timing(None, [quiet, blind])["baseline_throttled"] is None
    # one round: the fp32 row itself (as the database gives it back: 0/1)
    assert baseline_timing({"status": "ok", "case_id": FP32, "valid": 0, "throttled": 0}, [])["baseline_valid"] is False
    assert baseline_timing({"status": "error"}, []) == {}
