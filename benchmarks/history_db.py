"""What does the results history cost a run, and how fast are the queries a nightly job makes?

One real run of the digits onnxruntime cases (the suite's default timing unless --seconds is
given, so the raw latencies are as many as a nightly records), then, side by side in this run:
  baseline   rebuilding results/<run-id>/ (parquet + csv) from the per-case files, which every
             run already does at its end (harness.store.rebuild)
  append     HistoryDB.append_run_dir into SQLite and into PostgreSQL (a throwaway local server)
  gate       select_baseline(latest) + compare() for the whole run against the previous copy
  queries    results(target=...) over the whole history, latencies(run_id=...), recommend()
with the database holding --history copies of the run. Goals: append <= 1x the baseline per
run; the gate under 1 s for the run; bytes per stored run within 1.5x of its parquet files.

    .venv/bin/python benchmarks/history_db.py [--history 30] [--rounds 5] [--seconds S] [--run DIR]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from harness.history.db import HistoryDB
from harness.history.gates import Gates
from harness.history.recommend import for_target
from harness.history.regress import compare, select_baseline
from harness.store import read_run_dir, rebuild


SUITE = """from harness import Suite
from harness.models import digits_cnn
suite = Suite(model=digits_cnn, frameworks=("onnxruntime",), modes=("fp32", "fp16", "dynamic-int8", "static-int8", "mixed"))
test_case = suite.pytest_cases()
"""


def make_run(work: Path, seconds: float | None) -> Path:
    (work / "test_bench_digits.py").write_text(SUITE)
    timing = ["--min-duration", str(seconds), "--max-duration", str(max(seconds, 0.1) * 2)] if seconds else []
    cmd = [sys.executable, "-m", "pytest", str(work / "test_bench_digits.py"), "-p", "harness.pytest_plugin", "-p",
           "no:cacheprovider", "-q", f"--qb-results-dir={work / 'results'}", "--qb-run-id=bench", f"--rootdir={work}",
           "--qb-results-db=off", *timing]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the digits run failed:\n{proc.stdout[-3000:]}")
    return work / "results" / "bench"


def timed(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(db: HistoryDB, run_dir: Path, history: int, rounds: int) -> dict[str, float]:
    manifest, rows, lat = read_run_dir(run_dir)
    counter = iter(range(10**6))

    def append() -> None:
        run_id = f"bench-{next(counter)}"
        db.append_run(dict(manifest, run_id=run_id), [dict(r, run_id=run_id) for r in rows], lat)

    for _ in range(max(history - rounds, 1)):
        append()
    figures = {"append_s": timed(append, rounds)}
    newest = db.runs(limit=1).iloc[0]["run_id"]
    frame = pd.DataFrame(rows)

    def gate() -> None:
        baseline = select_baseline(db, "latest", "local", exclude_run_id=newest)
        compare(frame, baseline, Gates(), lambda c: np.asarray(lat[c]),
                lambda r: db.latency_arrays([r["result_pk"]]).get(r["result_pk"]))

    figures["gate_s"] = timed(gate, rounds)
    figures["results_s"] = timed(lambda: db.results(target="local"), rounds)
    figures["latencies_s"] = timed(lambda: db.latencies(run_id=newest), rounds)
    figures["recommend_s"] = timed(lambda: for_target(db, "local"), rounds)
    figures["runs"] = len(db.runs())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=int, default=30, help="copies of the run in the database when querying")
    parser.add_argument("--rounds", type=int, default=5, help="repetitions per figure (median reported)")
    parser.add_argument("--seconds", type=float, default=None, help="min timed seconds per case (default: the suite's)")
    parser.add_argument("--run", type=Path, default=None, help="use this results/<run-id>/ instead of measuring one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="qb-bench-history-") as tmp:
        work = Path(tmp)
        run_dir = args.run or make_run(work, args.seconds)
        _, rows, lat = read_run_dir(run_dir)
        n_lat = sum(len(v) for v in lat.values())
        parquet_bytes = sum((run_dir / f).stat().st_size for f in ("results.parquet", "latencies.parquet", "results.csv"))
        baseline = timed(lambda: rebuild(run_dir), args.rounds)
        print(f"run: {len(rows)} cases, {n_lat} raw latencies; results/ files {parquet_bytes / 1e6:.2f} MB")
        print(f"baseline store.rebuild (parquet + csv): {1000 * baseline:8.1f} ms")

        backends = {"sqlite": lambda: HistoryDB(f"sqlite:///{work / 'history.sqlite'}")}
        server = None
        try:
            from harness.testing.postgres import PostgresServer

            server = PostgresServer()
            backends["postgresql"] = lambda: HistoryDB(server.new_database())
        except BaseException as exc:  # pytest.skip raises a BaseException subclass
            print(f"postgresql: not measured ({exc})")
        try:
            for name, open_db in backends.items():
                db = open_db()
                f = measure(db, run_dir, args.history, args.rounds)
                size = (work / "history.sqlite").stat().st_size / f["runs"] if name == "sqlite" else None
                print(f"{name:10s} append {1000 * f['append_s']:8.1f} ms ({f['append_s'] / baseline:4.2f}x baseline) | "
                      f"gate vs latest {1000 * f['gate_s']:7.1f} ms | with {f['runs']} runs: results() "
                      f"{1000 * f['results_s']:7.1f} ms, latencies(run) {1000 * f['latencies_s']:7.1f} ms, "
                      f"recommend {1000 * f['recommend_s']:7.1f} ms"
                      + (f" | {size / 1e6:.2f} MB per run ({size / parquet_bytes:.2f}x results/ files)" if size else ""))
                db.close()
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
