"""Is the interleaved-rounds speedup steadier than the single-process one, on this machine?

digits-cnn, onnxruntime static-int8 (QDQ) against its fp32 baseline, measured REPETITIONS
times each way, in one run, the two ways alternating (which goes first swaps every repetition):
  single       one quantbench session with one round: one fp32 process, one static-int8
               process, speedup = fp32 p50 / static p50 (what a run without --rounds reports);
  interleaved  one session with --rounds ROUNDS: each round a fresh static-int8 process beside a
               fresh fp32 one (ABBA), speedup = median of the paired ratios, with its
               order-statistic interval at its stated level (what --rounds reports).
The spread of the reported speedup over the repetitions is what a user sees from night to
night: max/min - 1 and the coefficient of variation, for each way. The interleaved way should
be the steadier one.

    .venv/bin/python benchmarks/interleaved_rounds.py [--repetitions 5] [--rounds 5] [--seconds 1] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from harness import Suite, Timing
from harness.models import digits_cnn
from harness.runner import system
from harness import settings
from harness.session import BenchSession, SessionOptions
from targets import TargetConfig

STATIC = "digits-cnn-onnxruntime-static-int8-qdq-b1"


def reported_speedup(rounds: int, timing: Timing, results: Path, run_id: str, threads, cache: Path) -> dict:
    options = SessionOptions(results_dir=results, cache_dir=cache, threads=threads, run_id=run_id, rounds=rounds)
    suite = Suite(model=digits_cnn, frameworks=("onnxruntime",), modes=("fp32", "static-int8"), timing=timing,
                  name="interleaved-rounds", eval_samples={"quick": 50})
    session = BenchSession(TargetConfig(name="local", kind="local"), options)
    try:
        rows = {case.case_id: session.run_case(case) for case in suite.cases()}
    finally:
        session.close()
    row = rows[STATIC]
    if row["status"] != "ok":
        raise SystemExit(f"{STATIC} failed: {row['reason']}")
    return row


def spread(values: list[float]) -> str:
    cv = statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else float("nan")
    return f"min {min(values):.3f}x  max {max(values):.3f}x  max/min-1 {max(values) / min(values) - 1:6.1%}  CV {cv:6.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the interleaved way")
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per runner process")
    parser.add_argument("--threads", type=int, default=None, help="default: the target's physical cores")
    parser.add_argument("--cache-dir", type=Path, default=settings.cache_dir())
    args = parser.parse_args()
    timing = Timing(warmup_runs=50, warmup_s=0.2, min_runs=100, min_duration_s=args.seconds, max_duration_s=args.seconds * 5)
    results = Path(tempfile.mkdtemp(prefix="qb-interleaved-"))
    print(f"digits-cnn onnxruntime static-int8 vs fp32, {args.repetitions} repetitions; interleaved = {args.rounds} "
          f"paired rounds; {args.seconds:g} s per process; threads {args.threads or 'target default'}; "
          f"CPU {system.cpu_model()} ({system.physical_cores()} cores)", flush=True)
    single, interleaved, flags = [], [], []
    for rep in range(args.repetitions):
        ways = [("single", 1), ("interleaved", args.rounds)]
        for way, rounds in (ways if rep % 2 == 0 else ways[::-1]):
            row = reported_speedup(rounds, timing, results, f"{way}-{rep}", args.threads, args.cache_dir)
            if way == "single":
                single.append(row["speedup"])
            else:
                interleaved.append(row["speedup"])
                flags.append(bool(row["rounds_disagree"]))
                paired = row
        level = paired.get("speedup_ci_level")
        at = f" @{100 * level:.3g}%" if level is not None else ""
        ci = f"[{paired['speedup_ci_low']:.3f}-{paired['speedup_ci_high']:.3f}{at}]{'?' if paired['rounds_disagree'] else ''}"
        print(f"repetition {rep}: single {single[-1]:.3f}x   interleaved {interleaved[-1]:.3f}x {ci}   "
              f"(rounds {paired['speedup_rounds']})", flush=True)
    print(f"\nsingle      : {spread(single)}")
    print(f"interleaved : {spread(interleaved)}")
    # "steadier" only by a clear margin: both spreads are themselves noisy figures over a few repetitions
    spread_interleaved, spread_single = max(interleaved) / min(interleaved) - 1, max(single) / min(single) - 1
    verdict = ("STEADIER" if spread_interleaved < 0.5 * spread_single else
               "NOT clearly steadier" if spread_interleaved <= spread_single else "NOT steadier")
    print(f"the interleaved speedup is {verdict} than the single-process one across {args.repetitions} repetitions "
          f"on this machine (spread {spread_interleaved:.1%} vs {spread_single:.1%}; STEADIER needs under half)")
    unsettled = sum(1 for note in flags if note)
    if unsettled:
        print(f"{unsettled} of {args.repetitions} interleaved figures were flagged '?' (rounds disagree): "
              "the row says its rounds disagree rather than printing a confident speedup")
    print(f"results: {results}")


if __name__ == "__main__":
    main()
