"""Is quantbench's GPU timing synchronised? Bare loops against the runner, on the same artifact.

A CUDA call returns when its kernels are queued, not when they have run. A loop that times
`module(x)` without waiting measures the launch; only a wait inside the timed region
(torch.cuda.synchronize(), or a copy of the outputs to the host) measures the work. For each
model, on GPU 0 and in one run, this prints:

  bare, no sync     per-call times of `module(*x)` alone, in bursts of --burst calls that start
                    after a synchronize (a loop that never waits: it measures the launch until
                    CUDA's launch queue fills)
  bare, sync        `module(*x); torch.cuda.synchronize()` per call (inputs already on the GPU)
  bare, host io     `module(x.to("cuda")).cpu()` per call (copies in the timed region)
  quantbench        the runner's p50 through the cuda target, in a fresh process, with
                    io "device" (run() ends with torch.cuda.synchronize()) and io "host"

Every figure is a median of per-call times (p50). Rounds alternate bare loops and runner
processes to spread drift. Models: `chain`, a GPU-bound chain of square fp32 matrix products
(--width x --width, --depth times, batch --batch of the real digits inputs, flattened; its
weights are seeded, it is not trained: this benchmark reads no accuracy), and `digits`, the
digits CNN fp32 at batch 1 (launch-bound: syncing changes little there; shown for context).

Goal (the GPU-bound model): quantbench's p50 within 5% of the synchronised loop's, for io
device (against bare sync) and io host (against bare host io); and the unsynchronised loop
under half of the synchronised one, which shows that the model is GPU-bound enough for the
comparison to mean something. Exit status 1 when the goal is missed.

    .venv/bin/python benchmarks/cuda_timing_sync.py [--rounds 2] [--seconds 2] [--json PATH]
    .venv/bin/python benchmarks/cuda_timing_sync.py --device cpu --width 64 --depth 1 --batch 8   # rehearsal, no GPU

With --device cpu it runs the same code on the local target (no GPU, no goal): a rehearsal
of the script, not a synchronisation check.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.artifacts import ArtifactCache
from harness.data import resolve_data
from harness.models import digits_cnn, torch_model
from harness.models.digits_cnn import N_EVAL, load_data
from harness.quantize import BuildContext, fp32_recipe
from harness.runner.protocol import RunnerConfig
from harness import settings
from targets import RunnerJob, TargetConfig, open_target

GOAL = 0.05  # quantbench p50 within 5% of the synchronised bare loop
GPU_BOUND = 0.5  # the unsynchronised loop must read under half of the synchronised one


def chain_model(width: int, depth: int):
    """A GPU-bound fp32 model: Linear(64, width), then one width x width Linear applied
    `depth` times (one weight, so the file stays small), then Linear(width, 10)."""
    import torch

    class MatmulChain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = torch.nn.Linear(64, width)
            self.square = torch.nn.Linear(width, width)
            self.out = torch.nn.Linear(width, 10)

        def forward(self, x):
            h = self.inp(x.flatten(1))
            for _ in range(depth):
                h = torch.relu(self.square(h))
            return self.out(h)

    torch.manual_seed(0)
    model = MatmulChain()
    with torch.no_grad():  # keep activations O(1) through the chain (no overflow, no denormals)
        model.square.weight.mul_(1.0 / max(1.0, float(np.sqrt(width)) * model.square.weight.std().item()))
    return model.eval()


def runner_p50(target, profile: str, artifact, inputs: Path, threads: int, batch: int, io: str, seconds: float,
               work: Path) -> dict:
    """The runner's p50 through the target (a fresh process), with its latencies' count."""
    config = RunnerConfig(framework="torch", threads=threads, batch_size=batch, warmup_runs=20, warmup_s=0.3,
                          min_runs=50, min_duration_s=seconds, max_duration_s=max(3 * seconds, 2.0),
                          options={"io": io}, sensors={"profile": profile, "idle_s": 0.2, "settings": {}})
    job = RunnerJob("timing-sync", artifact.path, artifact.manifest["file"], artifact.manifest, inputs, config, work)
    outcome = target.run(job)
    result = outcome.result
    if result.get("status") != "ok":
        raise SystemExit(f"the runner failed on {artifact.manifest['model']} (io {io}): {result.get('reason')}\n{outcome.log[-2000:]}")
    details = result.get("runtime_details") or {}
    return {"p50_ms": statistics.median(result["latencies_ms"]), "n": result["n_runs"],
            "timing_sync": details.get("timing_sync"), "device": details.get("cuda_device") or details.get("device")}


class BareLoops:
    """The artifact loaded the way the runner's torch backend loads it, timed by plain loops here."""

    def __init__(self, artifact, x: np.ndarray, device: str, threads: int) -> None:
        import torch

        from harness.runner.backend_torch import Backend

        self.torch = torch
        self.backend = Backend(str(artifact.model_file), dict(artifact.manifest), threads, {"device": device, "io": "device"})
        self.module = self.backend.module
        self.on_device = self.backend.prepare({"input": x})  # on the GPU with device cuda
        self.on_host = (torch.from_numpy(np.ascontiguousarray(x)),)
        self.device = device
        self.sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        with torch.inference_mode():
            for _ in range(20):
                self.module(*self.on_device)
        self.sync()

    def _timed(self, call: Callable[[], Any], seconds: float, min_calls: int) -> list[float]:
        perf, times = time.perf_counter_ns, []
        deadline = perf() + int(seconds * 1e9)
        with self.torch.inference_mode():
            while len(times) < min_calls or perf() < deadline:
                start = perf()
                call()
                times.append((perf() - start) / 1e6)
        return times

    def synchronised(self, seconds: float) -> list[float]:
        def call():
            self.module(*self.on_device)
            self.sync()

        return self._timed(call, seconds, 50)

    def host_io(self, seconds: float) -> list[float]:
        def call():
            out = self.module(*(t.to(self.device) for t in self.on_host))
            out.cpu()  # waits for the GPU, as the runner's io "host" does

        return self._timed(call, seconds, 50)

    def unsynchronised(self, seconds: float, burst: int) -> list[float]:
        """Per-call times of calls that never wait, `burst` at a time after a (untimed) synchronize."""
        perf, times = time.perf_counter_ns, []
        deadline = perf() + int(seconds * 1e9)
        with self.torch.inference_mode():
            while len(times) < 50 or perf() < deadline:
                self.sync()
                for _ in range(burst):
                    start = perf()
                    self.module(*self.on_device)
                    times.append((perf() - start) / 1e6)
        self.sync()
        return times


