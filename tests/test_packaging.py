"""quantbench as a user installs it: the wheel, in a fresh virtual environment outside the
repository, with a suite of the user's own (an ONNX model made here with onnx.helper, and its
data) in a project folder of theirs. `pytest suites/ --target=local` finds the plugin through its
pytest11 entry point (no conftest.py, no -p, no PYTHONPATH), and results/, the artifact cache and
the history database land under the project folder, none under site-packages.

The new environment sees the shared environment's site-packages through a .pth file naming that
folder (so torch, onnxruntime, ... are not installed again); .pth files inside that folder are
not processed then, so an editable install of a checkout there is not picked up: `harness` is
the wheel's copy. The wheel goes in with --no-deps.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

SETTINGS_ENV = ("PYTHONPATH", "QUANTBENCH_CACHE", "QUANTBENCH_RESULTS_DIR", "QUANTBENCH_RESULTS_DB",
                "QUANTBENCH_INVENTORY", "QUANTBENCH_PROFILE", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}


def _build_wheel(out: Path) -> Path:
    """The wheel from a copy of the sources (building in the checkout would leave build/ and
    *.egg-info there)."""
    src = out / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    for package in ("harness", "targets"):
        shutil.copytree(REPO_ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out / "dist"), str(src)], capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (out / "dist").glob("quantbench-*.whl")
    return wheel


def _venv(where: Path, wheel: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=300)
    python = where / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "shared_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return site


def _user_project(project: Path) -> None:
    """An ONNX classifier of the user's own (8 features, 3 classes) and its data, and a suite."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    weights = rng.normal(size=(8, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["hidden"], name="MatMul_0"),
         helper.make_node("Add", ["hidden", "B"], ["logits"], name="Add_0")],
        "user-linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    (project / "models").mkdir(parents=True)
    onnx.save(model, project / "models" / "linear.onnx")
    x = rng.normal(size=(96, 8)).astype(np.float32)
    labels = (x @ weights + bias).argmax(axis=1).astype(np.int64)
    np.savez(project / "models" / "data.npz", x_eval=x[:64], y_eval=labels[:64], x_calib=x[64:])
    (project / "suites").mkdir()
    (project / "suites" / "test_linear.py").write_text(textwrap.dedent("""\
        from pathlib import Path

        from harness import Suite
        from harness.models import onnx_model

        MODELS = Path(__file__).resolve().parent.parent / "models"
        linear = onnx_model("user-linear", MODELS / "linear.onnx", data=MODELS / "data.npz")
        suite = Suite(name="user", model=linear, frameworks=("onnxruntime",), modes=("fp32", "dynamic-int8"))
        test_case = suite.pytest_cases()
        """))


def test_installed_wheel_runs_a_users_suite_and_keeps_everything_in_the_project(tmp_path):
    wheel = _build_wheel(tmp_path / "build")
    names = zipfile.ZipFile(wheel).namelist()
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "[pytest11]" in zipfile.ZipFile(wheel).read(entry_points).decode()
    site = _venv(tmp_path / "venv", wheel)
    before = set(os.listdir(site))
    project = tmp_path / "project"
    _user_project(project)
    bin_dir = tmp_path / "venv" / "bin"

    version = subprocess.run([str(bin_dir / "quantbench"), "--version"], cwd=project, capture_output=True, text=True,
                             env=_env(), timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("quantbench "), version.stdout + version.stderr
    where = subprocess.run([str(bin_dir / "python"), "-c", "import harness; print(harness.__file__)"], cwd=project,
                           capture_output=True, text=True, env=_env(), timeout=120)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr  # the wheel's copy, not a checkout

    run = subprocess.run([str(bin_dir / "python"), "-m", "pytest", "suites/", "--target=local", "-q",
                          "--min-runs=10", "--min-duration=0.05", "--max-duration=1", "--warmup-runs=1", "--qb-dashboard=off"],
                         cwd=project, capture_output=True, text=True, env=_env(), timeout=1200)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "2 passed" in run.stdout and "quantbench: run " in run.stdout, run.stdout[-3000:]
    report = subprocess.run([str(bin_dir / "quantbench"), "report", "latest"], cwd=project, capture_output=True,
                            text=True, env=_env(), timeout=300)
    assert report.returncode == 0, report.stdout + report.stderr
    assert str(project / "results") in report.stdout and "user-linear" in report.stdout, report.stdout

    runs = [p for p in (project / "results").iterdir() if (p / "cases").is_dir()]
    assert len(runs) == 1 and (runs[0] / "results.parquet").is_file()
    assert (project / "results" / "history.sqlite").is_file()
    assert any((project / ".cache" / "quantbench" / "artifacts").iterdir())
    assert set(os.listdir(site)) == before  # nothing new beside the installed packages
    for name in ("results", ".cache", "targets.toml"):
        assert not (site / name).exists() and not (site / "harness" / name).exists()
