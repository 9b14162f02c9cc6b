"""What does the end of a run cost: the answer (recommend over the run's rows) and the dashboard
rebuilt from the results database, beside the run's own wall time (the baseline: what the user
already waited for).

Reads a results database that already holds runs (by default the repository's
results/history.sqlite, which `./scripts/run.sh` fills), and for its newest run (or --run):
  run        the run's wall time, from run.json's started_at .. finished_at
  answer     answer_lines() over that run's rows (what the end of a run prints)
  dashboard  harness.history.dashboard.build into a temporary folder: cold in a fresh Python
             process (imports of pandas/matplotlib included, as at the end of a run) and warm in
             this one, --rounds times each; trend images are SVG text, the Pareto plot and bars PNG
Goal: the answer and the dashboard together add under 5% to the main job's wall time.

    .venv/bin/python benchmarks/end_of_run.py [--results-db PATH|URL] [--run RUN_ID] [--rounds 3]
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.history.answer import answer_lines
from harness.history.dashboard import build
from harness.history.db import HistoryDB

REPO = Path(__file__).resolve().parent.parent

COLD = """
import sys, time
start = time.perf_counter()
from harness.history.dashboard import build
from harness.history.db import HistoryDB
build(HistoryDB.open(sys.argv[1]), sys.argv[2])
print(time.perf_counter() - start)
"""


def _seconds(manifest: dict) -> float | None:
    try:
        start = dt.datetime.fromisoformat(str(manifest["started_at"]).replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(str(manifest["finished_at"]).replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-db", default=str(REPO / "results" / "history.sqlite"))
    parser.add_argument("--run", default=None, help="run id (default: the newest run in the database)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    db = HistoryDB.open(args.results_db)
    runs = db.runs()
    if runs.empty:
        print(f"no runs in {args.results_db}: run ./scripts/run.sh first", file=sys.stderr)
        return 2
    run_id = args.run or runs.iloc[0]["run_id"]
    rows = db.results(run_id=run_id)
    wall = _seconds(db.manifest(run_id))
    history = db.results()
    print(f"results database {args.results_db}: {len(runs)} run(s), {len(history)} row(s); "
          f"run {run_id}: {len(rows)} case(s), {int((rows['status'] == 'ok').sum())} ok")

    answer_s, dashboard_warm, dashboard_cold = [], [], []
    with tempfile.TemporaryDirectory(prefix="qb-end-of-run-") as tmp:
        for i in range(args.rounds):
            start = time.perf_counter()
            lines = answer_lines(rows)
            answer_s.append(time.perf_counter() - start)
            cold = subprocess.run([sys.executable, "-c", COLD, args.results_db, f"{tmp}/cold-{i}"], cwd=REPO,
                                  capture_output=True, text=True, check=True)
            dashboard_cold.append(float(cold.stdout.strip().splitlines()[-1]))
            start = time.perf_counter()
            build(db, Path(tmp) / f"warm-{i}")
            dashboard_warm.append(time.perf_counter() - start)
        trends = len(list((Path(tmp) / "warm-0").rglob("trend-*.svg")))
        pngs = len(list((Path(tmp) / "warm-0").rglob("*.png")))

    def med(values: list[float]) -> float:
        return statistics.median(values)

    print(f"{'':<22}{'median s':>10}{'min s':>9}{'max s':>9}")
    for name, values in (("answer", answer_s), ("dashboard (cold)", dashboard_cold), ("dashboard (warm)", dashboard_warm)):
        print(f"{name:<22}{med(values):>10.3f}{min(values):>9.3f}{max(values):>9.3f}")
    print(f"dashboard: {trends} SVG trend(s), {pngs} PNG(s) (Pareto + bars per model and batch)")
    if wall:
        added = med(answer_s) + med(dashboard_cold)
        print(f"run {run_id} took {wall:.1f} s; the answer and a cold dashboard add {added:.2f} s ({100 * added / wall:.1f}%)")
    else:
        print(f"run {run_id} has no finished_at in run.json: no wall time to compare with")
    print("the answer:")
    for line in lines:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
