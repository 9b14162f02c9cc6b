"""Do the deployed torch rows report what a bare loop over the same artifact measures?

For digits-cnn and MiniLM (128 tokens) at batch 1, each deployed torch recipe that applies here
(AOTInductor packages, ExecuTorch .pte programs with XNNPACK; the quick profile's unless --all):
the runner's p50 (a fresh runner process, as the local target runs a case) beside the p50 of a
bare loop in this process over the same artifact file (`torch._inductor.aoti_load_package(path)
.loader.boxed_run(tensors)`, the compiled model without the Python wrapper's per-call spec parsing; `executorch.runtime.Runtime.get().load_program(path).load_method("forward")
.execute(tensors)`), outputs turned into numpy arrays in both (the runner's timed call returns host
arrays). The AOTI loop runs in torch.inference_mode(), which the runner's torch backend enters once
per process; the ExecuTorch loop does not, as the runner's ExecuTorch backend and ExecuTorch's own
example do not (inside it, the bindings' output tensors cost less to make: ~2% of digits' 13 us
call). Rounds interleave: every recipe's runner process, then its bare loop, recipe after
recipe, round after round, so drift spreads over all of them. Then each int8 recipe's speedup
over its format's fp32 (runner p50s of the same round) beside the same speedup from the bare
loops. Goals: runner/bare within 0.97-1.03, speedups agree within 10%.

A busy machine: with --threads at every core of a shared 2-vCPU host, OpenMP (AOTI) and XNNPACK's
thread pool spin at their barriers while the other thread waits for a CPU, and calls stall for
20-150 ms (at load 6.5: 13-70% of digits AOTI calls over 1 ms at 2 threads, 3% at 1; OMP_WAIT_POLICY=PASSIVE
mostly removes them): p50s of the runner and the bare loop then differ by chance. Run it quiet, or
with --threads 1 to check the method on a busy one.

    .venv/bin/python benchmarks/torch_deployed.py [--rounds 3] [--seconds 1] [--threads 1] [--all] [-k SLUG] [--models digits-cnn]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import settings
from harness.artifacts import ArtifactCache
from harness.data import resolve_data
from harness.models import digits_cnn, minilm_l6_s128
from harness.profiles import QUICK
from harness.quantize import RECIPES, BuildContext
from harness.runner import system
from harness.runner.__main__ import BACKENDS
from harness.runner.protocol import RunnerConfig
from targets import RunnerJob, TargetConfig
from targets.local import LocalTarget

DEPLOYED = ("aoti", "executorch")
RATIO_GOAL = (0.97, 1.03)
SPEEDUP_GOAL = 0.10


def runner_p50(target, artifact, inputs: Path, threads: int, seconds: float, work: Path) -> float:
    runtime = artifact.manifest.get("runtime")
    job = RunnerJob("deployed", artifact.path, artifact.manifest["file"], artifact.manifest, inputs,
                    RunnerConfig(framework=runtime if runtime in BACKENDS else "torch", threads=threads, batch_size=1,
                                 warmup_runs=20, warmup_s=0.2, min_runs=50, min_duration_s=seconds,
                                 max_duration_s=seconds * 3, evaluate=False,
                                 sensors={"profile": "generic-linux", "idle_s": 0.0}), work)
    outcome = target.run(job)
    if outcome.result["status"] != "ok":
        raise SystemExit(f"runner failed on {artifact.manifest['recipe']}: {outcome.result['reason']}")
    return statistics.median(outcome.result["latencies_ms"])


class Bare:
    """The artifact loaded once in this process, called in a plain loop."""

    def __init__(self, artifact, feed: dict[str, np.ndarray], threads: int) -> None:
        import torch

        path = str(artifact.model_file)
        self.tensors = [torch.from_numpy(np.ascontiguousarray(feed[t["name"]])) for t in artifact.manifest["inputs"]]
        self.executorch = artifact.manifest.get("runtime") == "executorch"
        if self.executorch:
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime

            # XNNPACK's thread pool at the runner's thread count (backend_executorch does the same): its
            # default, one thread per core, would also compete with torch's kernels in this process
            portable_lib._unsafe_reset_threadpool(threads)
            method = Runtime.get().load_program(path).load_method("forward")
            self.call = lambda: [o.numpy() for o in method.execute(self.tensors)]  # noqa: E731
        else:
            import torch._inductor

            loader = torch._inductor.aoti_load_package(path).loader  # the compiled model's C++ runner

            self.call = lambda: [o.numpy() for o in loader.boxed_run(list(self.tensors))]  # noqa: E731

    def p50(self, seconds: float, warmup: int = 20) -> float:
        import torch

        with contextlib.nullcontext() if self.executorch else torch.inference_mode():
            for _ in range(warmup):
                self.call()
            times, start = [], time.perf_counter()
            while len(times) < 50 or time.perf_counter() - start < seconds:
                t0 = time.perf_counter_ns()
                self.call()
                times.append((time.perf_counter_ns() - t0) / 1e6)
                if time.perf_counter() - start > seconds * 3:
                    break
        return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per measurement")
    parser.add_argument("--threads", type=int, default=system.physical_cores())
    parser.add_argument("--all", action="store_true", help="the nightly recipes too")
    parser.add_argument("-k", dest="only", default="", help="only recipes whose slug contains this")
    parser.add_argument("--models", default="digits-cnn,minilm-l6-s128",
                        help="comma-separated model names (a busy machine: digits-cnn alone)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    cache = ArtifactCache(settings.cache_dir() / "artifacts")
    target = LocalTarget(TargetConfig(name="local", kind="local"), settings.cache_dir())
    info = target.info()
    work = Path(tempfile.mkdtemp(prefix="torch-deployed-"))
    print(f"deployed torch rows on {info.device} ({', '.join(f for f in info.facts.get('cpu_flags', '').split() if f.startswith(('avx512', 'amx', 'avx2')))}), "
          f"{args.threads} thread(s), {args.rounds} round(s) of ~{args.seconds:g} s per measurement", flush=True)

    cases = []  # (model, recipe, artifact, bare, inputs file)
    for spec in (s for s in (digits_cnn, minilm_l6_s128) if s.name in args.models.split(",")):
        dataset = resolve_data(spec.data)
        ctx = BuildContext(spec, dataset, cache, settings.cache_dir() / "models")
        inputs = work / f"{spec.name}.npz"
        sample = {name: a[:1] for name, a in dataset.eval_inputs.items()}
        np.savez(inputs, **{name: a[:8] for name, a in dataset.eval_inputs.items()})
        for recipe in RECIPES["torch"]:
            if recipe.execution not in DEPLOYED or args.only not in recipe.slug or (QUICK not in recipe.profiles and not args.all):
                continue
            if recipe.not_applicable_reason(spec, info) or recipe.batch_reason(1):
                continue
            started = time.perf_counter()
            try:
                artifact, built = ctx.artifact(recipe)
            except Exception as exc:  # noqa: BLE001 - n/a for this model (e.g. no QAT for MiniLM)
                print(f"  {spec.name} {recipe.mode} {recipe.slug}: skipped ({str(exc).splitlines()[0][:160]})", flush=True)
                continue
            if built:
                print(f"  built {spec.name} {recipe.mode} {recipe.slug} in {time.perf_counter() - started:.0f} s", flush=True)
            cases.append((spec.name, recipe, artifact, Bare(artifact, sample, args.threads), inputs))

    runner: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    bare: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    for r in range(args.rounds):
        for i, (model, recipe, artifact, loop, inputs) in enumerate(cases):
            runner[i].append(runner_p50(target, artifact, inputs, args.threads, args.seconds, work / f"{i}-{r}"))
            bare[i].append(loop.p50(args.seconds))
        print(f"  round {r + 1}/{args.rounds} done", flush=True)

    print(f"\n{'model':<16}{'mode':<14}{'recipe':<20}{'runner p50 ms':>14}{'bare p50 ms':>13}{'runner/bare':>12}  goal")
    for i, (model, recipe, *_rest) in enumerate(cases):
        ratio = statistics.median(a / b for a, b in zip(runner[i], bare[i]))
        ok = RATIO_GOAL[0] <= ratio <= RATIO_GOAL[1]
        print(f"{model:<16}{recipe.mode:<14}{recipe.slug:<20}{statistics.median(runner[i]):>14.4f}"
              f"{statistics.median(bare[i]):>13.4f}{ratio:>12.3f}  {'ok' if ok else 'OUT'}")

    print(f"\n{'model':<16}{'mode':<14}{'recipe':<20}{'runner speedup':>15}{'bare speedup':>14}{'agree':>8}  goal")
    for i, (model, recipe, *_rest) in enumerate(cases):
        if recipe.mode == "fp32":
            continue
        base = next((j for j, (m, r, *_x) in enumerate(cases) if m == model and r.mode == "fp32" and r.execution == recipe.execution), None)
        if base is None:
            continue
        run_speedup = statistics.median(a / b for a, b in zip(runner[base], runner[i]))
        bare_speedup = statistics.median(a / b for a, b in zip(bare[base], bare[i]))
        agree = run_speedup / bare_speedup
        print(f"{model:<16}{recipe.mode:<14}{recipe.slug:<20}{run_speedup:>14.2f}x{bare_speedup:>13.2f}x{agree:>8.3f}  "
              f"{'ok' if abs(agree - 1) <= SPEEDUP_GOAL else 'OUT'}")
    print(f"\ngoals: runner/bare within {RATIO_GOAL[0]}-{RATIO_GOAL[1]} (medians over rounds of per-round ratios); "
          f"speedups (fp32 p50 / this p50, same format, same round) agree within {SPEEDUP_GOAL:.0%}.")


if __name__ == "__main__":
    main()
