"""Where quantbench keeps things, resolved in one place: a flag, else an environment variable,
else a default under the base directory.

The base directory is the project the user runs in: the pytest rootdir when pytest found a
configuration file (pytest.ini, pyproject.toml with [tool.pytest.ini_options], tox.ini,
setup.cfg) or was given --rootdir, else the working directory; the `quantbench` command uses the
working directory. Never the package's own folder: an installed quantbench must not write
results/ or .cache/ into site-packages, nor look for targets.toml there.

| setting     | flag          | environment             | default                         |
|-------------|---------------|-------------------------|---------------------------------|
| cache       | --cache-dir   | $QUANTBENCH_CACHE       | <base>/.cache/quantbench        |
| results     | --results-dir | $QUANTBENCH_RESULTS_DIR | <base>/results                  |
| history db  | --results-db  | $QUANTBENCH_RESULTS_DB  | <results>/history.sqlite        |
| inventory   | --inventory   | $QUANTBENCH_INVENTORY   | <base>/targets.toml, if present |
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

CACHE_ENV = "QUANTBENCH_CACHE"
RESULTS_ENV = "QUANTBENCH_RESULTS_DIR"
RESULTS_DB_ENV = "QUANTBENCH_RESULTS_DB"
INVENTORY_ENV = "QUANTBENCH_INVENTORY"

CACHE_SUBDIR = Path(".cache") / "quantbench"  # under the base directory
RESULTS_SUBDIR = "results"
INVENTORY_FILE = "targets.toml"
HISTORY_FILE = "history.sqlite"  # under the results directory

# The folder that holds the `harness` package: what a subprocess needs on PYTHONPATH to import
# it (the Keras QAT subprocess). A place to import from, never a place to read or write data.
IMPORT_ROOT = Path(__file__).resolve().parent.parent

PathLike = Union[str, "os.PathLike[str]"]


def base_dir(base: Optional[PathLike] = None) -> Path:
    """The project directory defaults are relative to: `base` (the pytest rootdir) or the working directory."""
    return Path(base).absolute() if base else Path.cwd()


def _pick(flag: Optional[PathLike], env: str) -> Optional[Path]:
    if flag:
        return Path(flag).expanduser()
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    return None


def cache_dir(flag: Optional[PathLike] = None, base: Optional[PathLike] = None) -> Path:
    """Artifacts and trained models, shared across runs: --cache-dir, $QUANTBENCH_CACHE, <base>/.cache/quantbench."""
    return (_pick(flag, CACHE_ENV) or base_dir(base) / CACHE_SUBDIR).absolute()


def results_dir(flag: Optional[PathLike] = None, base: Optional[PathLike] = None) -> Path:
    """Where results/<run-id>/ go: --results-dir, $QUANTBENCH_RESULTS_DIR, <base>/results."""
    return (_pick(flag, RESULTS_ENV) or base_dir(base) / RESULTS_SUBDIR).absolute()


def inventory_path(flag: Optional[PathLike] = None, base: Optional[PathLike] = None) -> Optional[Path]:
    """The inventory in force: --inventory, $QUANTBENCH_INVENTORY, else <base>/targets.toml if present (None: built-in targets only)."""
    chosen = _pick(flag, INVENTORY_ENV)
    if chosen:
        return chosen
    default = base_dir(base) / INVENTORY_FILE
    return default if default.is_file() else None


def results_db(flag: Optional[str] = None, results: Optional[PathLike] = None) -> str:
    """The results database as given (before URL translation, see harness.history.location):
    --results-db, $QUANTBENCH_RESULTS_DB, <results>/history.sqlite (`results` defaults as results_dir())."""
    return flag or os.environ.get(RESULTS_DB_ENV) or str(Path(results or results_dir()) / HISTORY_FILE)


@dataclass(frozen=True)
class Settings:
    """Every location, resolved once for a run or a command."""

    base_dir: Path  # the project directory the defaults are under
    cache_dir: Path  # artifacts and trained models
    results_dir: Path  # results/<run-id>/ and, by default, history.sqlite
    results_db: str  # a SQLite path, a URL, or 'off' (harness.history.location.resolve_url reads it)
    inventory: Optional[Path]  # None: only the built-in targets (local, cuda)


def resolve(base: Optional[PathLike] = None, *, cache: Optional[PathLike] = None, results: Optional[PathLike] = None,
            db: Optional[str] = None, inventory: Optional[PathLike] = None) -> Settings:
    """All locations from the flags given (None: not given) and the base directory."""
    where = base_dir(base)
    results_path = results_dir(results, where)
    return Settings(base_dir=where, cache_dir=cache_dir(cache, where), results_dir=results_path,
                    results_db=results_db(db, results_path), inventory=inventory_path(inventory, where))


def pytest_base_dir(config) -> Path:
    """The base directory of a pytest run: the controller's on an xdist worker; the rootdir when
    pytest found a configuration file or was given --rootdir; else the directory pytest was started in."""
    given = getattr(config, "workerinput", {}).get("quantbench_base_dir")
    if given:
        return Path(given)
    if config.inipath is not None or getattr(config.option, "rootdir", None):
        return Path(config.rootpath)
    return Path(config.invocation_params.dir)


_PYTEST_KEY = None


def for_pytest(config) -> Settings:
    """The run's settings from its options (resolved once, kept in the config's stash)."""
    global _PYTEST_KEY
    import pytest

    if _PYTEST_KEY is None:
        _PYTEST_KEY = pytest.StashKey()
    if _PYTEST_KEY not in config.stash:
        config.stash[_PYTEST_KEY] = resolve(pytest_base_dir(config), cache=config.getoption("--qb-cache-dir"),
                                            results=config.getoption("--qb-results-dir"),
                                            db=config.getoption("--qb-results-db"), inventory=config.getoption("--qb-inventory"))
    return config.stash[_PYTEST_KEY]
