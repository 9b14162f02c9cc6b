"""The main job's wall time, cold and warm, against its goals (5 min cold, 2 min warm).

Runs `quantbench run` (what ./scripts/run.sh runs, the quick profile unless --profile says
otherwise) three times with a private artifact cache, results directory and history
database: cold (the cache empty: every model trained or loaded, every artifact built), warm
(everything cached), and, as the baseline of the same run, the fixed cost of one invocation
with every case deselected (pytest, plugin, report, history). The virtual environment is the
one this script runs in; with --clone the code is a fresh `git clone` of this repository's
HEAD (what a new user gets), else this working tree.

    .venv/bin/python benchmarks/main_job.py              # quick profile, this tree
    .venv/bin/python benchmarks/main_job.py --clone      # a fresh clone of HEAD
    .venv/bin/python benchmarks/main_job.py --warm-only  # skip the cold run (cache from an earlier one)
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
from pathlib import Path

from harness.testing.checkout_run import timed_run

REPO = Path(__file__).resolve().parent.parent
GOALS = {"cold": 300.0, "warm": 120.0}


def cpu_s() -> float:
    """CPU seconds (user + system) of the finished child processes so far: a figure much less
    sensitive than wall time to other work on a shared machine (waits, such as the timed
    windows' minimum duration, are not in it)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(code: Path, work: Path, run_id: str, extra: list[str]) -> tuple[float, int, str]:
    done = timed_run(code, [f"--cache-dir={work / 'cache'}", f"--results-dir={work / 'results'}", f"--run-id={run_id}",
                            f"--results-db=sqlite:///{work / 'history.sqlite'}", *extra], work / f"{run_id}.log")
    return done.wall_s, done.returncode, done.stdout


def summary_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if " passed" in line or " failed" in line or " skipped" in line]
    return lines[-1].strip("= ") if lines else "(no pytest summary)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clone", action="store_true", help="run a fresh git clone of HEAD instead of this tree")
    parser.add_argument("--warm-only", action="store_true", help="skip the cold run")
    parser.add_argument("--work", default=None, help="directory for the cache, results and logs (default: a new temp dir)")
    parser.add_argument("extra", nargs="*", help="more arguments for quantbench run (e.g. --profile nightly)")
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="qb-main-job-"))
    work.mkdir(parents=True, exist_ok=True)
    code = REPO
    if args.clone:
        code = work / "clone"
        if not code.is_dir():
            subprocess.run(["git", "clone", "--quiet", str(REPO), str(code)], check=True)
    head = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()
    print(f"main job ({' '.join(args.extra) or 'quick profile'}), code {code} at {head}, work {work}")
    print(f"load average before: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs", flush=True)

    figures = {}
    for name in ([] if args.warm_only else ["cold"]) + ["warm"]:
        before = cpu_s()
        wall, code_rc, stdout = run(code, work, name, list(args.extra))
        figures[name] = wall
        print(f"{name:<5} {wall:7.1f} s wall (CPU {cpu_s() - before:6.1f} s)  goal {GOALS[name]:.0f} s  "
              f"{'ok' if wall <= GOALS[name] else 'OVER'}  exit {code_rc}  {summary_line(stdout)}", flush=True)
    before = cpu_s()
    fixed, _, _ = run(code, work, "fixed", list(args.extra) + ["-k", "no_case_has_this_name"])
    print(f"fixed {fixed:7.1f} s wall (CPU {cpu_s() - before:6.1f} s)  (every case deselected: the floor of one invocation)")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    table = (work / "warm.log").read_text()
    start = table.find("quantbench: run warm")
    print("\nthe warm run's table:\n" + (table[start:] if start >= 0 else table[-6000:]))


if __name__ == "__main__":
    main()
