"""Faults on an ssh target, with a real sshd on loopback and a TCP proxy of our own between
harness and server: sshd killed mid-run, the link cut mid-case, a device that goes silent,
a runner past the case timeout, a Python without the runtime, and shell metacharacters in
every name that reaches a remote command."""
import dataclasses
import glob
import sys
import threading
import time
from pathlib import Path

import pytest

from harness import Suite
from harness.models import digits_cnn
from harness import settings
from harness.session import BenchSession, SessionOptions
from targets.inventory import parse_target
from harness.testing.sshd import Proxy, make_sshd

CACHE = settings.cache_dir()


def cases(*modes, model=digits_cnn):
    return Suite(model=model, frameworks=("onnxruntime",), modes=modes, name="faults").cases()


def session(tmp_path, table, name="edge", **timing) -> BenchSession:
    options = dict(min_runs=20, min_duration_s=0.1, max_duration_s=2.0, warmup_runs=2)
    options.update(timing)
    return BenchSession(parse_target(name, table, "test"), SessionOptions(results_dir=tmp_path / "results", cache_dir=CACHE,
                                                                          run_id="faults", **options))


def wait_for(predicate, seconds=60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def running_job(workdir: Path, done=()) -> str:
    """The pid file of a runner that is running now (not one of `done`)."""
    for pid_file in glob.glob(str(workdir / "jobs" / "*" / "pid")):
        if pid_file not in done and Path(pid_file).read_text().strip():
            return pid_file
    return ""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_in_background(bench: BenchSession, todo, started_at=None):
    rows, timings = {}, {}
    started_at = {} if started_at is None else started_at  # case id -> time.monotonic() when it began

    def work():
        for case in todo:
            started = started_at[case.case_id] = time.monotonic()
            rows[case.case_id] = bench.run_case(case)
            timings[case.case_id] = time.monotonic() - started

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, rows, timings


@pytest.fixture
def device(tmp_path):
    sshd = make_sshd(tmp_path / "sshd")
    yield sshd
    sshd.stop()


def via_proxy(device, proxy, tmp_path, **fields):
    """A target that reaches the device through the proxy (its own known_hosts entry: the port differs)."""
    known = tmp_path / "known_hosts_proxy"
    known.write_text(device.known_hosts.read_text().replace(f"[127.0.0.1]:{device.port}", f"[127.0.0.1]:{proxy.port}"))
    return device.target(port=proxy.port, known_hosts=str(known), python=sys.executable, **fields)


def test_sshd_killed_mid_run(device, tmp_path):
    workdir = tmp_path / "work"
    bench = session(tmp_path, device.target(python=sys.executable, workdir=str(workdir)), min_duration_s=3.0, max_duration_s=6.0)
    todo = cases("fp32", "fp16", "dynamic-int8", "static-int8")
    try:
        thread, rows, timings = run_in_background(bench, todo)
        first = wait_for(lambda: running_job(workdir))
        wait_for(lambda: todo[0].case_id in rows)  # fp32 finished and written
        wait_for(lambda: running_job(workdir, done=(first,)))  # fp16's runner is measuring
        device.kill()
        thread.join(60)
        assert not thread.is_alive(), "the run hung after sshd died"
    finally:
        bench.close()
    assert rows[todo[0].case_id]["status"] == "ok"
    assert rows[todo[1].case_id]["status"] == "error"
    assert "lost the connection" in rows[todo[1].case_id]["reason"]
    for case in todo[2:]:
        assert rows[case.case_id]["status"] == "error"
        assert "the device stopped answering" in rows[case.case_id]["reason"]
    assert timings[todo[3].case_id] < 2.0  # once gone, a case fails at once
    written = {p.stem for p in (bench.store.dir / "cases").glob("*.json")}
    assert {c.case_id for c in todo} <= written  # the finished case, and every error, are on disk
    from harness.store import load_run

    df = load_run(bench.store.dir)
    assert df.set_index("case_id").loc[todo[0].case_id, "status"] == "ok"


def test_link_cut_mid_case_then_reconnect(device, tmp_path):
    proxy = Proxy(device.port)
    workdir = tmp_path / "work"
    bench = session(tmp_path, via_proxy(device, proxy, tmp_path, workdir=str(workdir)), min_duration_s=2.0, max_duration_s=4.0)
    todo = cases("fp32", "fp16", "dynamic-int8")
    try:
        thread, rows, _ = run_in_background(bench, todo)
        wait_for(lambda: todo[0].case_id in rows)
        pid_file = wait_for(lambda: running_job(workdir))
        pid = int(Path(pid_file).read_text())
        proxy.cut()
        thread.join(120)
        assert not thread.is_alive()
    finally:
        bench.close()
        proxy.close()
    assert rows[todo[0].case_id]["status"] == "ok"
    assert rows[todo[1].case_id]["status"] == "error" and "lost the connection" in rows[todo[1].case_id]["reason"]
    assert rows[todo[2].case_id]["status"] == "ok", rows[todo[2].case_id]["reason"]  # reconnected
    assert not alive(pid)  # the cut-off runner was killed on reconnect, not left to skew the next case
    assert not Path(pid_file).parent.exists()


def test_device_that_stops_answering_fails_the_rest_fast(device, tmp_path):
    """A frozen device with no reconnect window (exactly `retries` attempts); tests/test_ssh_link_drop.py
    covers the window and the device coming back, with a link that goes silent in a network namespace."""
    proxy = Proxy(device.port)
    workdir = tmp_path / "work"
    table = via_proxy(device, proxy, tmp_path, workdir=str(workdir), connect_timeout_s=1.5, keepalive_s=0.5, retries=2, backoff_s=0.1,
                      reconnect_window_s=0)
    bench = session(tmp_path, table, min_duration_s=5.0, max_duration_s=8.0)
    todo = cases("fp32", "fp16", "dynamic-int8", "static-int8")
    try:
        thread, rows, timings = run_in_background(bench, todo)
        wait_for(lambda: running_job(workdir))
        proxy.freeze()  # nothing passes any more, and nothing is closed either
        thread.join(90)
        assert not thread.is_alive()
    finally:
        bench.close()
        proxy.close()
    assert rows[todo[0].case_id]["status"] == "error"
    assert "did not answer within 1.5 s" in rows[todo[0].case_id]["reason"]
    assert timings[todo[0].case_id] < 5.0 + 6.0  # found out within about keepalive + connect timeout, not the case timeout
    gone = [rows[c.case_id]["reason"] for c in todo[1:]]
    assert all("the device stopped answering at" in r and "(2 reconnect attempt(s) over" in r for r in gone), gone
    assert gone[1].split(" (details")[0] == gone[2].split(" (details")[0]  # one clear reason
    assert timings[todo[3].case_id] < 1.5 + 1.5  # one quick connect (the connect timeout), not the reconnect window


def test_runner_past_the_case_timeout_is_killed_on_the_device(device, tmp_path):
    workdir = tmp_path / "work"
    table = device.target(python=sys.executable, workdir=str(workdir), case_timeout_s=4.0)
    bench = session(tmp_path, table, min_duration_s=30.0, max_duration_s=30.0, min_runs=10**9)
    (case,) = cases("fp32")
    try:
        thread, rows, timings = run_in_background(bench, [case])
        pid = int(Path(wait_for(lambda: running_job(workdir))).read_text())
        assert alive(pid)
        thread.join(60)
    finally:
        bench.close()
    row = rows[case.case_id]
    assert row["status"] == "error" and "exceeded the case timeout of 4 s and was killed" in row["reason"]
    assert timings[case.case_id] < 20
    wait_for(lambda: not alive(pid), 5)
    assert list((workdir / "jobs").iterdir()) == []


def numpy_only_python(where: Path) -> str:
    """A venv with numpy and nothing else (no onnxruntime), like a fresh device."""
    import subprocess
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    site = Path(subprocess.run([str(where / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    ours = Path(sysconfig.get_paths()["purelib"])
    for name in ("numpy", "numpy.libs"):
        if (ours / name).exists():
            (site / name).symlink_to(ours / name)
    return str(where / "bin" / "python")


def test_missing_runtime_is_reported_per_case(device, tmp_path):
    python = numpy_only_python(tmp_path / "bare-venv")
    table = device.target(python=python, workdir=str(tmp_path / "work"))
    bench = session(tmp_path, table, name="jetson")
    todo = cases("fp32", "dynamic-int8", "bf16")
    try:
        assert bench.target_info.facts["runtimes"]["onnxruntime"] == "missing"
        assert bench.target_info.facts["runtimes"]["numpy"] != "missing"
        rows = {c.case_id: bench.run_case(c) for c in todo}
    finally:
        bench.close()
    for case in todo[:2]:
        row = rows[case.case_id]
        assert row["status"] == "error"
        assert f"onnxruntime is not installed for {python} on jetson" in row["reason"]
    assert rows[todo[2].case_id]["status"] == "n/a"  # decided on the host, never shipped


def test_shell_metacharacters_are_harmless(device, tmp_path):
    canaries = tmp_path / "canaries"  # a command that runs by accident leaves a file here
    canaries.mkdir()
    evil = f"$(touch {canaries}/1);`touch {canaries}/2`;'\";touch {canaries}/3 #"
    workdir = tmp_path / f"work dir {evil}"
    shim = tmp_path / f"py {evil}" / "python"  # the device's Python, behind a path no shell may split
    shim.parent.mkdir(parents=True)
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    shim.chmod(0o755)
    model = dataclasses.replace(digits_cnn, name="digits $(touch CANARY);`touch CANARY`'\"")  # reaches the device as a file name
    bench = session(tmp_path, device.target(python=str(shim), workdir=str(workdir)), name=f"edge {evil}")
    try:
        (case,) = cases("fp32", model=model)
        row = bench.run_case(case)
        assert bench.target_info.facts["workdir"] == str(workdir)
    finally:
        bench.close()
    assert row["status"] == "ok", row["reason"]
    assert row["target"] == f"edge {evil}" and row["model"] == model.name
    assert (workdir / "cache").is_dir()  # the odd directory was used exactly as given
    assert list(canaries.iterdir()) == []
    assert not list(tmp_path.rglob("CANARY*")) and not list(Path.home().glob("CANARY*"))
