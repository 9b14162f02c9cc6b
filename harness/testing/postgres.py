"""A throwaway PostgreSQL server from Debian's packages (initdb as a non-root user, loopback port),
for the history database's tests and benchmarks: skipped only when the binaries are not installed
and this is not CI (`CI=true`, where the README's test command has installed them); a server that
is installed but does not come up fails."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Optional

import pytest

from harness.testing.processes import free_port


def not_installed(message: str) -> None:
    """A Debian package the README's test command installs is missing: a skip on a developer's
    machine, a failure in CI (`CI=true`), where its absence means the install step broke."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: scripts/test.sh installs it, so its absence is a failure here)", pytrace=False)
    pytest.skip(message)


def _pg_bindir() -> Optional[Path]:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


class PostgresServer:
    """initdb + pg_ctl start in a private directory; `url(db)` for a database on it."""

    def __init__(self) -> None:
        bindir = _pg_bindir()
        if bindir is None:
            not_installed("PostgreSQL server binaries (pg_ctl, initdb) not found: install Debian's `postgresql` "
                          "(scripts/test.sh does, from requirements/debian.txt)")
        self.bindir = bindir
        self.runas: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="qb-pg-", dir="/tmp"))  # not under pytest's 0700 root-only tmp
        if os.geteuid() == 0:  # postgres refuses to run as root
            user = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
            if user is None:  # Debian's postgresql package creates `postgres`: installed but unusable
                pytest.fail("running as root and neither user `postgres` nor `nobody` exists to run PostgreSQL",
                            pytrace=False)
            entry = pwd.getpwnam(user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self.runas = ["runuser", "-u", user, "--"]
        self.data = self.root / "data"
        self.port = free_port()
        self._run([str(bindir / "initdb"), "-D", str(self.data), "-U", "quantbench", "--auth=trust", "-E", "UTF8",
                   "--no-locale"], "initdb")
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        self._run([str(bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "server.log"), "-w",
                   "-t", "60", "start"], "pg_ctl start")

    def _run(self, cmd: list[str], what: str) -> None:
        proc = subprocess.run(self.runas + cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = (self.root / "server.log").read_text()[-2000:] if (self.root / "server.log").is_file() else ""
            self.stop()  # installed but not working: a broken half of the history's two backends
            pytest.fail(f"PostgreSQL did not start ({what} exit {proc.returncode}): {proc.stderr.strip()[-800:]} {log}",
                        pytrace=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://quantbench@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import sqlalchemy as sa

        name = "qb_" + uuid.uuid4().hex[:12]
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine.dispose()
        return self.url(name)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(self.runas + [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=120)
        shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
