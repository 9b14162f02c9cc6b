"""harness/settings.py: each location is the flag, else the environment variable, else a
default under the base directory (the pytest rootdir or the working directory), never the
package folder."""
import subprocess
import sys

import pytest

from harness import settings

ENVS = (settings.CACHE_ENV, settings.RESULTS_ENV, settings.RESULTS_DB_ENV, settings.INVENTORY_ENV)


@pytest.fixture
def clean_env(monkeypatch):
    for name in ENVS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_are_under_the_base_directory(clean_env, tmp_path):
    where = settings.resolve(tmp_path)
    assert where.cache_dir == tmp_path / ".cache" / "quantbench" and where.results_dir == tmp_path / "results"
    assert where.results_db == str(tmp_path / "results" / "history.sqlite") and where.inventory is None
    (tmp_path / "targets.toml").write_text("")
    assert settings.resolve(tmp_path).inventory == tmp_path / "targets.toml"
    clean_env.chdir(tmp_path)
    assert settings.cache_dir() == tmp_path / ".cache" / "quantbench"  # no base: the working directory
    assert settings.results_dir() == tmp_path / "results"  # not the folder the package was imported from


def test_the_environment_beats_the_default_and_the_flag_beats_both(clean_env, tmp_path):
    clean_env.setenv(settings.CACHE_ENV, str(tmp_path / "env-cache"))
    clean_env.setenv(settings.RESULTS_ENV, str(tmp_path / "env-results"))
    clean_env.setenv(settings.INVENTORY_ENV, str(tmp_path / "env.toml"))
    where = settings.resolve(tmp_path / "project")
    assert (where.cache_dir, where.results_dir, where.inventory) == (tmp_path / "env-cache", tmp_path / "env-results",
                                                                     tmp_path / "env.toml")
    assert where.results_db == str(tmp_path / "env-results" / "history.sqlite")
    clean_env.setenv(settings.RESULTS_DB_ENV, "postgresql://bench@db/qb")
    assert settings.resolve(tmp_path).results_db == "postgresql://bench@db/qb"
    where = settings.resolve(tmp_path, cache=tmp_path / "c", results=tmp_path / "r", db="off", inventory=tmp_path / "i.toml")
    assert (where.cache_dir, where.results_dir, where.results_db, where.inventory) == (
        tmp_path / "c", tmp_path / "r", "off", tmp_path / "i.toml")


def test_a_pytest_run_without_a_configuration_file_writes_under_its_working_directory(tmp_path):
    """No pytest.ini/pyproject.toml: the base is where pytest started, not the suite's folder
    (pytest's rootdir would be suites/ then)."""
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "test_where.py").write_text(
        "from harness import settings\n\ndef test_where(request):\n"
        "    print('BASE', settings.for_pytest(request.config).base_dir)\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "suites/", "-p", "harness.pytest_plugin", "-p", "no:cacheprovider",
                           "-q", "-s"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and f"BASE {tmp_path}\n" in proc.stdout, proc.stdout + proc.stderr