def measure_model(name: str, ctx: BuildContext, batch: int, target, info, threads: int, args, work: Path) -> dict:
    artifact, built = ctx.artifact(fp32_recipe("torch"))
    dataset = ctx.dataset
    x = dataset.eval_inputs["input"][:batch]
    inputs = work / f"{name}-inputs.npz"
    np.savez(inputs, input=dataset.eval_inputs["input"])
    bare = BareLoops(artifact, x, args.device, threads)
    figures: dict[str, list[float]] = {k: [] for k in ("no_sync", "sync", "host_io", "quantbench_device", "quantbench_host")}
    nan = float("nan")
    timing_sync = {}
    for r in range(args.rounds):
        figures["sync"].append(statistics.median(bare.synchronised(args.seconds)))
        figures["no_sync"].append(statistics.median(bare.unsynchronised(args.seconds / 2, args.burst)))
        figures["host_io"].append(statistics.median(bare.host_io(args.seconds)) if "host" in args.io else nan)
        for io in args.io:
            got = runner_p50(target, info.profile, artifact, inputs, threads, batch, io, args.seconds,
                             work / f"{name}-{io}-{r}")
            figures[f"quantbench_{io}"].append(got["p50_ms"])
            timing_sync[io] = got["timing_sync"]
        for io in {"device", "host"} - set(args.io):
            figures[f"quantbench_{io}"].append(nan)
        print(f"  {name} round {r + 1}: sync {figures['sync'][-1]:.4f} ms, no sync {figures['no_sync'][-1]:.4f} ms, "
              f"quantbench io device {figures['quantbench_device'][-1]:.4f} ms, host io {figures['host_io'][-1]:.4f} ms, "
              f"quantbench io host {figures['quantbench_host'][-1]:.4f} ms", flush=True)
    p50 = {k: statistics.median(v) for k, v in figures.items()}
    return {"model": name, "batch": batch, "artifact": artifact.manifest["model"], "artifact_built": built,
            "p50_ms": p50, "rounds": figures, "runner_timing_sync": timing_sync,
            "ratio_device": p50["quantbench_device"] / p50["sync"], "ratio_host": p50["quantbench_host"] / p50["host_io"],
            "no_sync_over_sync": p50["no_sync"] / p50["sync"]}


