"""The results database on both backends: a real run in and out unchanged, the schema built by
its migrations equals the declared one, forward migration keeps data, two concurrent writers
lose nothing. The PostgreSQL server is real (Debian's packages, started by the test)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from harness.history import schema
from harness.history.db import ENV_VAR, HistoryDB, HistoryError, migrate, resolve_url
from harness.store import read_run_dir
from harness.testing.postgres import PostgresServer
from tests.history_support import REPO_ROOT, real_runs, wait_for


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.sqlite'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return real_runs(tmp_path_factory)


def test_a_real_run_round_trips(db_url, runs):
    run_dir = runs[0]
    db = HistoryDB(db_url)
    db.append_run_dir(run_dir, tags=["nightly", "abc123"])
    expected = pd.read_parquet(run_dir / "results.parquet").sort_values("case_id").reset_index(drop=True)
    got = db.results(run_id=run_dir.name).sort_values("case_id").reset_index(drop=True)
    assert len(got) == len(expected) == 6
    assert set(got["status"]) == {"ok", "n/a"}
    for column in expected.columns:  # every column of the report, extras included, comes back
        a, b = expected[column], got[column]
        if pd.api.types.is_float_dtype(a):
            np.testing.assert_allclose(b.astype(float), a.astype(float), rtol=0, atol=0, equal_nan=True, err_msg=column)
        else:
            assert [None if pd.isna(x) else x for x in b] == [None if pd.isna(x) else x for x in a], column
    lat = db.latencies(run_id=run_dir.name).sort_values(["case_id", "i"]).reset_index(drop=True)
    want = pd.read_parquet(run_dir / "latencies.parquet").sort_values(["case_id", "i"]).reset_index(drop=True)
    assert len(lat) == len(want) > 0
    np.testing.assert_array_equal(lat["latency_ms"].to_numpy(), want["latency_ms"].to_numpy())  # bit for bit
    assert list(lat["case_id"]) == list(want["case_id"])

    listed = db.runs()
    assert list(listed["run_id"]) == [run_dir.name]
    row = listed.iloc[0]
    assert (row["n_ok"], row["n_na"], row["n_error"], row["tags"], row["target"]) == (5, 1, 0, "abc123,nightly", "local")
    assert db.manifest(run_dir.name)["run_id"] == run_dir.name

    db.append_run_dir(run_dir, tags=["again"])  # the same run id again replaces it
    assert len(db.runs()) == 1 and len(db.results()) == 6
    assert db.runs().iloc[0]["tags"] == "again"
    db.add_tags(run_dir.name, ["nightly", "again"])
    assert db.runs(tag="nightly")["run_id"].tolist() == [run_dir.name]
    assert db.results(tag="nope").empty and db.results(mode="static-int8", status="ok")["mode"].tolist() == ["static-int8"]
    with pytest.raises(HistoryError, match="no run 'missing'"):
        db.add_tags("missing", ["x"])


def test_migrations_build_exactly_the_declared_schema(db_url):
    engine = sa.create_engine(db_url)
    assert migrate(engine) == schema.LATEST_VERSION
    inspector = sa.inspect(engine)
    assert set(inspector.get_table_names()) >= set(schema.metadata.tables)
    for name, table in schema.metadata.tables.items():
        have = {c["name"]: c for c in inspector.get_columns(name)}
        assert set(have) == {c.name for c in table.columns}, name
        for column in table.columns:
            assert have[column.name]["nullable"] == column.nullable or column.primary_key, (name, column.name)
        assert {i["name"] for i in inspector.get_indexes(name)} >= {i.name for i in table.indexes}, name
    with engine.connect() as conn:
        versions = conn.execute(sa.select(schema.schema_version.c.version).order_by(schema.schema_version.c.version)).scalars()
        assert list(versions) == [v for v, _, _ in schema.MIGRATIONS]
    engine.dispose()


def test_a_version_1_database_migrates_forward_and_keeps_its_runs(db_url, runs):
    engine = sa.create_engine(db_url)
    assert migrate(engine, upto=1) == 1
    assert not sa.inspect(engine).has_table(schema.comparisons.name)
    manifest, rows, _ = read_run_dir(runs[0])
    with engine.begin() as conn:  # what version 1 of quantbench wrote
        pk = conn.execute(schema.runs.insert().values(
            run_id="v1-run", started_at=pd.Timestamp(manifest["started_at"]).tz_localize(None).to_pydatetime(),
            target="local", recorded_at=pd.Timestamp.now().to_pydatetime(), n_cases=1)).inserted_primary_key[0]
        conn.execute(schema.results.insert().values(run_pk=pk, case_id=rows[0]["case_id"], status=rows[0]["status"],
                                                    model=rows[0]["model"], target="local"))
    engine.dispose()
    db = HistoryDB(db_url)  # opening migrates
    assert db.version == schema.LATEST_VERSION
    assert db.results(run_id="v1-run")["case_id"].tolist() == [rows[0]["case_id"]]
    assert db.comparisons().empty  # the table version 2 added exists


def test_a_newer_schema_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    HistoryDB(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(schema.schema_version.insert().values(version=99, description="from the future",
                                                           applied_at=pd.Timestamp.now().to_pydatetime()))
    with pytest.raises(HistoryError, match="schema version 99, newer than"):
        HistoryDB(url)


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness.history.db import HistoryDB
    from harness.store import read_run_dir
    url, run_dir, prefix, n, go = sys.argv[1:6]
    manifest, rows, lat = read_run_dir(Path(run_dir))
    Path(go + "." + prefix).touch()          # ready
    while not Path(go).exists():             # start together
        time.sleep(0.005)
    start = time.time()
    db = HistoryDB(url)                      # both may find an empty database and migrate at once
    for i in range(int(n)):
        run_id = f"{prefix}-{i}"
        db.append_run(dict(manifest, run_id=run_id), [dict(r, run_id=run_id) for r in rows], lat, tags=[prefix])
    print(start, time.time())
""")


