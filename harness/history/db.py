"""The results database: one code path (SQLAlchemy Core) for a SQLite file and PostgreSQL.

    db = HistoryDB.open()                          # $QUANTBENCH_RESULTS_DB or results/history.sqlite
    db = HistoryDB.open("postgresql://bench@db.lab/quantbench")
    db.append_run_dir("results/20261125-205725-2d28", tags=["nightly"])
    db.results(target="jetson", model="digits-cnn")  # pandas DataFrame, one row per case
    db.latencies(run_id="20261125-205725-2d28")     # long form: run_id, case_id, i, latency_ms

Appending a run is one transaction (SQLite: BEGIN IMMEDIATE with a long busy timeout;
PostgreSQL: row-level), so concurrent writers queue instead of losing rows. Appending a
run id that is already there replaces it, so importing a run twice is harmless.
"""
from __future__ import annotations

import datetime as dt
import json
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
import sqlalchemy as sa

from harness.history import schema
from harness.history.location import ENV_VAR, HistoryError, display_url, resolve_url  # noqa: F401 (re-exported)
from harness.history.schema import (LATEST_VERSION, MIGRATIONS, RESULT_COLUMNS_V1, comparisons, latencies, power_traces,
                                    results, run_tags, runs, schema_version)
from harness.values import plain

LATENCY_ENCODING = "zlib-f8le"
SQLITE_BUSY_TIMEOUT_S = 300.0  # a writer waits this long for another writer's transaction
_PG_MIGRATION_LOCK = 0x71B7_0007  # pg_advisory_xact_lock key that serializes migrations
TYPED = [c for c in RESULT_COLUMNS_V1]


def _engine(url: str) -> sa.Engine:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

        # pysqlite's own transaction handling defers BEGIN and cannot take the write lock
        # up front; take over so a writer holds RESERVED from its first statement.
        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record) -> None:
            dbapi_connection.isolation_level = None
            dbapi_connection.execute("PRAGMA foreign_keys = ON")

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("qb_write") else "BEGIN")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)



def _timestamp(text: Any) -> Optional[dt.datetime]:
    text = plain(text)  # NaN (pandas' missing) -> None
    if not text:
        return None
    if isinstance(text, dt.datetime):
        return text.replace(tzinfo=None)
    value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def encode_latencies(values: Sequence[float]) -> bytes:
    return zlib.compress(np.asarray(values, dtype="<f8").tobytes(), 6)


def decode_latencies(data: bytes, encoding: str) -> np.ndarray:
    if encoding != LATENCY_ENCODING:
        raise HistoryError(f"latencies stored as {encoding!r}, which this quantbench cannot read; upgrade quantbench")
    return np.frombuffer(zlib.decompress(data), dtype="<f8")


Selector = Union[None, str, int, Iterable[Any]]


def _where(table: sa.Table, **selectors: Selector) -> list[sa.ColumnElement]:
    clauses = []
    for name, value in selectors.items():
        if value is None:
            continue
        column = table.c[name]
        if isinstance(value, (str, int)):
            clauses.append(column == value)
        else:
            clauses.append(column.in_(list(value)))
    return clauses


