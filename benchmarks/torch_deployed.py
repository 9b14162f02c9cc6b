"""Do the deployed torch rows report what a bare loop over the same artifact measures?

For digits-cnn and MiniLM (128 tokens) at batch 1, each deployed torch recipe that applies here
(AOTInductor packages, ExecuTorch .pte programs with XNNPACK; the quick profile's unless --all):
the runner's p50 (a fresh runner process, as the local target runs a case) beside the p50 of a
bare loop over the same artifact file, also in a fresh process (`python -c` with bare_loop's source,
this interpreter, the runner's environment; it imports nothing of this package):
`torch._inductor.aoti_load_package(path).loader.boxed_run(tensors)`, the compiled model without the
Python wrapper's per-call spec parsing; `executorch.runtime.Runtime.get().load_program(path)
.load_method("forward").execute(tensors)`; outputs turned into numpy arrays in both (the runner's
timed call returns host arrays). The AOTI loop runs in torch.inference_mode(), which the runner's
torch backend enters once per process; the ExecuTorch loop does not, as the runner's ExecuTorch
backend and ExecuTorch's own example do not (inside it, the bindings' output tensors cost less to
make: ~2% of digits' 13 us call).

Both sides run with glibc's malloc thresholds settled (the runner sets them itself,
harness/runner/allocator.py; the bare process gets the same values through MALLOC_MMAP_THRESHOLD_
and MALLOC_TRIM_THRESHOLD_): in a fresh process AOTI packages fault their per-call buffers in
anew at every call until a large free raises the thresholds, which importing Inductor happens to
do and the runner's loader does not (MiniLM s128 static-int8: runner/bare 1.20 before, 1.00 after;
dynamic-int8's bare loop itself 8.5 -> 6.3 ms once settled).

Why both sides are fresh processes: on the shared 2-vCPU host a process runs at one of a few
speed levels for its whole life (the same digits .pte call 15 or 21 us from one process to the
next, about 1 process in 30 at the slow level, sometimes worse). A bare loop kept in this one
long-lived process carried its level through every round, so runner/bare compared a new draw with
a fixed one (a quiet 3-round run: 0.59-1.22, digits fp32 .pte runner 0.0175 ms vs bare 0.0301 ms,
the bare side the slow one). With a new process for each measurement on both sides, each round
draws both levels the same way, and the median over rounds of per-round ratios sees past the odd
slow process. Rounds interleave: every recipe's runner process, then its bare process, recipe
after recipe, round after round, so drift spreads over all of them. Then each int8 recipe's
speedup over its format's fp32 (runner p50s of the same round) beside the same speedup from the
bare processes. Goals: runner/bare within 0.97-1.03, speedups agree within 10%.

Run time: a fresh bare process costs its imports (executorch.runtime imports executorch.exir: a
digits .pte bare process took 6 s at 1 s of timing, its runner process 2 s; aoti_load_package
imports Inductor): a round of the 17 quick rows at 0.5 s per measurement took 2.5 min on this host
quiet (38 s of runner processes, 100 s of bare ones), the default 7 rounds 17 min; --models
digits-cnn about halves it. Fewer rounds leave the medians at the mercy of the odd slow process
(5 rounds: 11 of 17 ratios in the goal before the allocator fix, rows off by 3-13% both ways).

A busy machine: with --threads at every core of a shared 2-vCPU host, OpenMP (AOTI) and XNNPACK's
thread pool spin at their barriers while the other thread waits for a CPU, and calls stall for
20-150 ms (at load 6.5: 13-70% of digits AOTI calls over 1 ms at 2 threads, 3% at 1; OMP_WAIT_POLICY=PASSIVE
mostly removes them): p50s of the runner and the bare loop then differ by chance. Run it quiet, or
with --threads 1 to check the method on a busy one.

    .venv/bin/python benchmarks/torch_deployed.py [--rounds 7] [--seconds 0.5] [--threads 1] [--all] [-k MODE/SLUG] [--models digits-cnn]
"""
from __future__ import annotations

import argparse
import inspect
import json
import statistics
import subprocess
import sys
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
from harness.runner import allocator, system
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


