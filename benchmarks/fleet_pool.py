"""What does a pool of boards buy, and what does the fleet's scheduling cost per case?

The digits onnxruntime cases of suites/test_digits.py (`-k onnxruntime`), run twice in the same
invocation, as a user runs them:
  1. serially on one loopback ssh "device"          pytest ... --target=dev-a
  2. on a pool of three loopback devices, 3 workers  pytest ... --target=pool:shelf -n 3
Each device is its own Debian sshd on 127.0.0.1 (harness.testing.sshd) with its own work directory;
all three run their runners on THIS machine, so on a 2-core host the three devices share two
cores: the wall-time gain is bounded by the CPU (and the pool's timings are not a quiet
measurement), not by the scheduler. Artifacts are built before the first timed run (a warm-up
run), so both sides measure scheduling and measuring, not quantizing.

Printed: wall time of each side and their ratio; per case, the scheduling overhead: the time a
worker spends between releasing one board and holding the next, minus the time it waited for a
free board (xdist dispatch, pytest's per-test work, the row and the shared files: what the
fleet adds to a case), from run.log's lease lines; goal under 0.5 s.

    .venv/bin/python benchmarks/fleet_pool.py [--min-duration 1.0] [--workers 3]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from harness.testing.sshd import inventory_toml, make_sshd  # a real sshd on 127.0.0.1 with generated keys

REPO = Path(__file__).resolve().parent.parent

BOARDS = ("dev-a", "dev-b", "dev-c")


def pytest(where: Path, run_id: str, *extra: str, min_duration: float) -> tuple[float, float]:
    """(wall seconds, the epoch time it started)."""
    cmd = [sys.executable, "-m", "pytest", str(REPO / "suites" / "test_digits.py"), "-k", "onnxruntime", "-q",
           "-p", "no:cacheprovider", f"--qb-inventory={where / 'targets.toml'}", f"--qb-results-dir={where / 'results'}",
           f"--qb-run-id={run_id}", "--qb-results-db=off", "--min-duration", str(min_duration), *extra]
    epoch, started = time.time(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):  # 1: a case failed its budget; the timing is still what it is
        raise SystemExit(f"pytest {' '.join(extra)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return wall, epoch


def overheads(run_dir: Path) -> tuple[list[float], list[float], int]:
    """Per case: the gap between a worker's consecutive leases minus the wait; the waits; cases."""
    spans = defaultdict(list)  # worker -> [(from, to, waited)]
    for start, end, waited, worker in re.findall(r"^\[\S+\] lease \S+ ([\d.]+)-([\d.]+) \(waited ([\d.]+) s, worker (\S+)\)",
                                                 (run_dir / "run.log").read_text(), re.M):
        spans[worker].append((float(start), float(end), float(waited)))
    gaps, waits, cases = [], [], 0
    for worker, items in spans.items():
        items.sort()
        cases += len(items)
        waits += [w for _, _, w in items]
        for (_, end, _), (start, _, waited) in zip(items, items[1:]):
            gaps.append(max(0.0, start - end - waited))
    return gaps, waits, cases


def phases(run_dir: Path, epoch: float, wall: float) -> str:
    """Where the wall time went: before the first board was leased (pytest, xdist workers, imports,
    the fp32 model), while boards measured, after the last was released (report, history)."""
    found = re.findall(r"^\[\S+\] lease (\S+) ([\d.]+)-([\d.]+)", (run_dir / "run.log").read_text(), re.M)
    spans = [(float(a), float(b)) for _, a, b in found]
    boards = len({board for board, _, _ in found})
    first, last = min(a for a, _ in spans), max(b for _, b in spans)
    busy = sum(b - a for a, b in spans)
    fp32s = len(list((run_dir / "fleet" / "baselines").glob("*/*.json")))
    return (f"startup {first - epoch:.1f} s, measuring {last - first:.1f} s (boards held {busy:.1f} s in all: "
            f"{busy / ((last - first) * boards):.0%} of {boards} board(s)' time"
            + (f"; {fp32s} fp32 measurements across boards" if fp32s else "") + f"), finish {epoch + wall - last:.1f} s")


def describe(values: list[float]) -> str:
    if not values:
        return "n/a (one case per worker)"
    values = sorted(values)
    return (f"median {statistics.median(values):.3f} s, p90 {values[int(0.9 * (len(values) - 1))]:.3f} s, "
            f"max {values[-1]:.3f} s over {len(values)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--min-duration", type=float, default=1.0, help="timed seconds per case (the suite default)")
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    flags = open("/proc/cpuinfo").read()
    print(f"host: {os.cpu_count()} logical CPUs, avx512_vnni={'avx512_vnni' in flags}, "
          f"load average {os.getloadavg()[0]:.2f} before the run")
    print("cases: suites/test_digits.py -k onnxruntime (the quick profile); timed window "
          f"{args.min_duration:g} s per case; ssh devices on 127.0.0.1")
    with tempfile.TemporaryDirectory(prefix="qb-fleet-bench-") as tmp:
        where = Path(tmp)
        devices = {name: make_sshd(where / f"sshd-{name}") for name in BOARDS}
        try:
            targets = {name: sshd.target(python=sys.executable, workdir=str(where / f"work-{name}"))
                       for name, sshd in devices.items()}
            (where / "targets.toml").write_text(inventory_toml(targets) + f'[pools.shelf]\ntargets = {list(BOARDS)}\n'.replace("'", '"'))
            # warm-up: builds every artifact and ships the bundles to each device (not timed)
            pytest(where, "warmup", "--target=" + ",".join(BOARDS), "-n", str(args.workers), min_duration=0.1)
            serial, serial_at = pytest(where, "serial", "--target=dev-a", min_duration=args.min_duration)
            pool, pool_at = pytest(where, "pool", "--target=pool:shelf", "-n", str(args.workers), min_duration=args.min_duration)
        finally:
            for sshd in devices.values():
                sshd.stop()
        s_gaps, _, s_cases = overheads(where / "results" / "serial")
        p_gaps, p_waits, p_cases = overheads(where / "results" / "pool")
        print(f"serial on one device: {s_cases} cases, wall {serial:.1f} s: "
              f"{phases(where / 'results' / 'serial', serial_at, serial)}")
        print(f"pool of {len(BOARDS)}, -n {args.workers}: {p_cases} cases, wall {pool:.1f} s "
              f"({serial / pool:.2f}x faster; CPU-bound on {os.cpu_count()} CPUs: every 'device' runs on this host): "
              f"{phases(where / 'results' / 'pool', pool_at, pool)}")
        print(f"scheduling overhead per case, serial (one process, no xdist): {describe(s_gaps)}")
        print(f"scheduling overhead per case, pool -n {args.workers}: {describe(p_gaps)} (goal: under 0.5 s)")
        print(f"waiting for a free board, pool: {describe(p_waits)}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
