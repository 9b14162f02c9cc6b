"""A runner process's start and end, besides its measurement: it loads the runner's modules from
the bytecode compiled when the runner was staged (harness/runner_bundle.py), and ends without the
interpreter's teardown (runner.__main__.end_process) while nothing it wrote is lost: Python's
buffered streams and C stdio's (a runtime's printf into the host's pipe, which only libc's exit()
would otherwise flush) reach the host, with the exit code."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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


def test_a_staged_runner_loads_its_modules_from_bytecode_compiled_at_staging(tmp_path):
    parent = stage_runner(tmp_path / "runner")
    staged = parent / "runner"
    files = sorted(staged.rglob("*"))
    proc = subprocess.run([sys.executable, "-v", "-m", "runner"], capture_output=True, text=True,
                          env=runner_env(parent), timeout=120)  # usage error: after importing every module
    assert proc.returncode == 2, proc.stderr[-2000:]
    from_bytecode = {Path(p).name.split(".")[0] for p in re.findall(r"# code object from '([^']+)'", proc.stderr)
                     if Path(p).parent == staged / "__pycache__"}
    imported = {m for m in re.findall(r"^import 'runner\.(\w+)'", proc.stderr, re.M)}
    assert {"measure", "protocol", "sensors", "system", "footprint", "phases"} <= imported
    assert "__main__" in from_bytecode  # run by runpy, from the same bytecode
    assert imported <= from_bytecode, f"compiled from source in the runner process: {sorted(imported - from_bytecode)}"
    assert sorted(staged.rglob("*")) == files  # the runner process wrote nothing beside the staged files
