"""ExecuTorch programs (`.pte`, XNNPACK delegate) on the emulated Raspberry Pi 5 (issue 21, devices):
the host's executorch writes the programs, the device runs them with the runtime it has, and the
accuracy it measures is the host's within 1 point.

Two devices, the two ExecuTorch runtimes the runner supports (harness/runner/executorch_runtime.py):
  - bookworm (Python 3.11): the official bindings, executorch 1.0.1 beside torch 2.9.1, the newest
    pair with a CPU-only aarch64 torch on PyPI (requirements/emulated-pi/bookworm.txt);
  - trixie (Python 3.13): executorch-numpy-runtime (numpy only, ExecuTorch 1.3.1 inside), no torch.
Both are older than the host's executorch; both read its programs (format ET12). The bookworm
device's second venv (emulated-pi-old) has no ExecuTorch at all: its rows are n/a before anything is
shipped, and so are a program in a format newer than the device's runtime reads.
Emulation is 30-400x slower than a Pi: nothing here looks at a timing figure.
"""
from __future__ import annotations

import importlib.metadata

import pytest

from harness import Suite
from harness import settings
from harness.models import digits_cnn
from harness.quantize import torch_executorch
from harness.quantize.executorch_program import program_version
from harness.session import BenchSession, SessionOptions
from targets.inventory import parse_target
from tests import case_files, emulated_pi

CACHE = settings.cache_dir()
MODES = ("fp32", "static-int8", "dynamic-int8")
SUITE = Suite(name="digits-pte", model=digits_cnn, frameworks=("torch",), modes=MODES)
PTE_CASES = [c for c in SUITE.cases() if c.recipe is not None and c.recipe.execution == "executorch"]


def session(tmp_path, name: str, table: dict) -> BenchSession:
    # few timed calls (timings mean nothing under emulation); the evaluation pass always runs
    options = SessionOptions(results_dir=tmp_path / "results", cache_dir=CACHE, run_id=name, min_runs=3, min_duration_s=0.0,
                             max_duration_s=1.0, warmup_runs=1, case_budget_s=1800.0)
    return BenchSession(parse_target(name, table, "test"), options)


def run_cases(tmp_path, name: str, table: dict, cases=PTE_CASES):
    """{mode: row} of the cases on that target, its run log, and the facts its runner reported."""
    bench = session(tmp_path, name, table)
    try:
        rows = {c.mode: bench.run_case(c) for c in cases}
        return rows, (bench.store.dir / "run.log").read_text(), bench.target_info.facts
    finally:
        bench.close()


@pytest.fixture(scope="module")
def host_rows(tmp_path_factory):
    """The same cases on this x86 host (executorch's own bindings), for the accuracy they must match."""
    rows, _, _ = run_cases(tmp_path_factory.mktemp("host"), "local", {"kind": "local"})
    for mode, row in rows.items():
        assert row["status"] == "ok", (mode, row["reason"])
    return rows


bookworm = emulated_pi.device_fixture("emulated-pi")
trixie = emulated_pi.device_fixture("emulated-pi-trixie", "trixie")


def check_rows(rows: dict, host_rows: dict, python: str, runtime: str, runtime_version: str) -> None:
    assert set(rows) == set(MODES), sorted(rows)
    for mode, row in rows.items():
        assert row["status"] == "ok", (mode, row["reason"])
        assert str(row["device"]).startswith("Raspberry Pi 5") and row["python_version"].startswith(python)
        assert row["runtime"] == runtime and row["runtime_version"] == runtime_version, (row["runtime"], row["runtime_version"])
        host = host_rows[mode]
        assert row["artifact_sha256"] == host["artifact_sha256"]  # the very program the host ran
        assert abs(row["accuracy"] - host["accuracy"]) <= 0.01 + 1e-9, (mode, row["accuracy"], host["accuracy"])
        assert str(row["delegated_ops"]).startswith("xnnpack") and row["delegation_complete"] == host["delegation_complete"]
    print("\n".join(f"{m}: device {r['accuracy']:.4f} host {host_rows[m]['accuracy']:.4f} ({r['runtime']} {r['runtime_version']})"
                    for m, r in rows.items()))


def test_pte_cases_run_with_the_executorch_bindings(bookworm, host_rows, tmp_path):
    rows, _, facts = run_cases(tmp_path, "emulated-pi", bookworm.target())
    check_rows(rows, host_rows, "3.11.", "executorch", "1.0.1")
    assert facts["executorch"]["runtime"] == "executorch" and facts["runtimes"]["executorch"] == "1.0.1"
    # the bindings need torch beside them: both footprints are reported, and torch is the big one
    assert facts["footprint_mb"]["torch"] > facts["footprint_mb"]["executorch"] > 0
    assert all(r["runtime_footprint_mb"] == facts["footprint_mb"]["executorch"] for r in rows.values())


def test_pte_cases_run_with_the_numpy_runtime(trixie, host_rows, tmp_path):
    """No torch on this device: the numpy-only runtime runs the same programs."""
    rows, _, facts = run_cases(tmp_path, "emulated-pi-trixie", trixie.target())
    check_rows(rows, host_rows, "3.13.", "executorch-numpy-runtime", "1.4.0 (ExecuTorch 1.3.1)")
    found = facts["executorch"]
    assert (found["runtime"], found["executorch_version"], found["programs"]) == ("executorch-numpy-runtime", "1.3.1", ["ET12"])
    assert facts["runtimes"]["torch"] == "missing" and set(facts["footprint_mb"]) == {"executorch-numpy-runtime"}


def test_a_device_without_executorch_says_so_before_anything_is_shipped(bookworm, tmp_path):
    """The old venv (torch 2.4.1, no ExecuTorch): every .pte row is n/a, naming what to install."""
    rows, log, facts = run_cases(tmp_path, "emulated-pi-old", bookworm.target(emulated_pi.script().OLD_VENV))
    assert facts["executorch"] == {} and facts["runtimes"]["executorch"] == "missing"
    written = importlib.metadata.version("executorch").split("+")[0]
    for mode, row in rows.items():
        assert row["status"] == "n/a", (mode, row["status"], row["reason"])
        assert "target emulated-pi-old has no ExecuTorch runtime" in row["reason"], row["reason"]
        assert f"pip install executorch=={written}" in row["reason"] and "executorch-numpy-runtime" in row["reason"]
    assert "uploaded artifact" not in log


def test_a_program_newer_than_the_device_runtime_is_na_naming_both(bookworm, host_rows, tmp_path):
    """What the device's runtime reads comes from the device (its executorch 1.0.1's schema); the
    host's program format is one of them, a newer one is refused before the run with both versions."""
    bench = session(tmp_path, "emulated-pi", bookworm.target())
    try:
        info = bench.target_info
    finally:
        bench.close()
    found = info.facts["executorch"]
    assert (found["runtime"], found["version"], found["programs"]) == ("executorch", "1.0.1", ["ET12"]), found
    row = host_rows["fp32"]
    same = case_files.artifact(row)
    assert program_version(same.model_file) == "ET12"
    assert torch_executorch.FP32.artifact_reason(same, info, 1) is None
    newer = case_files.newer_program_copy(row, tmp_path / "newer", b"ET13")
    reason = torch_executorch.FP32.artifact_reason(newer, info, 1)
    written = importlib.metadata.version("executorch").split("+")[0]
    assert reason and "ExecuTorch program ET13" in reason and f"written by executorch {written}" in reason, reason
    assert "target emulated-pi has executorch 1.0.1" in reason and "reads program format ET12" in reason, reason
