"""peak_rss_mb is the runner's own memory, and a relative --qb-results-dir works.

Both were wrong once: the kernel carries ru_maxrss across execve, so a runner started by a
large host process reported the host's peak (a digits runner read 211 MB instead of ~140 MB
under a pytest that had loaded a history baseline, and a memory gate failed on it); and a
relative --qb-results-dir gave the local runner a config path relative to another directory."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from harness.runner import system
from tests.history_support import run_pytest, write_suite

HOST_MB = 600  # far above what a bare Python that imports the runner's system module uses


def test_a_child_does_not_report_its_parents_peak_memory():
    ballast = bytearray(HOST_MB * 1024 * 1024)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page: resident in this process
    assert system.peak_rss_mb() >= HOST_MB  # the parent's own figure sees it
    child = subprocess.run([sys.executable, "-c", "from harness.runner import system; print(system.peak_rss_mb())"],
                           capture_output=True, text=True, check=True)
    assert float(child.stdout) < HOST_MB / 2, child.stdout
    del ballast


def test_a_relative_results_dir_is_taken_from_where_pytest_was_started(tmp_path):
    suite = write_suite(tmp_path / "suites", ("fp32",))
    proc = run_pytest([suite.relative_to(tmp_path)], Path("results"), "rel", "--qb-results-db=off",
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    rows = pd.read_parquet(tmp_path / "results" / "rel" / "results.parquet")
    assert list(rows["status"]) == ["ok"] and rows["peak_rss_mb"].iloc[0] > 0
