"""`quantbench run` in a checkout, as a user runs it there, timed: what the benchmarks that time or
repeat the main job share (benchmarks/main_job.py, benchmarks/answer_stability.py).

The run imports the checkout's code (PYTHONPATH) in a fresh process of this interpreter, works in
the checkout, and gets no $QUANTBENCH_CACHE of the caller's: the artifact cache is what `args`
name. Its output goes to a log file. Standard library only.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class TimedRun:
    wall_s: float  # the process's wall time, start to exit
    returncode: int
    stdout: str  # the log holds stdout and stderr


def timed_run(code: Path, args: Sequence[str], log: Path) -> TimedRun:
    """`python -m harness.cli run *args` with the code of `code`, in `code`; its stdout and
    stderr written to `log`."""
    cmd = [sys.executable, "-m", "harness.cli", "run", *args]
    env = {**os.environ, "PYTHONPATH": str(code)}
    env.pop("QUANTBENCH_CACHE", None)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    log.write_text(proc.stdout + proc.stderr)
    return TimedRun(wall, proc.returncode, proc.stdout)
