"""Does the runner report what torch.utils.benchmark reports?

For each torch mode of digits-cnn that runs on this machine, in one run, on the same
artifact and thread count: the runner's p50 (fresh process, as the local target runs it; its mean beside it)
against `torch.utils.benchmark.Timer(...).adaptive_autorange()` median on the same module
(loaded from the same artifact, called under torch.inference_mode()). Rounds alternate
between the two to spread drift. Goal: within 5% or within the Timer's IQR, whichever is wider.
Beside it, the Timer's statistic (median of block means) computed from the runner's own calls.

    .venv/bin/python benchmarks/torch_fidelity.py [--rounds 2] [--seconds 2] [--threads N] [-k SLUG]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

from harness.artifacts import ArtifactCache
from harness.data import resolve_data
from harness.models import digits_cnn
from harness.quantize import RECIPES, BuildContext
from harness.runner import system
from harness.runner.protocol import RunnerConfig
from harness import settings
from targets import RunnerJob, TargetConfig
from targets.local import LocalTarget

GOAL = 0.05  # runner/Timer within 5% (or within the Timer's IQR)


def runner_times(target, artifact, inputs: Path, threads: int, seconds: float, work: Path) -> list[float]:
    """The runner's per-call latencies, in ms."""
    job = RunnerJob("fidelity", artifact.path, artifact.manifest["file"], artifact.manifest, inputs,
                    RunnerConfig(framework="torch", threads=threads, batch_size=1, warmup_runs=50, warmup_s=0.5,
                                 min_runs=100, min_duration_s=seconds, max_duration_s=seconds * 3,
                                 sensors={"profile": "generic-linux", "idle_s": 0.0}), work)
    outcome = target.run(job)
    if outcome.result["status"] != "ok":
        raise SystemExit(f"runner failed on {artifact.manifest['recipe']}: {outcome.result['reason']}")
    return outcome.result["latencies_ms"]


def block_median(latencies: list[float], block: int) -> float:
    """The Timer's statistic computed from the runner's calls: the median of the means of
    consecutive blocks of `block` calls."""
    means = [statistics.fmean(latencies[i:i + block]) for i in range(0, len(latencies) - block + 1, block)]
    return statistics.median(means) if means else statistics.fmean(latencies)


def timer_measure(artifact, x: np.ndarray, threads: int, seconds: float) -> tuple[float, float, int]:
    """(median ms, IQR ms, calls per block) of adaptive_autorange on the module the runner's backend loads."""
    import torch
    from torch.utils.benchmark import Timer

    from harness.runner.backend_torch import Backend

    backend = Backend(str(artifact.model_file), dict(artifact.manifest), threads, {})
    inputs = backend.prepare({"input": x})
    module = backend.module
    with torch.inference_mode():  # warm up (and, for the inductor recipe, compile) outside the measurement
        for _ in range(50):
            module(*inputs)
    timer = Timer(stmt="with torch.inference_mode(): module(*inputs)", globals={"torch": torch, "module": module, "inputs": inputs},
                  num_threads=threads, label=artifact.manifest["recipe"])
    measurement = timer.adaptive_autorange(threshold=0.1, min_run_time=0.01, max_run_time=seconds)
    return measurement.median * 1e3, measurement.iqr * 1e3, measurement.number_per_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    parser.add_argument("--threads", type=int, default=system.physical_cores())
    parser.add_argument("-k", dest="only", default="", help="only recipes whose slug contains this")
    args = parser.parse_args()

    cache = ArtifactCache(settings.cache_dir() / "artifacts")
    dataset = resolve_data(digits_cnn.data)
    ctx = BuildContext(digits_cnn, dataset, cache, settings.cache_dir() / "models")
    target = LocalTarget(TargetConfig(name="local", kind="local"), settings.cache_dir())
    info = target.info()
    work = Path(tempfile.mkdtemp(prefix="torch-fidelity-"))
    inputs = work / "inputs.npz"
    np.savez(inputs, input=dataset.eval_inputs["input"])
    x = dataset.eval_inputs["input"][:1]

    recipes = [r for r in RECIPES["torch"] if args.only in r.slug and not r.not_applicable_reason(digits_cnn, info)]
    print(f"torch fidelity on {info.device}, {args.threads} thread(s), {args.rounds} round(s) of ~{args.seconds:g} s each")
    rows = []
    for recipe in recipes:
        artifact, _ = ctx.artifact(recipe)
        runner, runner_blocks, timer, iqr = [], [], [], []
        for i in range(args.rounds):
            latencies = runner_times(target, artifact, inputs, args.threads, args.seconds, work / f"{recipe.slug}-{recipe.mode}-{i}")
            median, spread, block = timer_measure(artifact, x, args.threads, args.seconds)
            runner.append(statistics.median(latencies))
            runner_blocks.append(block_median(latencies, block))
            timer.append(median)
            iqr.append(spread)
        r, rb, t, q = (statistics.median(v) for v in (runner, runner_blocks, timer, iqr))
        within = abs(r / t - 1.0) <= GOAL or abs(r - t) <= q
        rows.append((recipe.mode, recipe.slug, r, rb, t, r / t, rb / t, q, "yes" if within else "NO"))
        print(f"  {recipe.mode} {recipe.slug}: runner {r:.4f} ms, Timer {t:.4f} ms (IQR {q:.4f})", flush=True)

    print()
    header = ("mode", "recipe", "runner_p50_ms", "runner_blocks_ms", "timer_median_ms", "ratio", "blocks_ratio", "timer_iqr_ms",
              "within_goal")
    widths = [max(len(header[i]), *(len(f"{row[i]:.4f}" if isinstance(row[i], float) else str(row[i])) for row in rows))
              for i in range(len(header))]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in rows:
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in row]
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
    print(f"goal: ratio (runner p50 / Timer median) within 1 +/- {GOAL:.2f}, or |runner - Timer| <= Timer IQR.")
    print("Timer's samples are means of blocks of calls, and a mean sits above the median of a right-skewed latency")
    print("distribution. runner_blocks_ms is the Timer's own statistic computed from the runner's calls (median of the")
    print("means of blocks of the Timer's block size); blocks_ratio = runner_blocks_ms / timer_median_ms.")


if __name__ == "__main__":
    main()