class HistoryDB:
    """A results database, migrated to the latest schema on open."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        try:
            self.version = migrate(self.engine)
        except sa.exc.OperationalError as exc:
            raise HistoryError(f"cannot open the results database {display_url(url)}: {exc.orig or exc}; "
                               f"check --results-db / ${ENV_VAR} (or pass --results-db=off)") from exc

    @classmethod
    def open(cls, explicit: Optional[str] = None, results_dir: Optional[Path] = None) -> "HistoryDB":
        url = resolve_url(explicit, results_dir)
        if url is None:
            raise HistoryError("the results database is disabled (--results-db=off)")
        return cls(url)

    def __repr__(self) -> str:
        return f"HistoryDB({display_url(self.url)})"

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self.engine.connect().execution_options(qb_write=True) as conn, conn.begin():
            yield conn

    # -- writing -----------------------------------------------------------------------
    def append(self, run, tags: Sequence[str] = ()) -> str:
        """Record a run read back from its directory (harness.store.Run); returns the run id."""
        return self.append_run(run.manifest, run.case_rows, run.latencies, tags, power=run.power_traces)

    def append_run_dir(self, run_dir: Path, tags: Sequence[str] = ()) -> str:
        from harness.store import Run

        return self.append(Run(run_dir), tags)

    def append_run(self, manifest: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                   latencies_ms: Mapping[str, Sequence[float]], tags: Sequence[str] = (),
                   power: Optional[Mapping[str, Sequence[Sequence[float]]]] = None) -> str:
        """Record one run (replacing an earlier copy of the same run id); returns the run id.
        `power`: case_id -> the (seconds, watts) samples of its timed window (Run.power_traces)."""
        run_id = str(manifest["run_id"])
        target = dict(manifest.get("target") or {})
        first = rows[0] if rows else {}
        run_values = {
            "run_id": run_id,
            "started_at": _timestamp(manifest.get("started_at")) or _now(),
            "finished_at": _timestamp(manifest.get("finished_at")),
            "target": target.get("name") or first.get("target") or "unknown",
            "target_kind": target.get("kind") or first.get("target_kind"),
            "profile": target.get("profile") or first.get("profile"),
            "device": target.get("device") or first.get("device"),
            "host": target.get("host") or first.get("host"),
            "suites": ",".join(manifest.get("suites") or sorted({r.get("suite") for r in rows if r.get("suite")})),
            "command": json.dumps(manifest.get("command") or []),
            "n_cases": len(rows),
            "manifest": json.dumps(dict(manifest), default=str),
            "recorded_at": _now(),
        }
        with self._write() as conn:
            self._delete_run(conn, run_id)
            run_pk = conn.execute(runs.insert().values(**run_values)).inserted_primary_key[0]
            for tag in sorted(set(tags)):
                conn.execute(run_tags.insert().values(run_pk=run_pk, tag=tag))
            for row in rows:
                typed = {c: plain(row.get(c)) for c in TYPED}
                extra = {k: plain(v) for k, v in row.items() if k not in RESULT_COLUMNS_V1 and k != "run_id"}
                result_pk = conn.execute(results.insert().values(
                    run_pk=run_pk, extra=json.dumps(extra, default=str) if extra else None, **typed)).inserted_primary_key[0]
                values = latencies_ms.get(row["case_id"]) or []
                if len(values):
                    conn.execute(latencies.insert().values(result_pk=result_pk, n=len(values), encoding=LATENCY_ENCODING,
                                                           data=encode_latencies(values)))
                trace = (power or {}).get(row["case_id"]) or []
                if len(trace):
                    conn.execute(power_traces.insert().values(result_pk=result_pk, n=len(trace), encoding=LATENCY_ENCODING,
                                                              data=encode_latencies(np.asarray(trace, dtype=float).ravel())))
        return run_id

    @staticmethod
    def _delete_run(conn: sa.Connection, run_id: str) -> None:
        pk = conn.execute(sa.select(runs.c.id).where(runs.c.run_id == run_id)).scalar()
        if pk is None:
            return
        result_pks = sa.select(results.c.id).where(results.c.run_pk == pk).scalar_subquery()
        conn.execute(latencies.delete().where(latencies.c.result_pk.in_(result_pks)))
        conn.execute(power_traces.delete().where(power_traces.c.result_pk.in_(result_pks)))
        for table in (comparisons, results, run_tags):
            conn.execute(table.delete().where(table.c.run_pk == pk))
        conn.execute(runs.delete().where(runs.c.id == pk))

    def add_tags(self, run_id: str, tags: Sequence[str]) -> None:
        with self._write() as conn:
            pk = self._run_pk(conn, run_id)
            have = set(conn.execute(sa.select(run_tags.c.tag).where(run_tags.c.run_pk == pk)).scalars())
            for tag in sorted(set(tags) - have):
                conn.execute(run_tags.insert().values(run_pk=pk, tag=tag))

    def record_comparisons(self, run_id: str, verdicts: pd.DataFrame) -> None:
        """Store a run's gate verdicts (harness.history.regress.compare's frame), replacing earlier ones."""
        with self._write() as conn:
            pk = self._run_pk(conn, run_id)
            conn.execute(comparisons.delete().where(comparisons.c.run_pk == pk))
            for rec in verdicts.to_dict("records"):
                conn.execute(comparisons.insert().values(
                    run_pk=pk, **{c: plain(rec.get(c)) for c in ("baseline_run_id", "case_id", "quantity", "old", "new",
                                                                  "change", "p_value", "method", "verdict", "detail")}))

    def _run_pk(self, conn: sa.Connection, run_id: str) -> int:
        pk = conn.execute(sa.select(runs.c.id).where(runs.c.run_id == run_id)).scalar()
        if pk is None:
            raise HistoryError(f"no run {run_id!r} in {display_url(self.url)}; `quantbench history` lists the runs")
        return pk

    # -- reading -----------------------------------------------------------------------
    def _frame(self, query: sa.Select) -> pd.DataFrame:
        with self.engine.connect() as conn:
            result = conn.execute(query)
            return pd.DataFrame(result.mappings().all(), columns=list(result.keys()))

    def _tags_by_run(self, run_pks: Iterable[int]) -> dict[int, list[str]]:
        pks = sorted(set(int(p) for p in run_pks))
        tags: dict[int, list[str]] = {pk: [] for pk in pks}
        if not pks:
            return tags
        query = sa.select(run_tags.c.run_pk, run_tags.c.tag).where(run_tags.c.run_pk.in_(pks)).order_by(run_tags.c.tag)
        with self.engine.connect() as conn:
            for pk, tag in conn.execute(query):
                tags[pk].append(tag)
        return tags

    def runs(self, target: Selector = None, tag: Optional[str] = None, run_id: Selector = None,
             limit: Optional[int] = None) -> pd.DataFrame:
        """Runs, newest first: run_id, started_at, finished_at, target, ..., tags, and case counts by status.
        `target` selects the runs with results on that target (a fleet run's `target` column is
        its --target value, e.g. `pool:pi5,jetson`)."""
        query = sa.select(runs).where(*_where(runs, run_id=run_id)).order_by(runs.c.started_at.desc(), runs.c.id.desc())
        if target is not None:  # a run across devices is a run of each of its targets
            names = [target] if isinstance(target, (str, int)) else list(target)
            query = query.where(sa.or_(runs.c.target.in_(names),
                                       runs.c.id.in_(sa.select(results.c.run_pk).where(results.c.target.in_(names)))))
        if tag is not None:
            query = query.where(runs.c.id.in_(sa.select(run_tags.c.run_pk).where(run_tags.c.tag == tag)))
        if limit:
            query = query.limit(limit)
        df = self._frame(query)
        tags = self._tags_by_run(df["id"]) if len(df) else {}
        df["tags"] = [",".join(tags.get(pk, [])) for pk in df["id"]]
        counts = self._frame(sa.select(results.c.run_pk, results.c.status, sa.func.count().label("n"))
                             .where(results.c.run_pk.in_([int(p) for p in df["id"]])).group_by(results.c.run_pk, results.c.status))
        for status, column in (("ok", "n_ok"), ("error", "n_error"), ("n/a", "n_na")):
            sub = counts[counts["status"] == status].set_index("run_pk")["n"] if len(counts) else pd.Series(dtype=int)
            df[column] = [int(sub.get(pk, 0)) for pk in df["id"]]
        return df.rename(columns={"id": "run_pk"})

    def targets(self) -> list[str]:
        """Every target with results (a pool is one target; a run across devices adds each of its)."""
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(results.c.target).where(results.c.target.is_not(None)).distinct()).scalars()
            return sorted(found)

    def results(self, run_id: Selector = None, target: Selector = None, model: Selector = None, suite: Selector = None,
                framework: Selector = None, mode: Selector = None, batch_size: Selector = None, status: Selector = None,
                case_id: Selector = None, tag: Optional[str] = None, since: Optional[dt.datetime] = None) -> pd.DataFrame:
        """Rows with harness.report's columns (plus extras), oldest run first, each with
        run_started_at, tags and result_pk (the key of its raw latencies)."""
        from harness import report

        query = (sa.select(results, runs.c.run_id, runs.c.started_at.label("run_started_at"))
                 .join(runs, results.c.run_pk == runs.c.id)
                 .where(*_where(results, target=target, model=model, suite=suite, framework=framework, mode=mode,
                                batch_size=batch_size, status=status, case_id=case_id),
                        *_where(runs, run_id=run_id))
                 .order_by(runs.c.started_at, runs.c.id, results.c.id))
        if tag is not None:
            query = query.where(runs.c.id.in_(sa.select(run_tags.c.run_pk).where(run_tags.c.tag == tag)))
        if since is not None:
            query = query.where(runs.c.started_at >= since)
        df = self._frame(query)
        if df.empty:
            return report.frame([]).assign(run_started_at=pd.Series(dtype="datetime64[ns]"), tags=pd.Series(dtype=str),
                                           result_pk=pd.Series(dtype=int))
        extras = [json.loads(e) if isinstance(e, str) and e else {} for e in df.pop("extra")]
        extra_df = pd.DataFrame(extras, index=df.index)
        for column in extra_df.columns:
            if column not in df.columns:
                df[column] = extra_df[column]
        tags = self._tags_by_run(df["run_pk"])
        df["tags"] = [",".join(tags.get(pk, [])) for pk in df["run_pk"]]
        df = df.rename(columns={"id": "result_pk"}).drop(columns=["run_pk"])
        return report.frame(df.to_dict("records"))

    def latency_arrays(self, result_pks: Iterable[int]) -> dict[int, np.ndarray]:
        pks = sorted(set(int(p) for p in result_pks))
        out: dict[int, np.ndarray] = {}
        for start in range(0, len(pks), 500):  # keep IN lists short
            query = sa.select(latencies).where(latencies.c.result_pk.in_(pks[start:start + 500]))
            with self.engine.connect() as conn:
                for rec in conn.execute(query).mappings():
                    out[rec["result_pk"]] = decode_latencies(rec["data"], rec["encoding"])
        return out

    def latencies(self, run_id: Selector = None, case_id: Selector = None, target: Selector = None) -> pd.DataFrame:
        """Raw latencies in long form: run_id, case_id, i, latency_ms."""
        rows = self.results(run_id=run_id, case_id=case_id, target=target)
        arrays = self.latency_arrays(rows["result_pk"])
        parts = [pd.DataFrame({"run_id": r.run_id, "case_id": r.case_id, "i": np.arange(len(arrays[r.result_pk])),
                               "latency_ms": arrays[r.result_pk]})
                 for r in rows.itertuples() if r.result_pk in arrays]
        if not parts:
            return pd.DataFrame({"run_id": pd.Series(dtype=str), "case_id": pd.Series(dtype=str),
                                 "i": pd.Series(dtype=int), "latency_ms": pd.Series(dtype=float)})
        return pd.concat(parts, ignore_index=True)

    def power(self, run_id: Selector = None, case_id: Selector = None, target: Selector = None) -> pd.DataFrame:
        """Power samples of the timed windows in long form: run_id, case_id, t_s, power_w."""
        rows = self.results(run_id=run_id, case_id=case_id, target=target)
        pks = [int(p) for p in rows["result_pk"]]
        traces: dict[int, np.ndarray] = {}
        for start in range(0, len(pks), 500):
            with self.engine.connect() as conn:
                for rec in conn.execute(sa.select(power_traces).where(power_traces.c.result_pk.in_(pks[start:start + 500]))).mappings():
                    traces[rec["result_pk"]] = decode_latencies(rec["data"], rec["encoding"]).reshape(-1, 2)
        parts = [pd.DataFrame({"run_id": r.run_id, "case_id": r.case_id, "t_s": traces[r.result_pk][:, 0],
                               "power_w": traces[r.result_pk][:, 1]}) for r in rows.itertuples() if r.result_pk in traces]
        if not parts:
            return pd.DataFrame({"run_id": pd.Series(dtype=str), "case_id": pd.Series(dtype=str),
                                 "t_s": pd.Series(dtype=float), "power_w": pd.Series(dtype=float)})
        return pd.concat(parts, ignore_index=True)

    def comparisons(self, run_id: Selector = None, verdict: Selector = None) -> pd.DataFrame:
        query = (sa.select(comparisons, runs.c.run_id, runs.c.target, runs.c.started_at.label("run_started_at"))
                 .join(runs, comparisons.c.run_pk == runs.c.id)
                 .where(*_where(runs, run_id=run_id), *_where(comparisons, verdict=verdict))
                 .order_by(runs.c.started_at, comparisons.c.id))
        return self._frame(query).drop(columns=["id", "run_pk"], errors="ignore")

    def manifest(self, run_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            text = conn.execute(sa.select(runs.c.manifest).where(runs.c.run_id == run_id)).scalar()
        if text is None:
            raise HistoryError(f"no run {run_id!r} in {display_url(self.url)}; `quantbench history` lists the runs")
        return json.loads(text)

    def declared_limits(self, rows: pd.DataFrame) -> dict[str, Any]:
        """suite -> the Limits the newest run among `rows` declared for it (run.json's limits.declared)."""
        from harness.limits import Limits

        found: dict[str, Any] = {}
        wanted = set(rows["suite"].dropna()) if "suite" in rows else set()
        query = (sa.select(runs.c.manifest).where(runs.c.run_id.in_([str(r) for r in rows.get("run_id", pd.Series()).unique()]))
                 .order_by(runs.c.started_at.desc(), runs.c.id.desc()))  # newest first: a suite's newest declaration wins
        with self.engine.connect() as conn:
            for text in conn.execute(query).scalars():
                for suite, values in ((json.loads(text or "{}").get("limits") or {}).get("declared") or {}).items():
                    found.setdefault(suite, Limits.from_dict(values))
                if wanted <= set(found):
                    break
        return found


def current_version(conn: sa.Connection) -> int:
    if not sa.inspect(conn).has_table(schema_version.name):
        return 0
    return int(conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0)


def migrate(engine: sa.Engine, upto: int = LATEST_VERSION) -> int:
    """Bring the database forward to version `upto`; concurrent callers wait for each other."""
    with engine.connect() as conn:
        have = current_version(conn)
        conn.rollback()
    if have > LATEST_VERSION:
        raise HistoryError(f"the results database {display_url(str(engine.url))} has schema version {have}, newer than "
                           f"this quantbench knows ({LATEST_VERSION}); upgrade quantbench")
    if have >= upto:
        return have
    with engine.connect().execution_options(qb_write=True) as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        if not sa.inspect(conn).has_table(schema_version.name):
            schema_version.create(conn)
        have = current_version(conn)  # again, under the lock: another process may have migrated
        for version, description, apply in MIGRATIONS:
            if have < version <= upto:
                apply(conn)
                conn.execute(schema_version.insert().values(version=version, description=description, applied_at=_now()))
                have = version
    return have


__all__ = ["ENV_VAR", "HistoryDB", "HistoryError", "display_url", "migrate", "resolve_url", "schema"]