def verdict(row: dict) -> dict:
    """Both io modes must be within the goal (a mode that was not run is not within it)."""
    device_ok = abs(row["ratio_device"] - 1.0) <= GOAL
    host_ok = abs(row["ratio_host"] - 1.0) <= GOAL
    bound = row["no_sync_over_sync"] < GPU_BOUND
    return {"device_within_goal": device_ok, "host_within_goal": host_ok, "gpu_bound": bound,
            "passed": device_ok and host_ok and bound}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda: the check on GPU 0 (default); cpu: a rehearsal of this script on the local target")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of bare loops and runner processes")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per loop")
    parser.add_argument("--burst", type=int, default=8, help="unsynchronised calls per burst")
    parser.add_argument("--width", type=int, default=4096, help="chain model: square matrix size")
    parser.add_argument("--depth", type=int, default=8, help="chain model: square matrix products per call")
    parser.add_argument("--batch", type=int, default=500, help="chain model: batch (at most the 500 digits evaluation samples)")
    parser.add_argument("--models", default="chain,digits", help="comma-separated: chain, digits")
    parser.add_argument("--threads", type=int, default=None, help="torch threads here and in the runner (default: the target's)")
    parser.add_argument("--io", default="device,host", help="the runner's io modes to compare, comma-separated: device, host")
    parser.add_argument("--cache-dir", default=str(settings.cache_dir()))
    parser.add_argument("--json", default=None, help="also write every figure and the verdict here")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - {"chain", "digits"})
    if unknown or not models:
        parser.error(f"--models: unknown {unknown or 'empty'}; known: chain, digits")
    args.io = [m.strip() for m in args.io.split(",") if m.strip()]
    if not args.io or set(args.io) - {"device", "host"}:
        parser.error("--io: device, host or both")
    if not 1 <= args.batch <= N_EVAL:
        parser.error(f"--batch must be 1..{N_EVAL} (the digits evaluation samples)")

    cache_dir = Path(args.cache_dir)
    kind = "cuda" if args.device == "cuda" else "local"
    from targets import TargetError

    try:
        target = open_target(TargetConfig(name=kind, kind=kind), cache_dir)
        info = target.info()
    except TargetError as exc:
        print(f"cuda_timing_sync: cannot use target {kind}: {exc}", file=sys.stderr)
        return 2
    if kind == "cuda":  # this process's bare loops on the board the runner gets (CUDA_VISIBLE_DEVICES=<its UUID>)
        os.environ["CUDA_VISIBLE_DEVICES"] = target.environment().get("CUDA_VISIBLE_DEVICES", "0")
    threads = args.threads or info.threads
    work = Path(tempfile.mkdtemp(prefix="cuda-timing-sync-"))
    cache = ArtifactCache(cache_dir / "artifacts")
    print(f"timing synchronisation on {info.device} ({kind} target, {threads} thread(s)), {args.rounds} round(s) of "
          f"~{args.seconds:g} s per loop", flush=True)
    rows = []
    for name in models:
        if name == "chain":
            spec = torch_model(f"matmul-chain-w{args.width}-d{args.depth}", lambda: chain_model(args.width, args.depth),
                               data=load_data)
            batch = args.batch
        else:
            spec, batch = digits_cnn, 1
        ctx = BuildContext(spec, resolve_data(spec.data), cache, cache_dir / "models")
        row = measure_model(name, ctx, batch, target, info, threads, args, work)
        if name == "chain" and args.device == "cuda":
            row["verdict"] = verdict(row)
        rows.append(row)

    print()
    header = ("model", "batch", "no_sync_ms", "sync_ms", "quantbench_dev_ms", "ratio_dev", "host_io_ms", "quantbench_host_ms",
              "ratio_host", "goal")
    table = []
    for row in rows:
        p = row["p50_ms"]
        goal = ("met" if row["verdict"]["passed"] else "MISSED") if "verdict" in row else "not gated"
        table.append((row["model"], str(row["batch"]), f"{p['no_sync']:.4f}", f"{p['sync']:.4f}", f"{p['quantbench_device']:.4f}",
                      f"{row['ratio_device']:.3f}", f"{p['host_io']:.4f}", f"{p['quantbench_host']:.4f}", f"{row['ratio_host']:.3f}", goal))
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in table:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    print("p50 of per-call times. ratio_dev = quantbench io device / bare sync; ratio_host = quantbench io host / bare host io.")
    gated = [row for row in rows if "verdict" in row]
    if args.device == "cpu":
        print("device cpu: a rehearsal of this script (no GPU, nothing to synchronise); the goal is checked on a GPU only.")
    for row in gated:
        v = row["verdict"]
        print(f"goal ({row['model']}): |ratio - 1| <= {GOAL:.2f} for io device ({'yes' if v['device_within_goal'] else 'NO'}) "
              f"and io host ({'yes' if v['host_within_goal'] else 'NO'}); GPU-bound, no sync < {GPU_BOUND:g} x sync "
              f"({'yes' if v['gpu_bound'] else 'NO'}: {row['no_sync_over_sync']:.3f})")
    passed = all(row["verdict"]["passed"] for row in gated) if gated else None
    if args.json:
        document = {"device": info.device, "target_kind": kind, "host": platform.node(), "threads": threads,
                    "settings": {k: v for k, v in vars(args).items() if k != "json"}, "goal": GOAL, "gpu_bound_below": GPU_BOUND,
                    "models": rows, "passed": passed,
                    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(document, indent=1))
    return 1 if passed is False else 0


if __name__ == "__main__":
    sys.exit(main())
