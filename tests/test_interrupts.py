"""Ctrl-C, SIGTERM and SIGKILL during a real run: no runner process outlives its run.

Each run is `pytest suite -p harness.pytest_plugin` in a fresh process, as a user starts it.
The suite has a fast case and a slow one (a 600 s timed loop): the signal arrives while
the slow case's runner is measuring, after the fast case's row was written.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from targets.runner_registry import RunnerRegistry, alive, group_members, start_ticks
from tests import onnx_models

SUITE = """
from pathlib import Path
from harness import Suite, Timing
from harness.models import onnx_model

HERE = Path(__file__).parent
model = onnx_model("logreg", HERE / "logreg.onnx", data=HERE / "data.npz")
fast = Suite(name="fast", model=model, modes=("fp32",),
             timing=Timing(warmup_runs=1, min_runs=5, min_duration_s=0.05, max_duration_s=1.0))
slow = Suite(name="slow", model=model, modes=("fp32", "dynamic-int8"),
             timing=Timing(warmup_runs=1, min_runs=5, min_duration_s=600.0, max_duration_s=600.0))
test_fast = fast.pytest_cases()
test_slow = slow.pytest_cases()
"""
FAST_CASE = "logreg-onnxruntime-fp32-b1"
SLOW_CASE = "logreg-onnxruntime-dynamic-int8-dyn-b1"


@pytest.fixture
def suite_dir(tmp_path):
    x_train, y_train, x_calib, x_eval, y_eval = onnx_models.digits_flat()
    onnx_models.logistic_regression(tmp_path / "logreg.onnx")
    onnx_models.write_npz(tmp_path / "data.npz", x_eval, y_eval, x_calib)
    (tmp_path / "test_interrupted.py").write_text(SUITE)
    return tmp_path


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT's default action in the run's process, as a user's terminal gives it. A test process
    started in the background of a non-interactive shell (`nohup ... &`) has SIGINT ignored, which
    its children inherit, and Python then installs no KeyboardInterrupt handler: the signals these
    tests send would be ignored and the premise, a Ctrl-C, would not hold."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Run:
    """One `pytest` run in a fresh process (its own session, so only our signals reach it)."""

    def __init__(self, folder: Path, run_id: str, *extra: str) -> None:
        self.folder, self.run_id = folder, run_id
        self.run_dir = folder / "results" / run_id
        self.log = folder / f"{run_id}.out"
        cmd = [sys.executable, "-m", "pytest", str(folder / "test_interrupted.py"), "-p", "harness.pytest_plugin",
               "-p", "no:cacheprovider", "-q", f"--rootdir={folder}", f"--qb-results-dir={folder / 'results'}",
               f"--qb-run-id={run_id}", f"--qb-cache-dir={folder / 'cache'}", f"--qb-results-db=sqlite:///{folder / 'history.sqlite'}",
               *extra]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_ctrl_c_as_in_a_terminal)

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, seconds: float = 120.0) -> int:
        return self.proc.wait(seconds)

    def stop(self) -> None:  # test cleanup: this run's process group, if anything is left of it
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def wait_for(predicate, what: str, seconds: float = 180.0, run: Run = None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if run is not None and run.proc.poll() is not None:
            raise AssertionError(f"run {run.run_id} exited ({run.proc.returncode}) before {what}:\n{run.output()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def slow_runner(run: Run):
    """(pid, start ticks) of the run's slow case runner, once it is running."""
    def find():
        for _, record in RunnerRegistry(run.folder / "cache").records():
            if record.case_id == SLOW_CASE and record.owner_pid == run.proc.pid:
                return record.runner_pid, record.runner_ticks
        return None
    pid, ticks = wait_for(find, f"the slow case's runner of {run.run_id}", run=run)
    assert (run.run_dir / "cases" / f"{FAST_CASE}.json").is_file()  # the fast case finished first
    return pid, ticks


def assert_gone(pid: int, ticks) -> None:
    wait_for(lambda: not alive(pid, ticks) and not group_members(pid), f"runner {pid} and its process group to end", 10)


