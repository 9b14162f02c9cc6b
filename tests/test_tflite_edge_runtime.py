"""The runner on an edge-like environment: a separate virtual environment with only what
requirements/runner-litert.txt lists (numpy and ai-edge-litert, no TensorFlow, no torch),
declared as a target whose `python` is that environment's interpreter. TFLite cases from
both sources run there, and the runner's result shows TensorFlow was never imported.

The environment is built on first use under .venv-runner-litert/ (pip, from PyPI) and
rebuilt when the requirements file changes."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST_TIMING, REPO_ROOT, SuiteRun

VENV = REPO_ROOT / ".venv-runner-litert"
REQUIREMENTS = REPO_ROOT / "requirements" / "runner-litert.txt"
FORBIDDEN = ("tensorflow", "tf_keras", "keras", "torch", "tflite_runtime")

SUITE = """
from harness import Suite
from harness.models import digits_cnn

suite = Suite(model=digits_cnn, frameworks=("tflite",), modes=("fp32", "static-int8"), budgets={"static-int8": 1.5})
test_case = suite.pytest_cases()
"""


def litert_python() -> Path:
    """The LiteRT-only environment's interpreter, (re)built when the requirements change."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".quantbench-installed"
    want = hashlib.sha256(REQUIREMENTS.read_bytes() + sys.version.encode()).hexdigest()
    lock_path = REPO_ROOT / ".cache" / "venv-runner-litert.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once build it once
        if python.is_file() and stamp.is_file() and stamp.read_text() == want:
            return python
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=300)
        proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "-r", str(REQUIREMENTS)], capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            pytest.fail(f"could not build the LiteRT-only environment {VENV} from {REQUIREMENTS} "
                        f"(pip exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-1500:]}")
        stamp.write_text(want)
    return python


@pytest.fixture(scope="module")
def edge_python() -> Path:
    return litert_python()


def test_the_environment_has_litert_and_no_tensorflow(edge_python):
    probe = ("import importlib.util, json; print(json.dumps({m: importlib.util.find_spec(m) is not None "
             f"for m in {('ai_edge_litert', 'numpy') + FORBIDDEN!r}}}))")
    found = json.loads(subprocess.run([str(edge_python), "-c", probe], capture_output=True, text=True, check=True).stdout)
    assert found["ai_edge_litert"] and found["numpy"]
    assert not any(found[m] for m in FORBIDDEN), found


@pytest.fixture(scope="module")
def edge_run(edge_python, tmp_path_factory) -> SuiteRun:
    work = tmp_path_factory.mktemp("edge")
    (work / "test_edge_digits.py").write_text(SUITE)
    (work / "targets.toml").write_text(f'[targets.edge]\nkind = "local"\npython = "{edge_python}"\nthreads = 1\n')
    results = work / "results"
    cmd = [sys.executable, "-m", "pytest", str(work / "test_edge_digits.py"), "-p", "harness.pytest_plugin",
           "-p", "no:cacheprovider", "-q", "--target=edge", f"--qb-inventory={work / 'targets.toml'}",
           f"--qb-results-dir={results}", "--qb-run-id=edge", f"--rootdir={work}", *FAST_TIMING]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1800, env=dict(os.environ))
    return SuiteRun(proc.returncode, proc.stdout + proc.stderr, results / "edge")


def test_tflite_cases_run_on_the_litert_only_environment(edge_run, edge_python):
    assert edge_run.returncode == 0, edge_run.output[-3000:]
    df = edge_run.results
    assert len(df) == 4 and set(df["status"]) == {"ok"}, df[["case_id", "status", "reason"]].to_string()
    for _, row in df.iterrows():
        assert row["target"] == "edge" and row["threads"] == 1
        assert row["runtime"] == "ai_edge_litert.interpreter"
        result = json.loads((edge_run.run_dir / "work" / row["case_id"] / "result.json").read_text())
        assert result["system"]["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
        imported = set(result["imported_modules"])
        assert "ai_edge_litert" in imported and "numpy" in imported
        assert not imported & set(FORBIDDEN), sorted(imported & set(FORBIDDEN))
        assert result["runtime_details"]["python"] == str(edge_python)  # the runner ran in that environment
    for source in ("keras", "litert-torch"):
        fp32 = edge_run.row(f"digits-cnn-tflite-fp32-{source}-b1")
        static = edge_run.row(f"digits-cnn-tflite-static-int8-{source}-b1")
        assert fp32["accuracy"] >= 0.95 and 100 * (fp32["accuracy"] - static["accuracy"]) <= 1.5
