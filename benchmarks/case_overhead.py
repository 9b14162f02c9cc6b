"""Where a case's wall time goes, besides its measurement.

Runs a suite the way `quantbench run` does (one fresh runner process per case), on a warm
artifact cache (a first, untimed run fills it unless --no-prime), and splits the time:

  - fixed: the same command with every case deselected (pytest, plugin, imports, report),
    measured in the same run as the baseline of what one run costs whatever its cases;
  - per case, from the runner's own `phases_s`: interpreter startup, imports (numpy, the
    runner), the runtime's import, model load, first call, warmup, timed window, evaluation
    pass, writing outputs;
  - host per case: the rest (spawning, scoring, rows, pytest per test, interpreter exit);
  - the floor: a bare fresh process that imports numpy and the runtime, nothing else.

Overhead per case = (run wall - fixed - every case's warmup and timed window) / cases.
The goal is 1 s.

    .venv/bin/python benchmarks/case_overhead.py                      # digits, quick profile
    .venv/bin/python benchmarks/case_overhead.py suites/test_minilm.py --profile quick
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.runner.protocol import RunnerResult

REPO = Path(__file__).resolve().parent.parent
RUNTIME_IMPORT = {"onnxruntime": "onnxruntime", "tflite": "ai_edge_litert.interpreter", "torch": "torch"}
RUNNER_PHASES = ("startup", "imports", "inputs", "runtime_import", "sensors", "load", "first", "warmup", "timed",
                 "evaluation", "outputs", "describe")


def quantbench(args: list[str], results: Path, run_id: str, cache_dir: str) -> float:
    cmd = [sys.executable, "-m", "harness.cli", "run", *args, f"--results-dir={results}", f"--run-id={run_id}",
           "--results-db=off", "-q"]
    if cache_dir:
        cmd.append(f"--cache-dir={cache_dir}")
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1, 5):  # 1: a case failed (still measured); 5: nothing selected
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall


def floor_s(framework: str, repeats: int = 3) -> float:
    """A bare fresh process importing numpy and the runtime: what no runner can go below."""
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import numpy, {RUNTIME_IMPORT[framework]}"], check=True,
                       capture_output=True)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suites", nargs="*", default=["suites/test_digits.py"])
    parser.add_argument("--profile", default=None, help="passed on to quantbench run (default: its default)")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression")
    parser.add_argument("--cache-dir", default="", help="artifact cache (default: the repo's)")
    parser.add_argument("--no-prime", action="store_true", help="skip the first run that fills the artifact cache")
    args = parser.parse_args()

    common = list(args.suites) + (["--profile", args.profile] if args.profile else [])
    selected = common + (["-k", args.keyword] if args.keyword else [])
    work = Path(tempfile.mkdtemp(prefix="qb-case-overhead-"))
    if not args.no_prime:
        print(f"priming the cache: {' '.join(selected)}", flush=True)
        quantbench(selected, work, "prime", args.cache_dir)
    fixed = quantbench(common + ["-k", "no_case_has_this_name"], work, "fixed", args.cache_dir)
    wall = quantbench(selected, work, "measured", args.cache_dir)

    run_dir = work / "measured"
    rows = {}
    for path in (run_dir / "cases").glob("*.json"):
        row = json.loads(path.read_text())["row"]
        rows[row["case_id"]] = row
    per_case = []
    for case_id, row in sorted(rows.items()):
        result_path = run_dir / "work" / case_id / "result.json"
        if not result_path.is_file():
            continue  # n/a: no runner process
        phases = RunnerResult.from_json(result_path.read_text()).phases_s or {}
        per_case.append((case_id, row["framework"], phases, row["status"]))
    if not per_case:
        raise SystemExit("no case ran a runner process")

    header = f"{'case':<58}{'runner s':>9}" + "".join(f"{p[:8]:>9}" for p in RUNNER_PHASES)
    print(f"\n{header}")
    for case_id, _, phases, status in per_case:
        total = sum(phases.values())
        print(f"{case_id[:57]:<58}{total:>9.2f}" + "".join(f"{phases.get(p, 0.0):>9.3f}" for p in RUNNER_PHASES)
              + ("" if status == "ok" else f"  ({status})"))

    n = len(per_case)
    runner_total = sum(sum(p.values()) for _, _, p, _ in per_case)
    measured = sum(p.get("warmup", 0.0) + p.get("timed", 0.0) for _, _, p, _ in per_case)
    host = wall - fixed - runner_total
    print(f"\nrun wall {wall:.1f} s for {n} runner processes; fixed cost (no case selected) {fixed:.1f} s")
    print(f"warmup + timed windows {measured:.1f} s; runner processes {runner_total:.1f} s; host and spawning {host:.1f} s")
    print(f"overhead per case: {(wall - fixed - measured) / n:.2f} s (goal 1 s); of which host {host / n:.2f} s")
    print(f"\n{'framework':<13}{'cases':>6}{'overhead s':>12}{'startup+imports':>17}{'runtime import':>16}{'load':>8}"
          f"{'eval':>8}{'floor s':>9}")
    for fw in sorted({f for _, f, _, _ in per_case}):
        mine = [p for _, f, p, _ in per_case if f == fw]
        mean = lambda key: statistics.mean(p.get(key, 0.0) for p in mine)  # noqa: E731
        over = statistics.mean(sum(p.values()) - p.get("warmup", 0.0) - p.get("timed", 0.0) for p in mine) + host / n
        print(f"{fw:<13}{len(mine):>6}{over:>12.2f}{mean('startup') + mean('imports'):>17.2f}{mean('runtime_import'):>16.2f}"
              f"{mean('load'):>8.2f}{mean('evaluation'):>8.2f}{floor_s(fw):>9.2f}")
    print(f"\n(results under {work})")


if __name__ == "__main__":
    main()
