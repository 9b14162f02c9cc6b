"""Do the deployed torch rows report what a bare loop over the same artifact measures?

For digits-cnn and MiniLM (128 tokens) at batch 1, each deployed torch recipe that applies here
(AOTInductor packages, ExecuTorch .pte programs with XNNPACK; the quick profile's unless --all):
the runner's p50 (a fresh runner process, as the local target runs a case) beside the p50 of a
bare loop over the same artifact file, in a fresh process of its own (`python -c` with
bare_loop's and open_call's source, this interpreter, the runner's environment; it imports
nothing of this package): the compiled model's C++ runner that
`torch._inductor.aoti_load_package(path)` wraps (`torch._C._aoti.AOTIModelPackageLoader`, called
with `boxed_run`), or the program and method that `executorch.runtime.Runtime` wraps
(`_portable_lib._load_program(path).load_method("forward")`); outputs turned into numpy arrays in
both (the runner's timed call returns host arrays). The AOTI loop runs in torch.inference_mode(),
which the runner's torch backend enters once per process; the ExecuTorch loop does not, as the
runner's ExecuTorch backend and ExecuTorch's own example do not.

Why not through aoti_load_package / executorch.runtime themselves: both import torch._inductor
(executorch.runtime through executorch.exir), and a process that imported it ran MiniLM s128's
int8 AOTI packages 3-6% slower, call for call, than one that did not (runner/bare 0.936-0.963 on
bf16, static, qat, dynamic and mixed over 3 rounds with it; 0.98-1.00 on the same packages without
it; digits unaffected). A deployed program loads the package, not the compiler: the bare loop
builds the same C++ objects without that import, as the runner does.

Both sides run with glibc's malloc thresholds settled (the runner sets them itself,
harness/runner/allocator.py; the bare process gets the same values through MALLOC_MMAP_THRESHOLD_
and MALLOC_TRIM_THRESHOLD_): in a fresh process AOTI packages fault their per-call buffers in
anew at every call until a large free raises the thresholds (MiniLM s128 static-int8: runner/bare
1.20 before, 1.00 after).

How the two are compared: they take turns on the CPUs. On the shared 2-vCPU host a call's speed
drifts with time, whatever the process: one process timing digits' fp32 .pte for 48 s saw the
p50 of its 0.5-second stretches spread 7.8% (sd), of 8-second ones still 2.7%, so two loops
measured one after the other, seconds apart, differ by that much by chance (the method before
this one, a runner process then a bare one, 7 rounds of 0.5 s: 12-14 of 17-18 rows within the
goal, a different set each run). So the two process groups run in turns, one stopped (SIGSTOP)
while the other runs (SIGCONT), each turn about SLICE_CALLS calls of the artifact (50-500 ms),
until the runner exits. The bare loop keeps each call's start on the monotonic clock (the same in
every process); its p50 is over the calls made inside the runner's timed window (the runner's
exit less the phases it marked after the loop, harness/runner/phases.py, back to its duration_s).
Both p50s then come from the same stretch of time, in alternate turns: splitting that 48 s trace
into alternate 50 ms turns over 4 s, the two halves' p50s differed by 1.0% (sd), against 5.2% for
its two back-to-back 2 s halves. The call a stop cuts in two counts on both sides alike (one call
in about SLICE_CALLS).

Who loads first matters: of two identical bare processes over MiniLM s128's bf16 package taking
turns (1 thread, 4 rounds), the one that loaded second ran 2.3-5.2% faster in every round, and
with the creation order kept but the load order swapped, the other one did (0.94-0.97). So the
order alternates round by round: even rounds load the bare process first (it loads and warms up
alone, is stopped, the runner starts alone and the turns begin), odd rounds the runner (it starts
alone; once its artifact is mapped and LOAD_GRACE_S more has passed, it is stopped inside its
WARMUP_S warm-up while the bare process loads). Each figure is the geometric mean of the two
orders' medians over their rounds, printed beside it; a bare loop not yet timing when the
runner's window opened fails the run. Then each int8 recipe's speedup over its format's fp32
(p50s of the same round) from the runner beside the same from the bare loops, balanced the same
way. Goals: runner/bare within 0.97-1.03, speedups agree within 10%.

Run time: a pair costs one side's imports and load alone, then the rest at half speed (the other
side's load, the runner's warm-up, then the --seconds window, 2 s by default, of which each side
runs about half): about 2 minutes a round of the 18 quick rows, quiet; the default 6 rounds ~13 min.

A busy machine: with --threads at every core of a shared 2-vCPU host, OpenMP (AOTI) and XNNPACK's
thread pool spin at their barriers while the other thread waits for a CPU, and calls stall for
20-150 ms (at load 6.5: 13-70% of digits AOTI calls over 1 ms at 2 threads, 3% at 1; OMP_WAIT_POLICY=PASSIVE
mostly removes them): p50s of the runner and the bare loop then differ by chance. Run it quiet, or
with --threads 1 to check the method on a busy one.

    .venv/bin/python benchmarks/torch_deployed.py [--rounds 6] [--seconds 2] [--threads 1] [--all] [-k MODE/SLUG] [--models digits-cnn] [-v]

Last run (quiet 2-vCPU host, 2 threads, 6 rounds): 16 of 18 ratios within the goal, the
misses digits' fp32 AOTI 1.035 (runner ~4 us slower on a 0.13 ms call in both orders) and
static-int8 .pte 1.034 (19-22 us calls); 14 of 14 speedups within 10%; every MiniLM row 0.976-1.010.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
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
SLICE_CALLS = 10  # a turn lasts about this many calls of the artifact (the call a stop cuts is 1 in 10 or fewer)
SLICE_S = (0.05, 0.5)  # ... within these bounds
WARMUP_S = 1.5  # the runner's warm-up, wall seconds: long enough for the bare process to load inside it (runner first)
LOAD_GRACE_S = 0.5  # after the runner maps its artifact: the rest of its load and first call


def open_call(path: str, tensors: list, executorch: bool, threads: int):
    """(call, context) for an artifact loaded through its runtime's C++ entry point, the object
    the Python convenience API builds and calls: call() runs the model once and returns numpy
    arrays; time it inside `context`. Imports only torch, numpy and that extension, nothing of
    this package and none of the export toolchain (bare_loop's process sends this source; the
    module doc says why not aoti_load_package / executorch.runtime themselves)."""
    import contextlib

    import torch

    torch.set_num_threads(threads)
    if executorch:
        from executorch.extension.pybindings import _portable_lib

        # XNNPACK's thread pool at the runner's thread count (backend_executorch does the same)
        _portable_lib._unsafe_reset_threadpool(threads)
        # what executorch.runtime.Runtime.get().load_program(path).load_method("forward") makes
        program = _portable_lib._load_program(path, enable_etdump=False, debug_buffer_size=0,
                                              program_verification=_portable_lib.Verification.InternalConsistency)
        method = program.load_method("forward")
        return (lambda: [o.numpy() for o in method(tensors)]), contextlib.nullcontext()
    # what torch._inductor.aoti_load_package(path) wraps (its .loader): the compiled model's C++ runner
    loader = torch._C._aoti.AOTIModelPackageLoader(path, "model", False, 1, -1)
    return (lambda: [o.numpy() for o in loader.boxed_run(list(tensors))]), torch.inference_mode()


def bare_loop(path: str, inputs: str, names: list, executorch: bool, threads: int, warmup_s: float = 0.2) -> None:
    """Run in a fresh interpreter (its source and open_call's are the script): wait for a line on
    stdin, load the artifact, warm up (20 calls and 0.2 s), print "ready <warm-up p50 ms>", then call it
    in a plain loop until SIGUSR1, keeping each call's start (perf_counter_ns: CLOCK_MONOTONIC,
    the same clock in every process) and latency; print them as JSON, the last line of stdout."""
    import json
    import signal
    import statistics
    import sys
    import time

    sys.stdin.readline()  # "go": load now (paired() decides who loads first)
    import numpy as np
    import torch

    with np.load(inputs, allow_pickle=False) as npz:  # batch 1: the first row of the runner's inputs file
        tensors = [torch.from_numpy(np.ascontiguousarray(npz[name][:1])) for name in names]
    call, context = open_call(path, tensors, executorch, threads)
    done = []
    signal.signal(signal.SIGUSR1, lambda *_: done.append(True))
    starts, latencies, clock = [], [], time.perf_counter_ns
    with context:
        warm, begin = [], time.perf_counter()
        while len(warm) < 20 or time.perf_counter() - begin < warmup_s:
            t0 = clock()
            call()
            warm.append((clock() - t0) / 1e6)
        sys.stdout.write(f"ready {statistics.median(warm)}\n")
        sys.stdout.flush()
        while not done:
            t0 = clock()
            call()
            t1 = clock()
            starts.append(t0)
            latencies.append(t1 - t0)
    print(json.dumps({"starts_ns": starts, "latencies_ms": [t / 1e6 for t in latencies]}))


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just exited
        os.killpg(pgid, sig)


@dataclass(frozen=True)
class Pair:
    """One round of one recipe: the runner's p50 and the bare loop's over the runner's timed window."""
    runner_ms: float
    bare_ms: float
    runner_calls: int
    bare_calls: int
    slice_s: float


