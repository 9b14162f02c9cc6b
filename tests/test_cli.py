"""The `quantbench` command: `run` is pytest over suites/, `report` prints a stored run."""
import subprocess
import sys

from tests.conftest import FAST_TIMING, REPO_ROOT


def quantbench(*args, cwd=REPO_ROOT, timeout=900):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_run_selects_cases_with_k_and_runs_the_fp32_baseline_too(tmp_path):
    proc = quantbench("run", "-k", "digits and onnxruntime and static-int8", f"--results-dir={tmp_path}", "--run-id=cli",
                      *FAST_TIMING)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pytest " in proc.stderr and "--target=local" in proc.stderr
    report = quantbench("report", "cli", f"--results-dir={tmp_path}")
    assert report.returncode == 0, report.stderr
    lines = [line for line in report.stdout.splitlines() if line.startswith("digits-cnn")]
    modes = sorted(line.split()[3] for line in lines)
    assert modes == ["fp32", "static-int8"], report.stdout  # fp32 ran as the baseline of static-int8
    static = next(line for line in lines if "static-int8" in line)
    assert " ok " in static and "x " in static  # a speedup vs that fp32 baseline is printed
    from harness.store import load_run

    rows = {r["mode"]: r for r in load_run(tmp_path / "cli").to_dict("records")}
    fp32, case = rows["fp32"], rows["static-int8"]  # a local target's rows carry their hold too: one hold, fp32 first
    assert fp32["held_from"] == case["held_from"] < case["held_until"] == fp32["held_until"], (fp32, case)


def test_run_given_a_suite_file_runs_only_that_suite(tmp_path):
    """`quantbench run FILE` is `pytest FILE`, not `pytest suites/ FILE` (which runs everything)."""
    suite = tmp_path / "suites" / "test_mine.py"
    suite.parent.mkdir()
    suite.write_text("from harness import Suite\nfrom harness.models import digits_cnn\n"
                     "mine = Suite(name='mine', model=digits_cnn, frameworks=('onnxruntime',), modes=('fp32',))\n"
                     "test_mine = mine.pytest_cases()\n")
    results = tmp_path / "results"
    proc = quantbench("run", str(suite), "--results-dir", str(results), "--run-id=one", "--results-db=off", *FAST_TIMING)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    command = next(line for line in proc.stderr.splitlines() if line.startswith("quantbench: pytest "))
    assert str(suite) in command and str(REPO_ROOT / "suites") not in command, command
    assert "1 passed" in proc.stdout and "suites/test_digits.py" not in proc.stdout


def test_unknown_subcommand_argument_is_rejected():
    proc = quantbench("report", "latest", "--bogus")
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr


def test_console_script_is_installed():
    exe = REPO_ROOT / ".venv" / "bin" / "quantbench"
    proc = subprocess.run([str(exe) if exe.exists() else "quantbench", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "run" in proc.stdout and "report" in proc.stdout
