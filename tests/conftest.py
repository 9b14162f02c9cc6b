"""Shared fixtures for the harness's own tests."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from harness import settings

REPO_ROOT = Path(__file__).resolve().parent.parent
# Every test, and every pytest or quantbench process a test starts (whatever its working directory
# or rootdir), shares this checkout's artifact cache unless $QUANTBENCH_CACHE names another.
os.environ.setdefault(settings.CACHE_ENV, str(settings.cache_dir(base=REPO_ROOT)))
# Small timing budgets: tests check behaviour, benchmarks/ checks speed.
# A generous case budget: a test that checks scoring must not see its evaluation skipped because a
# busy machine made the quick profile's budget run out (tests/test_profiles.py tests the budget).
# No dashboard rebuild at the end of each run (matplotlib and every plot: seconds per run, over
# dozens of runs); the test of the run's last words asks for it (tests/test_onnxruntime_e2e.py).
FAST_TIMING = ("--min-runs", "20", "--min-duration", "0.1", "--max-duration", "2", "--warmup-runs", "2",
               "--case-budget", "600", "--qb-dashboard=off",
               "--qb-race-cap", "0")  # no race of the finalists unless a test asks (tests/test_race.py, the e2e run)


@dataclass
class SuiteRun:
    returncode: int
    output: str
    run_dir: Path

    @property
    def results(self) -> pd.DataFrame:
        from harness.store import load_run

        return load_run(self.run_dir)

    def row(self, case_id: str) -> dict:
        df = self.results
        rows = df[df["case_id"] == case_id]
        assert len(rows) == 1, f"no single row {case_id!r}; cases: {sorted(df['case_id'])}"
        return rows.iloc[0].to_dict()


@pytest.fixture
def run_suite(tmp_path):
    """Run `pytest <suite files> -p harness.pytest_plugin` in a fresh process, the way a user
    does, with fast timing and a private results dir; the artifact cache is shared."""
    counter = iter(range(1000))

    def run(*paths, extra=(), env=None, timeout=900) -> SuiteRun:
        run_id = f"test-{next(counter)}"
        results = tmp_path / "results"
        cmd = [sys.executable, "-m", "pytest", *map(str, paths), "-p", "harness.pytest_plugin",
               "-p", "no:cacheprovider", "-q", f"--qb-results-dir={results}", f"--qb-run-id={run_id}",
               f"--rootdir={tmp_path}", *FAST_TIMING, *extra]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        return SuiteRun(proc.returncode, proc.stdout + proc.stderr, results / run_id)

    return run
