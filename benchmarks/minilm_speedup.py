"""The number that matters: does quantbench's int8 speedup on all-MiniLM-L6-v2 (128 tokens,
batch 1, dynamic-int8) match what interleaved bare loops over the same artifact files measure,
in the same run, on a quiet machine and with a busy loop running beside it?

Per framework, in this order (the bare rounds are split around quantbench's so both see the
same stretch of the machine's drift):
  bare loops    one fresh process holding BOTH artifact files (fp32 and int8, the very files
                quantbench measured), alternating timed rounds of --bare-seconds between them;
                a round's ratio is fp32 p50 / int8 p50; half the rounds before quantbench's,
                half after; the bare speedup is the median of the ratios, as quantbench's;
  quantbench    a session with --rounds ROUNDS: every round a fresh int8 runner process beside a
                fresh fp32 one (ABBA); the reported speedup with its order-statistic interval (and its level).
  onnxruntime   fp32 .onnx vs onnxruntime.quantize_dynamic (QInt8, per channel)
  torch         fp32 TorchScript vs torch.ao.quantize_dynamic (x86) TorchScript: the recipe's own
                execution format (quantbench compares it with fp32-torchscript, not the .pt2)
Goals (issue 11): quantbench / bare within 0.90-1.10, and the interval covers the bare value.
`--busy` runs a spinning process beside the whole measurement (one core of this machine busy), in a
session of its own like another user's job; the bare loops run in a session of their own like the
runner (with autogroup scheduling a session is a scheduling group, and torch's 2-thread OpenMP
barriers under load depend on it by a factor of ten).

    .venv/bin/python benchmarks/minilm_speedup.py [--rounds 5] [--seconds 2] [--bare-rounds 6] [--threads 2] [--busy]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import Suite, Timing
from harness.artifacts import ArtifactCache
from harness.data import resolve_data
from harness.models import minilm_l6_s128
from harness.quantize import BuildContext
from harness.rounds import log_median
from harness.runner import system
from harness import settings
from harness.session import BenchSession, SessionOptions
from targets import TargetConfig

INT8 = {"onnxruntime": "minilm-l6-s128-onnxruntime-dynamic-int8-dyn-b1", "torch": "minilm-l6-s128-torch-dynamic-int8-ao-x86-b1"}

# One process, both artifacts, alternating timed rounds. Each call is the timed call of
# docs/architecture.md: inputs in the model's dtypes in, outputs as host arrays out.
BARE = r"""
import json, sys, time
import numpy as np
job = json.loads(sys.argv[1])
data = np.load(job["inputs"])
threads = job["threads"]
if job["framework"] == "onnxruntime":
    import onnxruntime as ort
    def load(path):
        so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        feed = {i.name: np.ascontiguousarray(data[i.name][:1]) for i in s.get_inputs()}
        return lambda: s.run(None, feed)
else:
    import torch
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = "x86"
    mode = torch.inference_mode(); mode.__enter__()
    def load(path):
        m = torch.jit.load(path).eval()
        args = tuple(torch.from_numpy(np.ascontiguousarray(data[n][:1])) for n in job["input_names"])
        def call():
            out = m(*args)
            return [o.numpy() for o in ((out,) if isinstance(out, torch.Tensor) else out)]
        return call
calls = {"fp32": load(job["fp32"]), "int8": load(job["int8"])}
for call in calls.values():
    for _ in range(20): call()
rounds = []
for r in range(job["rounds"]):
    order = ("fp32", "int8") if r % 2 == 0 else ("int8", "fp32")
    p50 = {}
    for side in order:
        call, lat = calls[side], []
        end = time.perf_counter() + job["seconds"]
        while time.perf_counter() < end:
            t0 = time.perf_counter_ns(); call(); lat.append((time.perf_counter_ns() - t0) / 1e6)
        p50[side] = float(np.median(lat))
    rounds.append(p50)
