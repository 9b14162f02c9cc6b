"""Helpers for the results-history tests (tests/test_history_*.py).

- real runs of the digits onnxruntime suite with tiny budgets, made once per test session
  (shared between test modules through pytest's base temp dir; the artifact cache is reused);
- `derive_run`: a copy of a real run under a new run id with its raw latencies (and, if asked,
  other columns) changed, to make a regression or an improvement on purpose. Every derived
  run says so: its manifest carries `derived_from` and `derivation`, and its rows' `reason`;
- headless Chromium that loads a page and reports which images loaded.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from harness.testing.postgres import not_installed
from tests.conftest import FAST_TIMING  # the one definition (with a generous case budget)

REPO_ROOT = Path(__file__).resolve().parent.parent
# The digits onnxruntime suite, declared here so the tests do not change when suites/ grows.
# bf16 has no onnxruntime CPU kernels: one n/a row with its reason.
DIGITS_ORT_MODES = ("fp32", "fp16", "bf16", "dynamic-int8", "static-int8", "mixed")
BUDGETS = {"dynamic-int8": 1.0, "static-int8": 1.0, "mixed": 0.5}  # accuracy points vs fp32, as suites/test_digits.py
SUITE_SOURCE = """from harness import Gates, Suite
from harness.models import digits_cnn

suite = Suite(model=digits_cnn, frameworks=("onnxruntime",), modes={modes!r}, budgets={budgets!r}, name="digits"{extra})
test_case = suite.pytest_cases()
"""
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def run_pytest(paths: Sequence[Path], results_dir: Path, run_id: str, *extra: str, cwd: Optional[Path] = None,
               timeout: float = 900) -> subprocess.CompletedProcess:
    """`python -m pytest <suite> -p harness.pytest_plugin ...` in a fresh process, as a user runs it."""
    cmd = [sys.executable, "-m", "pytest", *map(str, paths), "-p", "harness.pytest_plugin", "-p", "no:cacheprovider",
           "-q", f"--qb-results-dir={results_dir}", f"--qb-run-id={run_id}", f"--rootdir={cwd or results_dir}",
           *FAST_TIMING, *extra]
    return subprocess.run(cmd, cwd=cwd or results_dir, capture_output=True, text=True, timeout=timeout)


def write_suite(folder: Path, modes: Sequence[str] = DIGITS_ORT_MODES, gates: str = "",
                name: str = "test_digits_ort.py") -> Path:
    """A suite file for the digits onnxruntime cases; `gates` is Python, e.g. "Gates(latency=4.0)"."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    budgets = {m: b for m, b in BUDGETS.items() if m in modes}
    path.write_text(SUITE_SOURCE.format(modes=tuple(modes), budgets=budgets, extra=f", gates={gates}" if gates else ""))
    return path


def quantbench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def real_runs(tmp_path_factory, count: int = 2) -> list[Path]:
    """`count` real runs of the digits onnxruntime suite, made once per session."""
    base = tmp_path_factory.getbasetemp() / "history-real-runs"
    done = base / "done.json"
    if done.is_file():
        return [Path(p) for p in json.loads(done.read_text())]
    suite = write_suite(base / "suite")
    runs = []
    for i in range(count):
        run_id = f"real-{i}"
        proc = run_pytest([suite], base, run_id, "--qb-results-db=off")
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        runs.append(base / run_id)
    done.write_text(json.dumps([str(p) for p in runs]))
    return runs


def derive_run(run_dir: Path, out_root: Path, run_id: str, scale: float | Mapping[str, float] = 1.0,
               transform: Optional[Callable[[str, np.ndarray], np.ndarray]] = None,
               columns: Optional[Mapping[str, Mapping[str, object]]] = None, started_at: Optional[str] = None,
               label: str = "") -> Path:
    """A labelled copy of a real run: latencies x scale (per case id when a mapping), or
    transform(case_id, latencies); column overrides per case id; statistics recomputed."""
    from harness.stats import latency_stats
    from harness.store import RunStore

    manifest = json.loads((run_dir / "run.json").read_text())
    how = label or (f"latencies x{scale}" if not isinstance(scale, Mapping) else f"latencies x{dict(scale)}")
    manifest.update(run_id=run_id, derived_from=manifest["run_id"], derivation=f"test-made: {how}")
    if started_at:
        manifest["started_at"] = started_at
    store = RunStore(out_root, run_id)
    store.write_run(manifest)
    for path in sorted((run_dir / "cases").glob("*.json")):
        record = json.loads(path.read_text())
        row, lat = dict(record["row"]), np.asarray(record["latencies_ms"], dtype=np.float64)
        case_id = row["case_id"]
        row["run_id"] = run_id
        if row["status"] == "ok" and len(lat):
            factor = scale.get(case_id, 1.0) if isinstance(scale, Mapping) else scale
            lat = lat * factor
            if transform is not None:
                lat = transform(case_id, lat)
            row.update(latency_stats(lat, int(row["batch_size"])))
            row["reason"] = f"derived from run {record['row']['run_id']} by a test: {how}"
        row.update((columns or {}).get(case_id, {}))
        store.write_case(row, lat.tolist())
    return store.dir


# -- Chromium ------------------------------------------------------------------------------------
def chromium_available() -> None:
    if not Path(CHROMIUM).is_file():
        not_installed(f"{CHROMIUM} not found: install Debian's `chromium` (scripts/test.sh does, from requirements/debian.txt)")


def chromium_dom(url: str, profile: Path, budget_ms: int = 10000) -> str:
    """The DOM after the page's load handlers ran (virtual time lets every image settle)."""
    proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                           "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def chromium_screenshot(url: str, profile: Path, out: Path, size: str = "1200,2000") -> Path:
    proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                           "--virtual-time-budget=5000", f"--screenshot={out}", url], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-3000:]
    return out


def wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout} s")
        time.sleep(0.01)
