"""The history schema (SQLAlchemy Core) and its forward migrations.

`metadata` describes the *current* schema. A database is never built from it directly:
it is built by applying MIGRATIONS in order, so a new database and one upgraded from
version 1 end up identical (tests/test_history_db.py checks that the migrated database
matches `metadata`). To change the schema, append a migration and update the current
tables; never edit a migration (or the _vN builder it uses) that has shipped.

Every core result column of the registry (harness/columns.py) at the time of a migration has a typed column
(queryable in SQL); columns added to rows later land in `extra` (JSON) until a
migration promotes them, so no value is ever dropped.
"""
from __future__ import annotations

from typing import Callable

import sqlalchemy as sa

from harness import columns

PREFIX = "qb_"  # tables share a PostgreSQL database with other applications

S, T, I, B, F, BIG = sa.String(300), sa.Text, sa.Integer, sa.Boolean, sa.Double, sa.BigInteger
SQL_TYPES: dict[str, sa.types.TypeEngine] = {"s": S, "s16": sa.String(16), "s32": sa.String(32), "s64": sa.String(64),
                                              "t": T, "i": I, "b": B, "f": F, "big": BIG}
# The core columns of the registry (harness/columns.py) as of its version 1, minus run_id (it lives
# in runs), with their types: schema version 1's typed result columns.
RESULT_COLUMNS_V1: dict[str, sa.types.TypeEngine] = {name: SQL_TYPES[kind] for name, kind in columns.typed(1).items()}


def _v1(md: sa.MetaData) -> tuple[sa.Table, ...]:
    """Version 1 as it shipped: runs, their tags, one row per case, raw latencies."""
    runs = sa.Table(
        f"{PREFIX}runs", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(200), nullable=False, unique=True),
        sa.Column("started_at", sa.DateTime, nullable=False),  # UTC, naive
        sa.Column("finished_at", sa.DateTime),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("target_kind", sa.String(32)),
        sa.Column("profile", sa.String(64)),
        sa.Column("device", sa.String(300)),
        sa.Column("host", sa.String(300)),
        sa.Column("suites", sa.Text),  # comma-separated
        sa.Column("command", sa.Text),  # JSON list
        sa.Column("n_cases", sa.Integer),
        sa.Column("manifest", sa.Text),  # run.json as written by harness.store
        sa.Column("recorded_at", sa.DateTime, nullable=False),
        sa.Index(f"{PREFIX}runs_target_started", "target", "started_at"),
    )
    run_tags = sa.Table(
        f"{PREFIX}run_tags", md,
        sa.Column("run_pk", sa.Integer, sa.ForeignKey(f"{PREFIX}runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(200), primary_key=True),
        sa.Index(f"{PREFIX}run_tags_tag", "tag"),
    )
    results = sa.Table(
        f"{PREFIX}results", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_pk", sa.Integer, sa.ForeignKey(f"{PREFIX}runs.id", ondelete="CASCADE"), nullable=False),
        *[sa.Column(name, type_, nullable=name != "case_id") for name, type_ in RESULT_COLUMNS_V1.items()],
        sa.Column("extra", sa.Text),  # JSON: row columns without a typed column
        sa.UniqueConstraint("run_pk", "case_id", name=f"{PREFIX}results_run_case"),
        sa.Index(f"{PREFIX}results_key", "target", "model", "framework", "mode", "batch_size"),
    )
    # Raw per-inference latencies of one result: zlib-compressed little-endian float64, in ms.
    latencies = sa.Table(
        f"{PREFIX}latencies", md,
        sa.Column("result_pk", sa.Integer, sa.ForeignKey(f"{PREFIX}results.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("encoding", sa.String(16), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    return runs, run_tags, results, latencies


def _v2(md: sa.MetaData) -> tuple[sa.Table, ...]:
    """Version 2: the gate verdicts of a run against its baseline (what regressed, and why)."""
    comparisons = sa.Table(
        f"{PREFIX}comparisons", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_pk", sa.Integer, sa.ForeignKey(f"{PREFIX}runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("baseline_run_id", sa.String(200)),  # by name: the baseline run may be pruned later
        sa.Column("case_id", sa.String(300), nullable=False),
        sa.Column("quantity", sa.String(32), nullable=False),  # latency_p50_ms, accuracy, size_bytes, ...
        sa.Column("old", sa.Double),
        sa.Column("new", sa.Double),
        sa.Column("change", sa.Double),  # relative for latency/size/memory/energy, points for accuracy
        sa.Column("p_value", sa.Double),
        sa.Column("method", sa.String(32)),  # mann-whitney, ci99, threshold
        sa.Column("verdict", sa.String(16), nullable=False),  # regression, improvement, same, noisy
        sa.Column("detail", sa.Text),
        sa.Index(f"{PREFIX}comparisons_run", "run_pk"),
    )
    return (comparisons,)


def _v3(md: sa.MetaData) -> tuple[sa.Table, ...]:
    """Version 3: the power samples of a result's timed window (harness.store's power.parquet)."""
    power_traces = sa.Table(
        f"{PREFIX}power_traces", md,
        sa.Column("result_pk", sa.Integer, sa.ForeignKey(f"{PREFIX}results.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),  # samples
        sa.Column("encoding", sa.String(16), nullable=False),
        # zlib-compressed little-endian float64 pairs: (seconds since the window opened, watts)
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    return (power_traces,)


# The current schema (what the queries use). A future migration that alters a table also
# alters the objects here (e.g. results.append_column(...)); _v1/_v2 stay as they shipped.
metadata = sa.MetaData()
schema_version = sa.Table(
    f"{PREFIX}schema_version", metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied_at", sa.DateTime, nullable=False),
)
runs, run_tags, results, latencies = _v1(metadata)
(comparisons,) = _v2(metadata)
(power_traces,) = _v3(metadata)


def _create(*builders: Callable[[sa.MetaData], tuple[sa.Table, ...]]) -> Callable[[sa.Connection], None]:
    """Create the tables of the last builder; earlier builders only resolve its foreign keys."""
    def apply(conn: sa.Connection) -> None:
        md = sa.MetaData()
        tables = [builder(md) for builder in builders][-1]
        for table in tables:
            table.create(conn)
    return apply


# (version, what it does, apply(conn)). Version N is applied to a database at version N-1,
# inside one transaction with the version row, so a failed migration leaves nothing behind.
MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "runs, run tags, results with raw latencies", _create(_v1)),
    (2, "comparisons: gate verdicts of a run against its baseline", _create(_v1, _v2)),
    (3, "power traces: the power samples of each result's timed window", _create(_v1, _v3)),
]
LATEST_VERSION = MIGRATIONS[-1][0]
