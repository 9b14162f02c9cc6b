"""Two runs sharing a labgrid lab: what waiting for places costs, and that they never share a board.

A real labgrid-coordinator and labgrid-exporter on loopback publish three sshd "boards" as places
tagged board=shelf (harness.testing.labgrid, harness.testing.sshd). The digits onnxruntime cases
of suites/test_digits.py (`-k onnxruntime`) run, in the same invocation:
  1. baseline: one run alone on the pool             pytest ... --target=lab:board=shelf -n 2
  2. two such runs started together (two CI jobs)    the same command twice, at once
All boards run their runners on THIS machine, so the runs also share its CPU: the wall times
say what a lab of real boards would cost only in the waiting for places, not in the CPU.
Artifacts are built by a warm-up run first, so every side measures scheduling and measuring.

Printed: each run's wall time (beside the solo baseline), the time its cases waited for a place
(run.log's lease lines: the rows' lease_wait_s, which includes the wait at the coordinator), and the overlap found: the
seconds during which both runs held the same board, from the rows' own windows (`board`,
`held_from`, `held_until`: each case's hold, to the millisecond; must be 0).

    .venv/bin/python benchmarks/lab_share.py [--min-duration 0.5] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from harness.testing.labgrid import Board, Lab
from harness.testing.sshd import inventory_toml, make_sshd

REPO = Path(__file__).resolve().parent.parent
BOARDS = ("dev-a", "dev-b", "dev-c")


def inventory(where: Path, lab: Lab, sshds: dict) -> Path:
    first = next(iter(sshds.values()))
    known = where / "known_hosts"
    known.write_text("".join(s.known_hosts.read_text() for s in sshds.values()))
    for sshd in sshds.values():  # one user key opens every board
        (sshd.dir / "authorized_keys").write_text(first.user_key.with_suffix(".pub").read_text())
    defaults = {"coordinator": lab.address, "python": sys.executable, "identity_file": str(first.user_key),
                "known_hosts": str(known), "ssh_config": "", "workdir": str(where / "work-{place}"), "threads": 1}
    path = where / "targets.toml"
    path.write_text(inventory_toml({"x": defaults}).replace('[targets."x"]', "[labgrid]").replace("[targets.x]", "[labgrid]"))
    return path


def start(where: Path, run_id: str, workers: int, min_duration: float) -> tuple[subprocess.Popen, float]:
    cmd = [sys.executable, "-m", "pytest", str(REPO / "suites" / "test_digits.py"), "-k", "onnxruntime", "-q",
           "-p", "no:cacheprovider", f"--qb-inventory={where / 'targets.toml'}", f"--qb-results-dir={where / 'results'}",
           f"--qb-run-id={run_id}", "--qb-results-db=off", "--qb-dashboard=off", "--min-duration", str(min_duration),
           "--target=lab:board=shelf", "-n", str(workers)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    return proc, time.perf_counter()


def wait(proc: subprocess.Popen, started: float) -> float:
    output, _ = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):  # 1: a case over its budget; the timing is what it is
        raise SystemExit(f"pytest failed ({proc.returncode}):\n{output[-4000:]}")
    return wall


def held(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """board -> the run's distinct holds on it, from its rows' held_from/held_until (an fp32 row
    measured first under a case's hold shares that window); a row a board ran without both is an error."""
    from datetime import datetime

    from harness.store import load_run

    def instant(stamp: str) -> float:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

    spans = defaultdict(set)
    for row in load_run(run_dir).to_dict("records"):
        if isinstance(row.get("board"), str):
            if not (isinstance(row.get("held_from"), str) and isinstance(row.get("held_until"), str)):
                raise SystemExit(f"{run_dir.name}: row {row['case_id']} ran on {row['board']} without its window")
            spans[row["board"]].add((instant(row["held_from"]), instant(row["held_until"])))
    return {board: sorted(found) for board, found in spans.items()}


def waited(run_dir: Path) -> tuple[float, int, float]:
    """(seconds the run's leases waited for a place in all, leases, the longest single wait), from
    run.log's lease lines (one per case that held a board; the wait includes the coordinator's)."""
    waits = [float(w) for w in re.findall(r"^\[\S+\] lease \S+ [\d.]+-[\d.]+ \(waited ([\d.]+) s",
                                          (run_dir / "run.log").read_text(), re.M)]
    return sum(waits), len(waits), max(waits, default=0.0)


def overlap(a: dict, b: dict) -> float:
    total = 0.0
    for board in set(a) & set(b):
        for s1, e1 in a[board]:
            for s2, e2 in b[board]:
                total += max(0.0, min(e1, e2) - max(s1, s2))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-duration", type=float, default=0.5, help="each case's minimum timed duration (s)")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qb-lab-share-") as tmp:
        where = Path(tmp)
        sshds, lab = {}, None
        try:
            for name in BOARDS:
                sshds[name] = make_sshd(where / f"sshd-{name}")
            lab = Lab.start(where / "lab")
            lab.export({name: Board(sshd, {"board": "shelf"}) for name, sshd in sshds.items()})
            inventory(where, lab, sshds)
            wait(*start(where, "warmup", args.workers, 0.05))  # artifacts built, runner shipped to each board
            solo = wait(*start(where, "solo", args.workers, args.min_duration))
            one, two = start(where, "one", args.workers, args.min_duration), start(where, "two", args.workers, args.min_duration)
            walls = {"one": wait(*one), "two": wait(*two)}
            left = {n: p.acquired for n, p in lab.places().items() if p.acquired}
        finally:
            if lab is not None:
                lab.stop()
            for sshd in sshds.values():
                sshd.stop()
        results = where / "results"
        print(f"load: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPU(s); {len(BOARDS)} places, {args.workers} "
              f"workers per run, --min-duration {args.min_duration}")
        total, cases, longest = waited(results / "solo")
        print(f"baseline  one run alone:    wall {solo:6.1f} s, {cases} cases, waited {total:6.1f} s for places (longest {longest:.1f} s)")
        for run_id, wall in walls.items():
            total, cases, longest = waited(results / run_id)
            print(f"together  run {run_id:<3}:          wall {wall:6.1f} s ({wall / solo:.2f} x alone), {cases} cases, "
                  f"waited {total:6.1f} s for places (longest {longest:.1f} s)")
        one, two = held(results / "one"), held(results / "two")
        found = overlap(one, two)
        print(f"overlap: {found:.3f} s during which both runs held the same board, from the rows' held_from/held_until "
              f"({sum(map(len, one.values()))} + {sum(map(len, two.values()))} holds; must be 0); "
              f"places left acquired: {left or 'none'}")
        if found > 0 or left:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
