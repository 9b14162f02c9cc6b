"""Is the same work timed in every framework? Each framework's runner p50 beside a bare loop
that does exactly the timed call, in one run.

The timed call, defined once for every backend (docs/architecture.md, "What one timed call is"):
host inputs already in the model's own dtypes go in, every output comes back as a host numpy
array in the model's own dtype. So:
  onnxruntime   session.run(None, feed)                      (numpy in, numpy out)
  torch         module(*tensors), then .numpy() of each output (inference mode entered once)
  tflite        set_tensor of each input, invoke(), get_tensor of each output
The bare loops below are written from that definition, not from the backends' code. On
digits-cnn (tens of microseconds a call) any difference in what is timed shows.

Rounds alternate bare and runner (and which goes first) to spread the machine's drift; every
round prints. Goal: runner/bare within 0.95-1.05 for every framework.

    .venv/bin/python benchmarks/timed_work.py [--rounds 3] [--seconds 2] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.artifacts import ArtifactCache
from harness.data import resolve_data
from harness.models import digits_cnn
from harness.quantize import BuildContext, recipes_for
from harness.runner import system
from harness.runner.protocol import RunnerConfig
from harness import settings
from targets import RunnerJob, TargetConfig
from targets.local import LocalTarget

# A bare loop: load the artifact, build `call` that does the timed work, warm up, time each call.
PRELUDE = r"""
import json, sys, time
import numpy as np
path, inputs, threads, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
x = np.load(inputs)["input"][:1]  # float32 (N, 1, 8, 8): digits-cnn's own input dtype and layout
"""
LOOPS = {
    "onnxruntime": r"""
import onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
feed = {s.get_inputs()[0].name: x}
call = lambda: s.run(None, feed)
""",
    "torch": r"""
import torch
torch.set_num_threads(threads)
module = torch.export.load(path).module()
t = torch.from_numpy(x)
mode = torch.inference_mode(); mode.__enter__()  # once, for the whole process (keep the reference)
def call():
    out = module(t)
    return [o.numpy() for o in ((out,) if isinstance(out, torch.Tensor) else out)]
""",
    "tflite": r"""
from ai_edge_litert import interpreter as lite
it = lite.Interpreter(model_path=path, num_threads=threads); it.allocate_tensors()
ins = [d["index"] for d in it.get_input_details()]; outs = [d["index"] for d in it.get_output_details()]
def call():
    it.set_tensor(ins[0], x)
    it.invoke()
    return [it.get_tensor(o) for o in outs]
""",
}
EPILOGUE = r"""
for _ in range(200): call()
lat = []; end = time.perf_counter() + seconds
while time.perf_counter() < end:
    t0 = time.perf_counter_ns(); call(); lat.append((time.perf_counter_ns() - t0) / 1e6)
print(json.dumps({"p50": float(np.median(lat)), "n": len(lat)}))
"""


def bare_p50(framework: str, model: Path, inputs: Path, threads: int, seconds: float) -> float:
    code = PRELUDE + LOOPS[framework] + EPILOGUE
    out = subprocess.run([sys.executable, "-c", code, str(model), str(inputs), str(threads), str(seconds)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bare {framework} loop failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["p50"]


def runner_p50(target: LocalTarget, framework: str, artifact, inputs: Path, threads: int, seconds: float, work: Path) -> float:
    job = RunnerJob("timed-work", artifact.path, artifact.manifest["file"], artifact.manifest, inputs,
                    RunnerConfig(framework=framework, threads=threads, batch_size=1, warmup_runs=200, warmup_s=0.2,
                                 min_runs=100, min_duration_s=seconds, max_duration_s=seconds * 3, evaluate=False), work)
    outcome = target.run(job)
    if outcome.result["status"] != "ok":
        raise SystemExit(f"runner ({framework}) failed: {outcome.result['reason']}")
    return statistics.median(outcome.result["latencies_ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path, default=settings.cache_dir())
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="qb-timed-work-"))
    import numpy as np

    dataset = resolve_data(digits_cnn.data)
    inputs = work / "inputs.npz"
    np.savez(inputs, **dataset.eval_inputs)
    ctx = BuildContext(digits_cnn, dataset, ArtifactCache(args.cache_dir / "artifacts"), args.cache_dir / "models")
    target = LocalTarget(TargetConfig(name="local", kind="local"), args.cache_dir)
    artifacts = {}
    for framework in ("onnxruntime", "torch", "tflite"):
        recipe = next(r for r in recipes_for(framework, "fp32") if not r.execution and r.source in ("", "keras"))
        artifacts[framework] = ctx.artifact(recipe)[0]

    print(f"digits-cnn fp32, batch 1, {args.threads} thread(s), {args.rounds} alternating rounds of {args.seconds:g} s, "
          f"CPU {system.cpu_model()}")
    runner: dict = {f: [] for f in artifacts}
    bare: dict = {f: [] for f in artifacts}
    for r in range(args.rounds):
        for framework, artifact in artifacts.items():
            steps = [("bare", lambda: bare_p50(framework, artifact.model_file, inputs, args.threads, args.seconds)),
                     ("runner", lambda: runner_p50(target, framework, artifact, inputs, args.threads, args.seconds,
                                                   work / f"{framework}-{r}"))]
            for side, measure in (steps if r % 2 == 0 else steps[::-1]):
                (bare if side == "bare" else runner)[framework].append(measure())
        print(f"round {r}: " + "  ".join(f"{f} runner {runner[f][-1] * 1000:.1f} us bare {bare[f][-1] * 1000:.1f} us"
                                         for f in artifacts), flush=True)
    print(f"\n{'framework':<13}{'runner p50 us':>14}{'bare p50 us':>13}{'runner/bare':>13}   goal 0.95-1.05")
    for framework in artifacts:
        rp, bp = statistics.median(runner[framework]), statistics.median(bare[framework])
        print(f"{framework:<13}{rp * 1000:>14.2f}{bp * 1000:>13.2f}{rp / bp:>13.3f}   "
              f"{'ok' if 0.95 <= rp / bp <= 1.05 else 'OUTSIDE'}")


if __name__ == "__main__":
    main()
