"""Does the runner report what a bare onnxruntime loop measures?

For each onnxruntime mode of digits-cnn, in one run on the same artifact and thread count:
the runner's p50 (fresh process, as the local target runs it) against a bare
`session.run` loop in a fresh process. Rounds alternate between the two to spread drift.
Goal: ratio runner/bare within 0.97-1.03. Then the wall time of a cold run (empty cache)
and a warm (cached) run of the whole digits suite.

    .venv/bin/python benchmarks/runner_overhead.py [--rounds 3] [--seconds 2] [--skip-suite]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.artifacts import ArtifactCache
from harness.models import digits_cnn
from harness.quantize import BuildContext, RECIPES
from harness.runner import system
from harness.runner.protocol import RunnerConfig
from harness import settings
from targets import RunnerJob, TargetConfig
from targets.local import LocalTarget

REPO = Path(__file__).resolve().parent.parent

BARE_LOOP = r"""
import sys, time, json, numpy as np, onnxruntime as ort
path, inputs, threads, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
so = ort.SessionOptions(); so.intra_op_num_threads = threads
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
x = np.load(inputs)["input"][:1]
feed = {s.get_inputs()[0].name: x}
for _ in range(50): s.run(None, feed)
lat = []; end = time.perf_counter() + seconds
while time.perf_counter() < end:
    t = time.perf_counter_ns(); s.run(None, feed); lat.append((time.perf_counter_ns() - t) / 1e6)
print(json.dumps({"p50": float(np.median(lat)), "n": len(lat)}))
"""


def runner_p50(target, artifact, inputs, threads, seconds, work) -> float:
    job = RunnerJob("bench", artifact.path, artifact.manifest["file"], artifact.manifest, inputs,
                    RunnerConfig(framework="onnxruntime", threads=threads, batch_size=1, warmup_runs=50, warmup_s=0.2,
                                 min_runs=100, min_duration_s=seconds, max_duration_s=seconds * 3), work)
    outcome = target.run(job)
    if outcome.result["status"] != "ok":
        raise SystemExit(f"runner failed: {outcome.result['reason']}")
    return statistics.median(outcome.result["latencies_ms"])


def bare_p50(artifact, inputs, threads, seconds) -> float:
    out = subprocess.run([sys.executable, "-c", BARE_LOOP, str(artifact.model_file), str(inputs), str(threads), str(seconds)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["p50"]


def suite_wall(cache_dir: Path, results: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", str(REPO / "suites" / "test_digits.py"), "-q", "-p", "no:cacheprovider",
                    f"--qb-cache-dir={cache_dir}", f"--qb-results-dir={results}", "--min-runs=50", "--min-duration=0.3"],
                   cwd=REPO, capture_output=True, text=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    parser.add_argument("--threads", type=int, default=system.physical_cores())
    parser.add_argument("--skip-suite", action="store_true", help="skip the cold/warm suite wall times")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="qb-overhead-"))
    from harness.data import resolve_data
    import numpy as np

    dataset = resolve_data(digits_cnn.data)
    inputs = work / "inputs.npz"
    np.savez(inputs, **dataset.eval_inputs)
    ctx = BuildContext(digits_cnn, dataset, ArtifactCache(settings.cache_dir() / "artifacts"), settings.cache_dir() / "models")
    target = LocalTarget(TargetConfig(name="local", kind="local"), settings.cache_dir())

    print(f"digits-cnn, onnxruntime, batch 1, {args.threads} threads, {args.rounds} alternating rounds of {args.seconds:g} s, "
          f"CPU {system.cpu_model()}")
    print(f"{'mode':<14}{'runner p50 us':>15}{'bare p50 us':>13}{'ratio':>8}  goal 0.97-1.03")
    for recipe in RECIPES["onnxruntime"]:
        artifact, _ = ctx.artifact(recipe)
        runner, bare = [], []
        for r in range(args.rounds):
            bare.append(bare_p50(artifact, inputs, args.threads, args.seconds))
            runner.append(runner_p50(target, artifact, inputs, args.threads, args.seconds, work / f"{recipe.slug}-{r}"))
        rp, bp = statistics.median(runner), statistics.median(bare)
        print(f"{recipe.mode:<14}{rp * 1000:>15.2f}{bp * 1000:>13.2f}{rp / bp:>8.3f}  {'ok' if 0.97 <= rp / bp <= 1.03 else 'OUTSIDE'}")

    if not args.skip_suite:
        cold_cache = work / "cold-cache"
        cold = suite_wall(cold_cache, work / "results")
        warm = suite_wall(cold_cache, work / "results")
        print(f"suites/test_digits.py wall time: cold (empty cache) {cold:.1f} s, warm (cached) {warm:.1f} s")


if __name__ == "__main__":
    main()
