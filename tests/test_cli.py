"""The `quantbench` command: `run` is pytest over suites/, `report` prints a stored run."""
import re
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


def test_run_leaves_out_the_pytest_plugins_a_benchmark_never_uses(tmp_path):
    """Installed plugins such as hypothesis's are not imported by `quantbench run` (they cost seconds
    of every run); plain pytest still loads them, and `-p NAME` brings one back."""
    import importlib.metadata

    import pytest

    installed = {ep.name for ep in importlib.metadata.entry_points(group="pytest11")}
    if "hypothesispytest" not in installed:
        pytest.skip("hypothesis (the plugin this checks) is not installed")
    empty = ("-k", "no_case_has_this_name", f"--results-dir={tmp_path}", "--results-db=off", "--qb-dashboard=off")
    plain = subprocess.run([sys.executable, "-X", "importtime", "-m", "pytest", str(REPO_ROOT / "suites"), "-p",
                            "harness.pytest_plugin", "-p", "no:cacheprovider", "--collect-only", "-q", "-k", "no_case_has_this_name"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    imported = lambda text: re.search(r"\|\s+hypothesis\s*$", text, re.M) is not None  # noqa: E731 - the package's importtime line
    assert imported(plain.stderr)  # the premise: pytest itself imports it here
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness.cli", "run", *empty], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode in (0, 5), run.stdout[-2000:] + run.stderr[-2000:]  # 5: no case selected
    assert not imported(run.stderr)
    back = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness.cli", "run", "-p", "hypothesispytest", *empty],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert imported(back.stderr), back.stderr[-2000:]
