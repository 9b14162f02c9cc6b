"""scripts/gpu_check.sh without a GPU: the self-check runs for real, so the GPU check cannot rot.

It installs a wheel made here into its layered venv, imports the host side in that Python,
probes the cuda target, rehearses the timing benchmark on the CPU, writes its folder within
the device tool's limits (at most 8 files, no deeper than 2 folders) and exits 0 saying it
found no GPU. On a machine with a GPU it is run with --self-check.
"""
import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.test_cuda_target import CACHE, GPU

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def make_wheel(folder: Path, name: str, version: str, module_text: str) -> Path:
    """A pure-Python wheel written by hand (what pip download brings, without a build tool)."""
    files = {
        f"{name}/__init__.py": module_text,
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(text.encode())}" for path, text in files.items()]
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(record + [f"{name}-{version}.dist-info/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


def run_check(*args, env=None, timeout=600):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})


def test_self_check_without_a_gpu(tmp_path):
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "qb_gpu_check_probe", "1.2", "VALUE = 42\n")
    out = tmp_path / "out"
    proc = run_check(out, "--wheels", wheels, *(("--self-check",) if GPU else ()))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    if GPU is None:
        assert "found no GPU: running the self-check" in output
    summary = (out / "summary.txt").read_text()
    assert "mode: self-check" in summary and "verdict: PASSED" in summary
    assert "the GPU run is still to be done" in summary
    # the brought wheel went into the layered venv, and that Python imports it
    assert "qb-gpu-check-probe 1.2 (qb_gpu_check_probe) imports" in summary and "a venv layered over" in summary
    assert "PASS  host side: 12 modules import" in summary and "the cuda target's probe ran" in summary
    timing = json.loads((out / "timing_sync.json").read_text())
    assert timing["target_kind"] == "local" and timing["passed"] is None  # a rehearsal: nothing gated
    (chain,) = timing["models"]
    assert chain["model"] == "chain" and chain["p50_ms"]["quantbench_device"] > 0 and chain["p50_ms"]["sync"] > 0
    # what the device tool brings back: at most 8 files, nothing deeper than 2 folders (here: none)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu_check.log", "gpu_check.tar.gz", "summary.txt", "timing_sync.json"]
    assert all(p.is_file() for p in out.iterdir())
    log = (out / "gpu_check.log").read_text()
    assert "=== host side:" in log and "=== timing benchmark rehearsal:" in log and "gpu_check: exit 0" in log


def test_bad_arguments_stop_before_anything_runs(tmp_path):
    proc = run_check(tmp_path / "out", "--budget-s", "5", timeout=120)
    assert proc.returncode == 2
    assert "--budget-s must be at least 60" in proc.stderr
    assert not (tmp_path / "out").exists()
    missing = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHON": "/nonexistent/python3"})
    assert missing.returncode == 2 and "no Python '/nonexistent/python3' here" in missing.stderr


def test_a_wheel_that_does_not_install_stops_the_check_loudly(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip file")
    out = tmp_path / "out"
    proc = run_check(out, "--wheels", wheels, "--self-check", timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:]
    summary = (out / "summary.txt").read_text()
    assert "FAIL  the check itself: installing the brought wheels failed" in summary
    assert "verdict: FAILED" in summary


def _gpu_check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("quantbench_gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_gpu_checks_reject_rows_measured_without_a_gpu(tmp_path):
    """The GPU-mode verdict runs only on a GPU machine, whose minutes are scarce: run it here on
    a real CPU row, where it must fail for exactly the GPU figures the row lacks."""
    from harness import Suite
    from harness.models import digits_cnn
    from harness.session import BenchSession, SessionOptions
    from targets.base import TargetConfig

    gc = _gpu_check_module()
    options = SessionOptions(results_dir=tmp_path / "results", min_runs=10, min_duration_s=0.05, max_duration_s=1,
                             warmup_runs=2, run_id="cpu-rows", cache_dir=CACHE)
    session = BenchSession(TargetConfig(name="local", kind="local"), options)
    try:
        session.run_case(Suite(model=digits_cnn, frameworks=("torch",), modes=("fp32",), name="gpu-check").cases()[0])
    finally:
        session.close()
    out = tmp_path / "out"
    out.mkdir()
    checks, sections = [], []
    step = gc.StepResult(0, "", 1.0)
    gc.digits_verdict(session.store.dir, step, gc.GPU_MODE, "NVIDIA H200", out, checks, sections)
    by_name = {c.name: c for c in checks}
    assert by_name["digits suite on cuda"].ok  # the run itself was fine
    fp32 = by_name["digits torch fp32"]
    assert not fp32.ok
    assert "no gpu_mem_mb, gpu_mem_peak_allocated_mb, energy_mj_per_inf" in fp32.detail
    assert "is not NVML" in fp32.detail and "not 'NVIDIA H200'" in fp32.detail
    assert by_name["digits torch bf16"].detail == "0 rows (expected 1)" and not by_name["digits torch fp16"].ok
    assert sorted(p.name for p in out.iterdir()) == ["results.csv", "run.json"]
    assert "fp32" in sections[0][1][0] and "power_source: none" in sections[0][1][0]
    rehearsal = []
    gc.digits_verdict(session.store.dir, step, gc.REHEARSAL, None, out, rehearsal, [])
    assert [c.name for c in rehearsal if c.ok] == ["digits suite on local", "digits torch fp32"]