def assert_report_written(run: Run) -> None:
    from harness.history.db import HistoryDB
    from harness.store import load_run

    rows = load_run(run.run_dir).set_index("case_id")
    assert (run.run_dir / "results.parquet").is_file()
    assert rows.loc[FAST_CASE, "status"] == "ok" and SLOW_CASE not in rows.index
    assert f"quantbench: run {run.run_id}" in run.output()  # the table was printed
    runs = HistoryDB.open(f"sqlite:///{run.folder / 'history.sqlite'}").runs()
    assert run.run_id in set(runs["run_id"])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_case_ends_the_runner_and_writes_the_report(suite_dir, signum):
    run = Run(suite_dir, "interrupted")
    try:
        pid, ticks = slow_runner(run)
        assert alive(pid, ticks)
        os.kill(run.proc.pid, signum)  # to the harness only, as the premise: the runner is in its own session
        assert run.wait(120) == pytest.ExitCode.INTERRUPTED, run.output()[-3000:]
    finally:
        run.stop()
    assert_gone(pid, ticks)
    assert RunnerRegistry(suite_dir / "cache").records() == []
    assert_report_written(run)


def test_runner_left_by_a_killed_run_is_ended_by_the_next_run_but_a_live_runs_is_not(suite_dir):
    live = Run(suite_dir, "live")
    killed = Run(suite_dir, "killed")
    try:
        live_pid, live_ticks = slow_runner(live)
        orphan_pid, orphan_ticks = slow_runner(killed)
        killed.proc.send_signal(signal.SIGKILL)  # the harness only: nothing can clean up
        killed.wait()
        time.sleep(0.5)
        assert alive(orphan_pid, orphan_ticks), "premise: SIGKILL leaves the runner running"

        following = Run(suite_dir, "next", "-k", "fast")
        assert following.wait(300) == 0, following.output()[-3000:]
        assert_gone(orphan_pid, orphan_ticks)
        log = (following.run_dir / "run.log").read_text()
        assert f"ended runner pid {orphan_pid} (case {SLOW_CASE})" in log
        assert alive(live_pid, live_ticks), "the next run killed the runner of a live run"
        assert [r.runner_pid for _, r in RunnerRegistry(suite_dir / "cache").records()] == [live_pid]

        live.proc.send_signal(signal.SIGINT)
        assert live.wait(120) == pytest.ExitCode.INTERRUPTED
        assert_gone(live_pid, live_ticks)
    finally:
        for run in (live, killed):
            run.stop()
        for pid in (locals().get("orphan_pid"),):
            if pid and alive(pid, locals().get("orphan_ticks")):
                os.killpg(pid, signal.SIGKILL)


def test_sigint_on_an_ssh_target_ends_the_runner_on_the_device(suite_dir):
    from harness.testing.sshd import inventory_toml, make_sshd

    device = make_sshd(suite_dir / "sshd")
    workdir = suite_dir / "device"
    inventory = suite_dir / "targets.toml"
    inventory.write_text(inventory_toml({"edge": device.target(python=sys.executable, workdir=str(workdir))}))
    run = Run(suite_dir, "ssh", "--target=edge", f"--qb-inventory={inventory}")
    try:
        wait_for(lambda: (run.run_dir / "cases" / f"{FAST_CASE}.json").is_file(), "the fast case's row", run=run)
        pid_file = wait_for(lambda: next((p for p in workdir.glob("jobs/*/pid") if p.read_text().strip()), None),
                            "the slow case's runner on the device", run=run)
        pid = int(pid_file.read_text())
        ticks = start_ticks(pid)
        assert alive(pid, ticks)
        os.kill(run.proc.pid, signal.SIGINT)
        assert run.wait(120) == pytest.ExitCode.INTERRUPTED, run.output()[-3000:]
        assert_gone(pid, ticks)  # before sshd stops: stopping it would end its sessions' processes itself
    finally:
        run.stop()
        device.stop()
    assert not pid_file.parent.exists()  # the job directory was removed on the device
    assert_report_written(run)