print(json.dumps(rounds))
"""


def bare_rounds(framework: str, fp32: Path, int8: Path, inputs: Path, input_names, threads: int, rounds: int,
                seconds: float) -> list[dict]:
    job = {"framework": framework, "fp32": str(fp32), "int8": str(int8), "inputs": str(inputs), "threads": threads,
           "rounds": rounds, "seconds": seconds, "input_names": list(input_names)}
    # Its own session, as the runner's (targets/local.py): with the kernel's autogroup scheduling a
    # session is a scheduling group, and under load that decides how often torch's OpenMP threads
    # wait for a preempted peer (here 930 ms a call in its own group beside a busy loop, 70-110 ms
    # when it shared the busy loop's group; 30 ms quiet): both sides must run in the same conditions.
    out = subprocess.run([sys.executable, "-c", BARE, json.dumps(job)], capture_output=True, text=True,
                         start_new_session=True)
    if out.returncode != 0:
        raise SystemExit(f"bare {framework} loops failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def artifacts(framework: str, cache_dir: Path):
    """(fp32 baseline artifact, int8 artifact) exactly as quantbench picks them."""
    dataset = resolve_data(minilm_l6_s128.data)
    ctx = BuildContext(minilm_l6_s128, dataset, ArtifactCache(cache_dir / "artifacts"), cache_dir / "models", print)
    [case] = [c for c in suite(framework, Timing()).cases() if c.case_id == INT8[framework]]
    return ctx.artifact(BenchSession.baseline_case(case).recipe)[0], ctx.artifact(case.recipe)[0]


def suite(framework: str, timing: Timing) -> Suite:
    return Suite(model=minilm_l6_s128, frameworks=(framework,), modes=("fp32", "dynamic-int8"), timing=timing,
                 name="minilm-speedup", eval_samples={"quick": 50})


def quantbench(framework: str, args, results: Path) -> tuple[dict, dict]:
    """(int8 row, its baseline row) of one session with --rounds."""
    timing = Timing(warmup_runs=20, warmup_s=0.5, min_runs=50, min_duration_s=args.seconds, max_duration_s=args.seconds * 5)
    options = SessionOptions(results_dir=results, cache_dir=args.cache_dir, threads=args.threads, rounds=args.rounds,
                             run_id=framework)
    session = BenchSession(TargetConfig(name="local", kind="local"), options)
    try:
        [case] = [c for c in suite(framework, timing).cases() if c.case_id == INT8[framework]]
        row = session.run_case(case)
        baseline = session.baseline_row(case)
    finally:
        session.close()
    if row["status"] != "ok":
        raise SystemExit(f"quantbench {row['case_id']} failed: {row['reason']}")
    return row, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--rounds", type=int, default=5, help="quantbench rounds (paired runner processes)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per runner process")
    parser.add_argument("--bare-rounds", type=int, default=6, help="alternating bare rounds per framework (split around quantbench)")
    parser.add_argument("--bare-seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--busy", action="store_true", help="a spinning process beside the whole measurement")
    parser.add_argument("--frameworks", default="onnxruntime,torch")
    parser.add_argument("--cache-dir", type=Path, default=settings.cache_dir())
    args = parser.parse_args()

    results = Path(tempfile.mkdtemp(prefix="qb-minilm-speedup-"))
    import numpy as np

    inputs = results / "inputs.npz"
    np.savez(inputs, **{k: np.ascontiguousarray(v[:1]) for k, v in resolve_data(minilm_l6_s128.data).eval_inputs.items()})
    # the busy loop in a session of its own, like another user's job
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) if args.busy else None
    try:
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        print(f"all-MiniLM-L6-v2, 128 tokens, batch 1, dynamic-int8 vs fp32, {args.threads} threads; quantbench "
              f"{args.rounds} rounds of {args.seconds:g} s; bare {args.bare_rounds} alternating rounds of {args.bare_seconds:g} s; "
              f"{'WITH a busy loop beside it' if busy else 'no busy loop'}; load average {' '.join(load)}; "
              f"CPU {system.cpu_model()} ({system.physical_cores()} cores)", flush=True)
        summary = []
        for framework in args.frameworks.split(","):
            # the very files quantbench runs (built here first if the cache lacks them)
            fp32_artifact, int8_artifact = artifacts(framework, args.cache_dir)
            names = [t["name"] for t in int8_artifact.manifest["inputs"]]
            first_half = args.bare_rounds // 2
            bare = bare_rounds(framework, fp32_artifact.model_file, int8_artifact.model_file, inputs, names, args.threads,
                               first_half, args.bare_seconds) if first_half else []
            row, baseline = quantbench(framework, args, results)
            assert {row["artifact_key"], baseline["artifact_key"]} == {int8_artifact.manifest["key"], fp32_artifact.manifest["key"]}
            bare += bare_rounds(framework, fp32_artifact.model_file, int8_artifact.model_file, inputs, names, args.threads,
                                args.bare_rounds - first_half, args.bare_seconds)
            ratios = [r["fp32"] / r["int8"] for r in bare]
            bare_speedup = log_median(ratios)
            qb, low, high = row["speedup"], row["speedup_ci_low"], row["speedup_ci_high"]
            covers = low is not None and low <= bare_speedup <= high
            print(f"\n{framework}: {row['recipe']} vs {baseline['recipe']}")
            level = row.get("speedup_ci_level")
            print(f"  quantbench  {qb:.3f}x  [{low:.3f}-{high:.3f}"
                  + (f" @{100 * level:.3g}%" if level is not None else "") + f"]  rounds {row['speedup_rounds']}"
                  f"{'  (rounds disagree)' if row['rounds_disagree'] else ''}")
            print(f"              fp32 round p50s {row['baseline_round_p50_ms']} ms; int8 {row['round_p50_ms']} ms")
            print(f"  bare loops  {bare_speedup:.3f}x  rounds " + " ".join(f"{r:.3f}" for r in ratios)
                  + f"  (fp32 p50 {statistics.median(r['fp32'] for r in bare):.2f} ms, int8 {statistics.median(r['int8'] for r in bare):.2f} ms)")
            summary.append((framework, qb, low, high, bare_speedup, covers))
        print(f"\n{'framework':<13}{'quantbench':>11}{'interval':>18}{'bare':>9}{'qb/bare':>9}   goal 0.90-1.10, interval covers bare")
        for framework, qb, low, high, bare_speedup, covers in summary:
            within = 0.9 <= qb / bare_speedup <= 1.1
            print(f"{framework:<13}{qb:>10.3f}x{f'[{low:.3f}-{high:.3f}]':>18}{bare_speedup:>8.3f}x{qb / bare_speedup:>9.3f}   "
                  f"{'ok' if within else 'OUTSIDE'}, {'covered' if covers else 'NOT covered'}")
        print(f"results: {results}")
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


if __name__ == "__main__":
    main()
