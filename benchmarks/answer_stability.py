"""Does the main job give the same answer twice? Runs the quick main job's answer N times (5 by
default) on a fresh clone of this repository's HEAD with a warm artifact cache, first on a quiet
machine, then with a busy loop beside it (a process spinning on one core), and prints per model
the answer of every run: each model must name the same mode in every run, or say "a tie" in every
run where it does not (issue 22's "the same answer, or the same tie").

    .venv/bin/python benchmarks/answer_stability.py                       # every suite, 5 + 5 runs
    .venv/bin/python benchmarks/answer_stability.py --runs 3 -- suites/test_digits.py -k onnxruntime
    .venv/bin/python benchmarks/answer_stability.py --cache-dir .cache/quantbench   # an already warm cache

The cache is warmed by one run first (not counted) unless --no-warmup. Each run's log, with its
answer, is kept under the work directory. Timing figures and answers depend on the load: the
script prints the load average and the CPU flags beside the table.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.testing.checkout_run import timed_run

REPO = Path(__file__).resolve().parent.parent
TITLE = "quantbench: which mode to ship"
HEADLINE = re.compile(r"^(?P<where>\S+(?: \(batch \d+\))? on \S+): (?P<what>.*)$")
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = set(re.search(r"^flags\s*:\s*(.*)$", text, re.M).group(1).split()) if "flags" in text else set()
    return f"{model.group(1) if model else '?'}; {os.cpu_count()} CPUs; " + " ".join(f for f in FLAGS if f in flags)


def answers(stdout: str) -> dict[str, str]:
    """where -> 'ship <framework> <mode> (<recipe>)', 'tie: ...' or 'nothing' from a run's last words."""
    if TITLE not in stdout:
        return {}
    out = {}
    for line in stdout.split(TITLE, 1)[1].splitlines()[1:]:
        m = HEADLINE.match(line)
        if not m:
            continue
        what = m.group("what")
        if what.startswith("a tie: "):
            out[m.group("where")] = "tie: " + what[len("a tie: "):].split(", within")[0]
        elif what.startswith("ship "):
            out[m.group("where")] = what[len("ship "):].split(":")[0]
        else:
            out[m.group("where")] = what.split(":")[0]
    return out


def run(code: Path, work: Path, run_id: str, cache: Path, extra: list[str]) -> tuple[float, int, dict[str, str]]:
    done = timed_run(code, [f"--cache-dir={cache}", f"--results-dir={work / 'results'}", f"--run-id={run_id}",
                            "--results-db=off", "--qb-dashboard=off", *extra], work / f"{run_id}.log")
    return done.wall_s, done.returncode, answers(done.stdout)


def stable(seen: list[str]) -> tuple[bool, str]:
    """(holds, why): every run names the same mode, or says a tie where it does not."""
    named = {a for a in seen if not a.startswith("tie:")}
    if not seen or any(a == "" for a in seen):
        return False, "a run printed no answer for it"
    if len(named) <= 1:
        ties = sum(a.startswith("tie:") for a in seen)
        return True, ("the same mode in every run" if not ties else
                      f"{ties} tie(s), the same mode in the others" if named else "a tie in every run")
    return False, f"{len(named)} different modes named: {', '.join(sorted(named))}"


def busy_loop() -> subprocess.Popen:
    """A process spinning on one core, as other work on a shared machine does."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per condition (default 5)")
    parser.add_argument("--work", default=None, help="directory for the clone, results and logs (default: a new temp dir)")
    parser.add_argument("--cache-dir", default=None, help="artifact cache (default: <work>/cache, warmed by a first run)")
    parser.add_argument("--no-warmup", action="store_true", help="no warming run first (the cache is warm already)")
    parser.add_argument("--here", action="store_true", help="this working tree instead of a fresh clone of HEAD")
    parser.add_argument("--only", choices=("quiet", "busy"), default=None, help="one condition only")
    parser.add_argument("extra", nargs="*", help="more arguments for quantbench run (suite files, -k ...)")
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="qb-answer-stability-"))
    work.mkdir(parents=True, exist_ok=True)
    code = REPO
    if not args.here:
        code = work / "clone"
        if not code.is_dir():  # the commit checked out here (a worktree's clone would start at the main HEAD)
            sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                                 check=True).stdout.strip()
            subprocess.run(["git", "clone", "--quiet", str(REPO), str(code)], check=True)
            subprocess.run(["git", "-C", str(code), "checkout", "--quiet", sha], check=True)
    head = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cache = Path(args.cache_dir).resolve() if args.cache_dir else work / "cache"
    extra = list(args.extra)  # suite paths relative to the checkout: each run works in the clone
    print(f"answer stability ({' '.join(args.extra) or 'every suite, quick profile'}), code {code} at {head}, work {work}")
    print(f"CPU: {cpu_flags()}")
    if not args.no_warmup:
        wall, rc, _ = run(code, work, "warmup", cache, extra)
        print(f"warm-up run (fills the cache, not counted): {wall:.1f} s, exit {rc}", flush=True)

    ok = True
    for condition in [c for c in ("quiet", "busy") if args.only in (None, c)]:
        spinner = busy_loop() if condition == "busy" else None
        seen: dict[str, list[str]] = {}
        try:
            load = os.getloadavg()
            print(f"\n== {condition}{' (a busy loop on one core beside it)' if spinner else ''}: {args.runs} runs; "
                  f"load average before {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} ==", flush=True)
            for i in range(args.runs):
                wall, rc, found = run(code, work, f"{condition}-{i + 1}", cache, extra)
                print(f"run {i + 1}: {wall:6.1f} s wall, exit {rc}, {len(found)} answer(s)", flush=True)
                for where in set(seen) | set(found):
                    seen.setdefault(where, [""] * i).append(found.get(where, ""))
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
        load = os.getloadavg()
        print(f"load average after {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
        for where in sorted(seen):
            holds, why = stable(seen[where])
            ok &= holds
            print(f"\n{where}: {'STABLE' if holds else 'NOT STABLE'} ({why})")
            for i, answer in enumerate(seen[where]):
                print(f"  run {i + 1}: {answer or '(none)'}")
    print(f"\n{'every model gave the same answer or a tie in every run' if ok else 'NOT STABLE: see above'}; logs in {work}")


if __name__ == "__main__":
    main()