def runner_window(result: dict, exited: float) -> tuple[float, float]:
    """The runner's timed window on this process's perf_counter clock: it ended at the runner's
    exit less the phases it marked after the loop (harness/runner/phases.py), and lasted duration_s."""
    phases = result.get("phases_s") or {}
    names = list(phases)
    after = names[names.index("timed") + 1:] if "timed" in names else []
    end = exited - sum(float(phases[name]) for name in after)
    return end - float(result["duration_s"]), end


def loaded(pid: int, model_file: str) -> bool:
    """Whether the runner has mapped the artifact's code: an AOTI package's extracted .so, or the .pte."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read()
    except OSError:
        return False
    return "/aotinductor/" in maps or model_file in maps


def paired(target, artifact, inputs: Path, threads: int, seconds: float, work: Path, env: dict,
           runner_first: bool) -> Pair:
    """The runner process and a bare-loop process take turns on the CPUs (see the module doc);
    `runner_first`: the runner loads its artifact before the bare process loads its own."""
    script = (f"{inspect.getsource(open_call)}\n{inspect.getsource(bare_loop)}\n"
              "import json, sys\nbare_loop(**json.loads(sys.argv[1]))\n")
    args = {"path": str(artifact.model_file), "inputs": str(inputs), "names": [t["name"] for t in artifact.manifest["inputs"]],
            "executorch": artifact.manifest.get("runtime") == "executorch", "threads": threads}
    bare = subprocess.Popen([sys.executable, "-c", script, json.dumps(args)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    ready_at = []  # when the bare loop said it was loaded and warm (this process's perf_counter)

    def bare_loads() -> float:
        """Let the bare process load and warm up alone, stop it; the seconds of a turn."""
        bare.stdin.write("go\n")
        bare.stdin.flush()
        ready = bare.stdout.readline().split()
        ready_at.append(time.perf_counter())
        if not ready or ready[0] != "ready":
            raise SystemExit(f"bare loop failed on {artifact.manifest['recipe']}: {bare.communicate()[1].strip()[-400:]}")
        signal_group(bare.pid, signal.SIGSTOP)
        return min(max(SLICE_CALLS * float(ready[1]) / 1e3, SLICE_S[0]), SLICE_S[1])

    pid = None
    try:
        slice_s = 0.0 if runner_first else bare_loads()  # bare first: loaded and warm, it waits while the runner starts alone
        runtime = artifact.manifest.get("runtime")
        job = RunnerJob(f"deployed-{os.getpid()}-{time.monotonic_ns()}", artifact.path, artifact.manifest["file"],
                        artifact.manifest, inputs,
                        RunnerConfig(framework=runtime if runtime in BACKENDS else "torch", threads=threads, batch_size=1,
                                     warmup_runs=20, warmup_s=WARMUP_S, min_runs=50, min_duration_s=seconds,
                                     max_duration_s=max(seconds * 3, WARMUP_S * 2), evaluate=False,
                                     sensors={"profile": "generic-linux", "idle_s": 0.0}), work)
        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.update(o=target.run(job)), daemon=True)
        runner.start()
        while pid is None and runner.is_alive():  # the local target records its runner's pid as it starts it
            pid = next((r.runner_pid for _, r in target.registry.records()
                        if r.owner_pid == os.getpid() and r.case_id == job.case_id), None)
            time.sleep(0.002)
        if runner_first and pid is not None:
            # the runner loads alone; once its artifact is mapped and LOAD_GRACE_S more has passed it
            # is warming up (WARMUP_S of wall time): stopped there, the bare process loads
            deadline = time.monotonic() + 120
            while runner.is_alive() and not loaded(pid, str(artifact.manifest["file"])) and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(LOAD_GRACE_S)
            signal_group(pid, signal.SIGSTOP)
            slice_s = bare_loads()
        runner_turn = True
        while pid is not None:
            if runner_turn:
                signal_group(pid, signal.SIGCONT)
                runner.join(slice_s)
                if not runner.is_alive():
                    break
                signal_group(pid, signal.SIGSTOP)
            else:
                signal_group(bare.pid, signal.SIGCONT)
                time.sleep(slice_s)
                signal_group(bare.pid, signal.SIGSTOP)
            runner_turn = not runner_turn
        exited = time.perf_counter()
        runner.join()
        signal_group(bare.pid, signal.SIGCONT)
        signal_group(bare.pid, signal.SIGUSR1)
        out, err = bare.communicate(timeout=120)
    finally:  # nothing left stopped or running, whatever ended the pair (a failure, Ctrl-C)
        if bare.poll() is None:
            signal_group(bare.pid, signal.SIGKILL)
            bare.wait()
        if pid is not None and runner.is_alive():
            signal_group(pid, signal.SIGKILL)
    result = outcome["o"].result
    if result["status"] != "ok":
        raise SystemExit(f"runner failed on {artifact.manifest['recipe']}: {result['reason']}")
    start, end = runner_window(result, exited)
    calls = json.loads(out.strip().splitlines()[-1])
    if not ready_at or ready_at[0] > start:
        raise SystemExit(f"the bare loop of {artifact.manifest['recipe']} was not loaded yet when the runner's window "
                         f"opened (runner first: {runner_first}); the runner's warm-up ({WARMUP_S:g} s) was too short here")
    inside = [ms for t, ms in zip(calls["starts_ns"], calls["latencies_ms"]) if start <= t / 1e9 <= end]
    if len(inside) < 20:
        raise SystemExit(f"bare loop of {artifact.manifest['recipe']}: {len(inside)} calls in the runner's "
                         f"{end - start:.2f} s window ({err.strip()[-300:]})")
    return Pair(statistics.median(result["latencies_ms"]), statistics.median(inside), len(result["latencies_ms"]),
                len(inside), slice_s)


def balanced(per_round: list) -> tuple:
    """(figure, median of the bare-first rounds, median of the runner-first rounds): the figure is
    the geometric mean of the two medians, so the load order's own effect cancels (even rounds
    load the bare process first, odd rounds the runner); one round: that round."""
    first = statistics.median(per_round[0::2])
    second = statistics.median(per_round[1::2]) if len(per_round) > 1 else first
    return math.sqrt(first * second), first, second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="an even number: half load the bare loop first")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="the runner's timed window, wall seconds (each side runs about half of it)")
    parser.add_argument("--threads", type=int, default=system.physical_cores())
    parser.add_argument("--all", action="store_true", help="the nightly recipes too")
    parser.add_argument("-k", dest="only", default="", help="only recipes whose MODE/SLUG (e.g. fp32/pte) contains this")
    parser.add_argument("--models", default="digits-cnn,minilm-l6-s128",
                        help="comma-separated model names (a busy machine: digits-cnn alone)")
    parser.add_argument("-v", dest="verbose", action="store_true", help="each pair's figures as it is measured")
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
        started = time.perf_counter()
        runner_first = r % 2 == 1  # who loads first alternates round by round (the module doc says why)
        for i, (model, recipe, artifact, inputs) in enumerate(cases):
            pair = paired(target, artifact, inputs, args.threads, args.seconds, work / f"{i}-{r}", env, runner_first)
            runner[i].append(pair.runner_ms)
            bare[i].append(pair.bare_ms)
            if args.verbose:
                print(f"    {model} {recipe.mode} {recipe.slug}: runner {pair.runner_ms:.4f} ms ({pair.runner_calls} calls), "
                      f"bare {pair.bare_ms:.4f} ms ({pair.bare_calls} calls), turns of {pair.slice_s * 1e3:.0f} ms, "
                      f"ratio {pair.runner_ms / pair.bare_ms:.3f} ({'runner' if runner_first else 'bare'} loaded first)",
                      flush=True)
        print(f"  round {r + 1}/{args.rounds} done in {time.perf_counter() - started:.0f} s (load {os.getloadavg()[0]:.1f})",
              flush=True)

    print(f"\n{'model':<16}{'mode':<14}{'recipe':<20}{'runner p50 ms':>14}{'bare p50 ms':>13}{'runner/bare':>12}"
          f"{'bare 1st':>9}{'runner 1st':>11}  goal")
    for i, (model, recipe, *_rest) in enumerate(cases):
        by_order = balanced([a / b for a, b in zip(runner[i], bare[i])])
        ratio = by_order[0]
        ok = RATIO_GOAL[0] <= ratio <= RATIO_GOAL[1]
        print(f"{model:<16}{recipe.mode:<14}{recipe.slug:<20}{statistics.median(runner[i]):>14.4f}"
              f"{statistics.median(bare[i]):>13.4f}{ratio:>12.3f}{by_order[1]:>9.3f}{by_order[2]:>11.3f}  {'ok' if ok else 'OUT'}")

    print(f"\n{'model':<16}{'mode':<14}{'recipe':<20}{'runner speedup':>15}{'bare speedup':>14}{'agree':>8}  goal")
    for i, (model, recipe, *_rest) in enumerate(cases):
        if recipe.mode == "fp32":
            continue
        base = next((j for j, (m, r, *_x) in enumerate(cases) if m == model and r.mode == "fp32" and r.execution == recipe.execution), None)
        if base is None:
            continue
        run_speedup = balanced([a / b for a, b in zip(runner[base], runner[i])])[0]
        bare_speedup = balanced([a / b for a, b in zip(bare[base], bare[i])])[0]
        agree = run_speedup / bare_speedup
        print(f"{model:<16}{recipe.mode:<14}{recipe.slug:<20}{run_speedup:>14.2f}x{bare_speedup:>13.2f}x{agree:>8.3f}  "
              f"{'ok' if abs(agree - 1) <= SPEEDUP_GOAL else 'OUT'}")
    print(f"\ngoals: runner/bare within {RATIO_GOAL[0]}-{RATIO_GOAL[1]} (the geometric mean of the medians of the rounds "
          f"where the bare loop loaded first and of those where the runner did; each alone beside it); "
          f"speedups (fp32 p50 / this p50, same format, same round) agree within {SPEEDUP_GOAL:.0%}.")


if __name__ == "__main__":
    main()
