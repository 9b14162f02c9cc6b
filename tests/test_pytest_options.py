"""The plugin's options beside other plugins: renamed spellings, the old ones accepted with a
deprecation warning, silence in a pytest run that does not use quantbench, `quantbench --version`."""
import subprocess
import sys

from harness import pytest_options
from tests.conftest import REPO_ROOT


def test_old_spellings_are_rewritten_unless_another_plugin_owns_them():
    args = ["suites/", "--profile=nightly", "--results-dir", "out", "--target=pi", "--tag", "a", "--", "--rounds"]
    warnings = pytest_options.rewrite(args, taken={"--tag"})
    assert args == ["suites/", "--qb-profile=nightly", "--qb-results-dir", "out", "--target=pi", "--tag", "a", "--", "--rounds"]
    assert warnings == ["quantbench: --profile is deprecated, use --qb-profile (the old spelling goes in the next release)",
                        "quantbench: --results-dir is deprecated, use --qb-results-dir (the old spelling goes in the next release)"]
    assert pytest_options.translate(["--rounds=2", "-k", "x"]) == ["--qb-rounds=2", "-k", "x"]


def _pytest(folder, *args):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "harness.pytest_plugin", "-p", "no:cacheprovider",
                           "-q", f"--rootdir={folder}", *args], cwd=folder, capture_output=True, text=True, timeout=300)


def test_a_run_without_quantbench_sees_nothing_of_it(tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    (tmp_path / "targets.toml").write_text("this is not TOML, and nobody asked quantbench to read it\n")
    before = set(p.name for p in tmp_path.iterdir())
    proc = _pytest(tmp_path, "test_plain.py")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr
    assert "quantbench" not in proc.stdout + proc.stderr
    assert set(p.name for p in tmp_path.iterdir()) - {".benchmarks"} == before  # no results/, no .cache/


def test_an_old_spelling_still_works_and_names_the_new_one(tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    proc = _pytest(tmp_path, "test_plain.py", "--profile=nightly", "--results-db=off")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--profile is deprecated, use --qb-profile" in proc.stdout and "use --qb-results-db" in proc.stdout


def test_version():
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "--version"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("quantbench "), proc.stdout + proc.stderr
