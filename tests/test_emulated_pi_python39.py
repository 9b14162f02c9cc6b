"""The runner on the oldest Python we can stand up as a device: Debian bullseye arm64, CPython 3.9
(scripts/emulated_pi.py --userland bullseye), with the last cp39 wheels of numpy (2.0.2),
onnxruntime (1.19.2) and ai-edge-litert (2.1.0). The runner is written for Python 3.8+; 3.9 and
3.11 are what the tests run it on (docs/architecture.md says so)."""
from __future__ import annotations


import pytest

from harness import Suite
from harness.models import digits_cnn
from harness import settings
from harness.session import BenchSession, SessionOptions
from targets.inventory import parse_target
from tests import emulated_pi

CACHE = settings.cache_dir()
SUITE = Suite(name="digits-py39", model=digits_cnn, frameworks=("onnxruntime", "tflite"), modes=("fp32", "dynamic-int8"))


@pytest.fixture(scope="module")
def bullseye(tmp_path_factory):
    device = emulated_pi.start(tmp_path_factory.mktemp("emulated-pi-bullseye"), "bullseye")
    yield device
    emulated_pi.stop(device)


def test_runner_on_python_39(bullseye, tmp_path):
    options = SessionOptions(results_dir=tmp_path / "results", cache_dir=CACHE, run_id="py39", min_runs=3, min_duration_s=0.0,
                             max_duration_s=1.0, warmup_runs=1, case_budget_s=1800.0)
    bench = BenchSession(parse_target("emulated-pi-bullseye", bullseye.target(), "test"), options)
    todo = [c for c in SUITE.cases() if c.framework == "onnxruntime" or (c.recipe and c.recipe.source == "keras" and c.mode == "fp32")]
    try:
        facts = bench.target_info.facts
        rows = [bench.run_case(c) for c in todo]
    finally:
        bench.close()
    assert facts["python_version"].startswith("3.9.") and facts["machine"] == "aarch64"
    assert facts["os_release"] == "Debian GNU/Linux 11 (bullseye)"
    assert facts["runtimes"] == {"numpy": "2.0.2", "onnxruntime": "1.19.2", "tflite": "2.1.0", "torch": "missing",
                                 "executorch": "missing"}
    assert facts["executorch"] == {}  # no ExecuTorch runtime (the numpy one needs Python >= 3.12)
    assert {r["framework"] for r in rows} == {"onnxruntime", "tflite"}
    for row in rows:
        assert row["status"] == "ok", (row["case_id"], row["reason"])
        assert row["python_version"].startswith("3.9.")
        assert row["accuracy"] > 0.9
