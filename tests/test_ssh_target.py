"""The onnxruntime digits suite on an ssh target served by a real sshd on loopback: the same
rows as on the local target, the target columns of an ssh device, a second run that uploads
nothing, and `quantbench targets` / `targets check` / `targets clean` against that device."""
import importlib.metadata
import os
import socket
import subprocess
import sys

import pandas as pd
import pytest

from harness.testing.sshd import inventory_toml, make_sshd
from tests.conftest import FAST_TIMING, SuiteRun

SUITE = """
from harness import Suite
from harness.models import digits_cnn

suite = Suite(model=digits_cnn, frameworks=("onnxruntime",),
              modes=("fp32", "fp16", "bf16", "dynamic-int8", "static-int8", "int16x8"), budgets={"static-int8": 1.0})
test_case = suite.pytest_cases()
"""


def cache_listing(root):
    """Every file under the device's cache, with the identity of its bytes on disk."""
    listing = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            listing[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return listing


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    sshd = make_sshd(tmp_path_factory.mktemp("sshd"))
    yield sshd
    sshd.stop()


@pytest.fixture(scope="module")
def setup(device, tmp_path_factory):
    work = tmp_path_factory.mktemp("ssh-suite")
    (work / "test_digits_ort.py").write_text(SUITE)
    workdir = work / "device-workdir"
    inventory = work / "targets.toml"
    inventory.write_text(inventory_toml({"edge": device.target(python=sys.executable, workdir=str(workdir), profile="generic-linux")}))
    return work, inventory, workdir


@pytest.fixture(scope="module")
def runs(setup):
    work, inventory, workdir = setup
    results = work / "results"

    def run(run_id, target):
        cmd = [sys.executable, "-m", "pytest", str(work / "test_digits_ort.py"), "-p", "harness.pytest_plugin", "-p", "no:cacheprovider",
               "-q", f"--qb-results-dir={results}", f"--qb-run-id={run_id}", f"--rootdir={work}", f"--target={target}",
               f"--qb-inventory={inventory}", *FAST_TIMING]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=900)
        return SuiteRun(proc.returncode, proc.stdout + proc.stderr, results / run_id)

    local = run("local", "local")
    first = run("ssh-1", "edge")
    after_first = cache_listing(workdir / "cache")
    second = run("ssh-2", "edge")
    after_second = cache_listing(workdir / "cache")
    return local, first, second, after_first, after_second


def test_runs_pass(runs):
    for run in runs[:3]:
        assert run.returncode == 0, run.output[-3000:]


def test_same_rows_as_local(runs):
    local, first, _, _, _ = runs
    here, there = local.results.set_index("case_id"), first.results.set_index("case_id")
    assert sorted(here.index) == sorted(there.index)
    for case_id in here.index:
        a, b = here.loc[case_id], there.loc[case_id]
        for column in ("status", "framework", "mode", "recipe", "size_bytes", "artifact_sha256", "runtime", "runtime_version"):
            assert a[column] == b[column] or (pd.isna(a[column]) and pd.isna(b[column])), (case_id, column, a[column], b[column])
        if a["status"] == "n/a":
            assert a["reason"] == b["reason"]
        else:  # same runtime, same CPU: the same numbers come out
            assert a["accuracy"] == b["accuracy"], case_id
            assert b["n_runs"] >= (20 if b["valid"] else 1) and b["latency_p50_ms"] > 0  # 20 unless the 2 s cap came first


def test_target_columns(runs):
    _, first, _, _, _ = runs
    df = first.results
    assert set(df["target"]) == {"edge"}
    assert set(df["target_kind"]) == {"ssh"}
    assert set(df["profile"]) == {"generic-linux"}
    ok = df[df["status"] == "ok"]
    assert set(ok["host"]) == {socket.gethostname()}
    assert set(ok["python_version"]) == {".".join(map(str, sys.version_info[:3]))}
    import json

    run_json = json.loads((first.run_dir / "run.json").read_text())
    assert run_json["target"]["kind"] == "ssh"
    assert run_json["target"]["facts"]["ssh"].startswith("root@127.0.0.1:") or "@127.0.0.1:" in run_json["target"]["facts"]["ssh"]
    assert run_json["target"]["facts"]["runtimes"]["onnxruntime"] == importlib.metadata.version("onnxruntime")
    # the device's CPU flags, read on the device (recipes such as torch fp16 check them)
    from harness.runner import system

    assert run_json["target"]["facts"]["cpu_flags"] == system.cpu_flags() != ""


def test_second_run_uploads_nothing(runs):
    _, first, second, after_first, after_second = runs
    first_log = (first.run_dir / "run.log").read_text()
    second_log = (second.run_dir / "run.log").read_text()
    assert "uploaded runner" in first_log and "artifact (" in first_log and "inputs (" in first_log
    ssh_lines = [line for line in second_log.splitlines() if line.startswith("[ssh ")]
    ok_cases = int((second.results["status"] == "ok").sum())
    assert len(ssh_lines) == ok_cases > 0
    assert all(line.endswith("uploaded nothing (everything was cached)") for line in ssh_lines), ssh_lines
    assert after_second == after_first  # not one file rewritten on the device
    assert not any(name.startswith(".tmp-") for name in after_first)  # uploads were renamed into place


def test_job_directories_are_removed(setup, runs):
    _, _, workdir = setup
    assert list((workdir / "jobs").iterdir()) == []


def test_targets_list_and_check(setup, runs, device):
    work, inventory, workdir = setup
    cli = [sys.executable, "-m", "harness.cli", "targets"]
    listed = subprocess.run(cli + ["--inventory", str(inventory)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert f"@127.0.0.1:{device.port}" in listed.stdout and "edge" in listed.stdout and "ssh" in listed.stdout
    check = subprocess.run(cli + ["check", "edge", "--inventory", str(inventory)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    out = check.stdout
    assert f"onnxruntime {importlib.metadata.version('onnxruntime')}" in out
    assert f"numpy {importlib.metadata.version('numpy')}" in out
    assert f"MB free in {workdir}" in out
    assert f"python    {sys.executable}" in out
    for key in ("device", "os", "memory", "power", "probes", "governor"):
        assert f"  {key} " in out


def test_targets_clean(setup, runs):
    work, inventory, workdir = setup
    files = len(cache_listing(workdir / "cache"))
    clean = subprocess.run([sys.executable, "-m", "harness.cli", "targets", "clean", "edge", "--inventory", str(inventory)],
                           capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stderr
    assert f"removed {files} file(s)" in clean.stdout
    assert cache_listing(workdir / "cache") == {}
    assert (workdir / ".quantbench-workdir").is_file()
