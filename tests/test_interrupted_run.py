"""A run killed half-way keeps every finished case, and the report is rebuilt from them."""
import os
import signal
import subprocess
import sys
import time

from harness.store import load_run

SUITE = """
from harness import Suite
from harness.models import digits_cnn
test_case = Suite(model=digits_cnn, modes=("fp32", "fp16", "dynamic-int8", "static-int8", "mixed")).pytest_cases()
"""


def test_killed_run_keeps_finished_cases_and_report_rebuilds(tmp_path):
    (tmp_path / "test_slow.py").write_text(SUITE)
    results = tmp_path / "results"
    run_dir = results / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(tmp_path / "test_slow.py"), "-p", "harness.pytest_plugin", "-q",
         "-p", "no:cacheprovider", f"--qb-results-dir={results}", "--qb-run-id=killed", f"--rootdir={tmp_path}",
         "--min-runs=10", "--min-duration=1.5", "--max-duration=3"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list((run_dir / "cases").glob("*.json"))) < 2:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p.stem for p in (run_dir / "cases").glob("*.json"))
    assert 2 <= len(finished) < 5, finished

    (run_dir / "results.parquet").unlink(missing_ok=True)
    df = load_run(run_dir)
    assert sorted(df["case_id"]) == finished
    assert (df["status"] == "ok").all() and df["latency_p50_ms"].notna().all()
    assert (run_dir / "results.parquet").is_file()

    report = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(run_dir)],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    for case_id in finished:
        mode = case_id.split("-onnxruntime-")[1].rsplit("-b", 1)[0]
        assert mode.split("-")[0] in report.stdout
    assert "digits-cnn" in report.stdout


def test_report_of_unknown_run_says_where_it_looked(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "report", "no-such-run", f"--results-dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no run 'no-such-run'" in proc.stderr and str(tmp_path) in proc.stderr