def bare_loop(path: str, inputs: str, names: list[str], executorch: bool, threads: int, seconds: float,
              warmup: int = 20) -> None:
    """Run in a fresh interpreter by bare_p50 (its source is the script): load the artifact, time the plain
    loop, print {"latencies_ms": [...]} as the last line of stdout. Imports only torch,
    numpy and the runtime, nothing of this package, so the process holds what a user's loop would."""
    import contextlib
    import json
    import time

    import numpy as np
    import torch

    torch.set_num_threads(threads)
    with np.load(inputs, allow_pickle=False) as npz:  # batch 1: the first row of the runner's inputs file
        tensors = [torch.from_numpy(np.ascontiguousarray(npz[name][:1])) for name in names]
    if executorch:
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        # XNNPACK's thread pool at the runner's thread count (backend_executorch does the same)
        portable_lib._unsafe_reset_threadpool(threads)
        method = Runtime.get().load_program(path).load_method("forward")
        call = lambda: [o.numpy() for o in method.execute(tensors)]  # noqa: E731
        mode = contextlib.nullcontext()
    else:
        import torch._inductor

        loader = torch._inductor.aoti_load_package(path).loader  # the compiled model's C++ runner
        call = lambda: [o.numpy() for o in loader.boxed_run(list(tensors))]  # noqa: E731
        mode = torch.inference_mode()
    with mode:
        for _ in range(warmup):
            call()
        times, start = [], time.perf_counter()
        while len(times) < 50 or time.perf_counter() - start < seconds:
            t0 = time.perf_counter_ns()
            call()
            times.append((time.perf_counter_ns() - t0) / 1e6)
            if time.perf_counter() - start > seconds * 3:
                break
    print(json.dumps({"latencies_ms": times}))


def bare_p50(artifact, inputs: Path, threads: int, seconds: float, env: dict) -> float:
    """The p50 of bare_loop in a fresh process of this interpreter, with the runner's environment."""
    script = f"import json, sys\n\n{inspect.getsource(bare_loop)}\nbare_loop(**json.loads(sys.argv[1]))\n"
    args = {"path": str(artifact.model_file), "inputs": str(inputs), "names": [t["name"] for t in artifact.manifest["inputs"]],
            "executorch": artifact.manifest.get("runtime") == "executorch", "threads": threads, "seconds": seconds}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(args)], env=env, capture_output=True, text=True,
                          timeout=600)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        raise SystemExit(f"bare loop failed on {artifact.manifest['recipe']} (exit {proc.returncode}): {tail}")
    return statistics.median(json.loads(lines[-1])["latencies_ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5, help="timed seconds per measurement (at least 50 calls)")
    parser.add_argument("--threads", type=int, default=system.physical_cores())
    parser.add_argument("--all", action="store_true", help="the nightly recipes too")
    parser.add_argument("-k", dest="only", default="", help="only recipes whose MODE/SLUG (e.g. fp32/pte) contains this")
    parser.add_argument("--models", default="digits-cnn,minilm-l6-s128",
                        help="comma-separated model names (a busy machine: digits-cnn alone)")
    args = parser.parse_args()

    cache = ArtifactCache(settings.cache_dir() / "artifacts")
    target = LocalTarget(TargetConfig(name="local", kind="local"), settings.cache_dir())
    info = target.info()
    work = Path(tempfile.mkdtemp(prefix="torch-deployed-"))
    print(f"deployed torch rows on {info.device} ({', '.join(f for f in info.facts.get('cpu_flags', '').split() if f.startswith(('avx512', 'amx', 'avx2')))}), "
          f"{args.threads} thread(s), {args.rounds} round(s) of ~{args.seconds:g} s per measurement", flush=True)

    cases = []  # (model, recipe, artifact, inputs file)
    for spec in (s for s in (digits_cnn, minilm_l6_s128) if s.name in args.models.split(",")):
        dataset = resolve_data(spec.data)
        ctx = BuildContext(spec, dataset, cache, settings.cache_dir() / "models")
        inputs = work / f"{spec.name}.npz"
        np.savez(inputs, **{name: a[:8] for name, a in dataset.eval_inputs.items()})
        for recipe in RECIPES["torch"]:
            if recipe.execution not in DEPLOYED or args.only not in f"{recipe.mode}/{recipe.slug}" or (QUICK not in recipe.profiles and not args.all):
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
            cases.append((spec.name, recipe, artifact, inputs))

    runner: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    bare: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    # the runner's variables, and malloc's thresholds where the runner settles them (runner/allocator.py):
    # both sides then time the call, not how the allocator was left by what a process imported first
    env = dict(target.environment(), MALLOC_MMAP_THRESHOLD_=str(allocator.MMAP_THRESHOLD),
               MALLOC_TRIM_THRESHOLD_=str(allocator.TRIM_THRESHOLD))
    for r in range(args.rounds):
        spent = {"runner": 0.0, "bare": 0.0}  # wall seconds of this round's processes, start to exit
        for i, (model, recipe, artifact, inputs) in enumerate(cases):
            started = time.perf_counter()
            runner[i].append(runner_p50(target, artifact, inputs, args.threads, args.seconds, work / f"{i}-{r}"))
            between = time.perf_counter()
            bare[i].append(bare_p50(artifact, inputs, args.threads, args.seconds, env))
            spent["runner"] += between - started
            spent["bare"] += time.perf_counter() - between
        print(f"  round {r + 1}/{args.rounds} done: runner processes {spent['runner']:.0f} s, "
              f"bare processes {spent['bare']:.0f} s", flush=True)

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
