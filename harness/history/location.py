"""Where the results database is, without importing SQLAlchemy.

A run with `--results-db=off` (or on a host without the `history` extra, e.g. a borrowed GPU
machine) must not need SQLAlchemy: the location is resolved here, and harness.history.gate
imports harness.history.db (`open_db`) only when there is a database to open.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from harness import settings

ENV_VAR = settings.RESULTS_DB_ENV
DEFAULT_FILE_NAME = settings.HISTORY_FILE  # under the results directory
DISABLED = ("off", "none", "no")  # --results-db=off: keep results/<run-id>/ only


class HistoryError(RuntimeError):
    """The results database cannot be used; the message names the database and what to do."""


def resolve_url(explicit: Optional[str] = None, results_dir: Optional[Path] = None) -> Optional[str]:
    """The database in force: --results-db, else $QUANTBENCH_RESULTS_DB, else <results_dir>/history.sqlite.

    A plain path means a SQLite file; `postgresql://...` uses psycopg 3. None when disabled (`off`).
    """
    value = settings.results_db(explicit, results_dir)
    if value.strip().lower() in DISABLED:
        return None
    if "://" not in value:
        return f"sqlite:///{Path(value).expanduser().resolve()}"
    for scheme in ("postgresql://", "postgres://"):
        if value.startswith(scheme):
            return "postgresql+psycopg://" + value[len(scheme):]
    return value


def display_url(url: str) -> str:
    """The URL with any password hidden, for messages (scheme://user:***@host/...)."""
    return re.sub(r"^([^:/]+://[^/@:]*):[^/@]*@", r"\1:***@", url)

