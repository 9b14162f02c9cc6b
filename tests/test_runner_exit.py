"""The runner process ends without the interpreter's teardown (runner.__main__.end_process), and
nothing it wrote is lost: Python's buffered streams and C stdio's (a runtime's printf into the
host's pipe, which only libc's exit() would otherwise flush) reach the host, with the exit code."""
from __future__ import annotations

import subprocess
import sys

from harness.runner_bundle import stage_runner
from targets.local import runner_env
from tests.runner_job import run_runner

WRITES_AND_ENDS = """
import ctypes, sys
ctypes.CDLL(None).printf(b"C stdio, no newline, no flush")
sys.stdout.write("python stdout, unflushed ")
sys.stderr.write("python stderr ")
from runner.__main__ import end_process
end_process(3)
"""


def test_end_process_keeps_every_buffered_line_and_the_exit_code(tmp_path):
    env = runner_env(stage_runner(tmp_path / "runner"))  # as the local target runs the runner
    env.pop("PYTHONUNBUFFERED", None)  # C stdio into a pipe is then fully buffered, as on most hosts
    proc = subprocess.run([sys.executable, "-c", WRITES_AND_ENDS], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 3
    for written in ("C stdio, no newline, no flush", "python stdout, unflushed", "python stderr"):
        assert written in proc.stdout, proc.stdout


def test_a_runner_process_still_leaves_its_result_and_outputs(tmp_path):
    result, outputs = run_runner(tmp_path)  # asserts the exit code matches the result's status
    assert result["status"] == "ok" and result["n_runs"] >= 10
    assert outputs and all(len(v) == result["n_eval"] for v in outputs.values())