def test_two_concurrent_writers_lose_nothing(db_url, runs, tmp_path):
    """Two processes append 8 copies each of a real run (under their own run ids) at the same time."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, db_url, str(runs[i]), f"writer{i}", "8", str(go)],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    for i in (0, 1):
        wait_for(tmp_path / f"go.writer{i}", 120)
    go.touch()
    spans = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        spans.append([float(t) for t in out.split()])
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"the writers did not overlap: {spans}"
    db = HistoryDB(db_url)
    listed = db.runs()
    assert sorted(listed["run_id"]) == sorted(f"writer{i}-{k}" for i in (0, 1) for k in range(8))
    for i in (0, 1):
        _, rows, lat = read_run_dir(runs[i])
        for k in range(8):
            got = db.results(run_id=f"writer{i}-{k}")
            assert sorted(got["case_id"]) == sorted(r["case_id"] for r in rows)
            arrays = db.latency_arrays(got["result_pk"])
            for r in got.itertuples():
                want = np.asarray(lat[r.case_id])
                if len(want):
                    np.testing.assert_array_equal(arrays[r.result_pk], want)
                else:
                    assert r.result_pk not in arrays
    assert set(listed["tags"]) == {"writer0", "writer1"}


def test_where_the_database_is(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'history.sqlite'}"
    assert resolve_url(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path.resolve() / 'x.db'}"
    assert resolve_url("postgresql://bench@db.lab/qb") == "postgresql+psycopg://bench@db.lab/qb"
    assert resolve_url("off") is None
    monkeypatch.setenv(ENV_VAR, "postgresql://u:secret@h/qb")
    assert resolve_url(None, tmp_path) == "postgresql+psycopg://u:secret@h/qb"
    assert resolve_url(str(tmp_path / "y.db"), tmp_path).endswith("y.db")  # the flag wins over the variable
    from harness.history.db import display_url

    assert "secret" not in display_url(resolve_url(None))
    with pytest.raises(HistoryError, match="cannot open the results database postgresql\\+psycopg://u:\\*\\*\\*@127.0.0.1:1/qb"):
        HistoryDB("postgresql+psycopg://u:secret@127.0.0.1:1/qb")
