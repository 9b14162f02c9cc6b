"""Does the runner measure what TFLite itself would? For each tflite case of digits-cnn:
the runner's p50 against a bare loop of the timed call (set_tensor of each input, invoke(),
get_tensor of each output: docs/architecture.md, "What one timed call is") in a fresh process,
same artifact, same interpreter module, same threads, printed side by side with the ratio.

    .venv/bin/python benchmarks/tflite_fidelity.py [--threads N] [--min-duration 1] [--repeats 3]

Goal: runner p50 / bare p50 within 0.97-1.03. Runner and bare loop alternate, case after
case, `--repeats` times; the figure for each is the median of its repeats, so slow drift of
a shared machine hits both sides alike.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import Suite, Timing, settings
from harness.models import digits_cnn
from harness.session import BenchSession, SessionOptions
from targets import load_inventory
from targets.local import runner_env

REPO_ROOT = Path(__file__).resolve().parent.parent

GOAL = (0.97, 1.03)
MODES = ("fp32", "fp16", "dynamic-int8", "static-int8", "qat-int8", "mixed", "int16x8")

# The bare loop: load, convert one input batch, warm up like the runner, then time the call.
BARE = r"""
import json, sys, time
import numpy as np
job = json.loads(sys.argv[1])
if job["runtime"] == "ai_edge_litert.interpreter":
    from ai_edge_litert.interpreter import Interpreter
elif job["runtime"] == "tflite_runtime.interpreter":
    from tflite_runtime.interpreter import Interpreter
else:
    import tensorflow as tf
    Interpreter = tf.lite.Interpreter
interp = Interpreter(model_path=job["model"], num_threads=job["threads"])
interp.allocate_tensors()
with np.load(job["inputs"]) as npz:
    data = {k: npz[k] for k in npz.files}
feeds = []
for name, tensor in job["tensors"].items():
    d = next(d for d in interp.get_input_details() if d["name"] == tensor)
    x = data[name][:job["batch"]]
    if tuple(d["shape"]) != x.shape:
        interp.resize_tensor_input(d["index"], list(x.shape))
        interp.allocate_tensors()
        d = next(d for d in interp.get_input_details() if d["name"] == tensor)
    scale, zero = d["quantization"]
    if scale and np.dtype(d["dtype"]).kind == "i":
        info = np.iinfo(d["dtype"])
        x = np.clip(np.round(x / scale) + zero, info.min, info.max)
    feeds.append((d["index"], np.ascontiguousarray(x, dtype=d["dtype"])))
invoke, set_tensor, get_tensor = interp.invoke, interp.set_tensor, interp.get_tensor
outs = [d["index"] for d in interp.get_output_details()]
def call():
    for index, value in feeds:
        set_tensor(index, value)
    invoke()
    return [get_tensor(o) for o in outs]
call()
deadline = time.perf_counter() + job["warmup_s"]
done = 0
while done < job["warmup_runs"] or time.perf_counter() < deadline:
    call()
    done += 1
perf = time.perf_counter_ns
lat = []
begin = perf()
min_ns, max_ns = int(job["min_s"] * 1e9), int(job["max_s"] * 1e9)
while True:
    start = perf()
    call()
    end = perf()
    lat.append((end - start) / 1e6)
    if (len(lat) >= job["min_runs"] and end - begin >= min_ns) or end - begin >= max_ns:
        break
print(json.dumps({"p50_ms": float(np.median(lat)), "n": len(lat)}))
"""


def bare_p50(artifact, manifest: dict, inputs: Path, runtime: str, threads: int, batch: int, timing: Timing) -> float:
    job = {"model": str(artifact), "inputs": str(inputs), "runtime": runtime, "threads": threads, "batch": batch,
           "tensors": manifest["notes"]["tflite_tensors"]["inputs"], "warmup_runs": timing.warmup_runs,
           "warmup_s": timing.warmup_s, "min_runs": timing.min_runs, "min_s": timing.min_duration_s,
           "max_s": timing.max_duration_s}
    env = runner_env(REPO_ROOT)  # the runner's own environment (TF_USE_LEGACY_KERAS and thread variables scrubbed)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", BARE, json.dumps(job)], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"bare invoke loop failed for {artifact}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["p50_ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads (default: physical cores)")
    parser.add_argument("--min-runs", type=int, default=200)
    parser.add_argument("--min-duration", type=float, default=1.0, help="seconds per timed loop, both sides")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="*", default=list(MODES))
    parser.add_argument("--cache-dir", default=str(settings.cache_dir()))
    args = parser.parse_args()

    timing = Timing(min_runs=args.min_runs, min_duration_s=args.min_duration, max_duration_s=max(10.0, 3 * args.min_duration))
    suite = Suite(model=digits_cnn, frameworks=("tflite",), modes=tuple(args.modes), timing=timing, name="tflite_fidelity")
    cases = [c for c in suite.cases() if c.recipe is not None]
    samples: dict[str, dict[str, list[float]]] = {c.case_id: {"runner": [], "bare": []} for c in cases}
    with tempfile.TemporaryDirectory(prefix="tflite-fidelity-") as tmp:
        for repeat in range(args.repeats):
            options = SessionOptions(results_dir=Path(tmp), cache_dir=Path(args.cache_dir), threads=args.threads,
                                     run_id=f"fidelity-{repeat}")
            session = BenchSession(load_inventory()["local"], options, command=sys.argv)
            try:
                for case in cases:
                    row = session.run_case(case)
                    if row["status"] != "ok":
                        raise SystemExit(f"{case.case_id}: {row['status']}: {row['reason']}")
                    artifact = session.cache.lookup(row["artifact_key"])
                    samples[case.case_id]["runner"].append(row["latency_p50_ms"])
                    samples[case.case_id]["bare"].append(bare_p50(artifact.model_file, dict(artifact.manifest),
                                                                  session.models.inputs_file(case), row["runtime"],
                                                                  int(row["threads"]), case.batch_size, timing))
                    print(f"  repeat {repeat + 1}/{args.repeats} {case.case_id}: runner {1000 * samples[case.case_id]['runner'][-1]:.2f} us, "
                          f"bare {1000 * samples[case.case_id]['bare'][-1]:.2f} us", file=sys.stderr)
            finally:
                session.close()
        threads = session.threads

    print(f"tflite runner fidelity on {session.target_info.device} ({threads} threads, "
          f"median of {args.repeats} repeats of >= {args.min_duration:g} s loops each side)")
    print(f"{'case':52s} {'runner p50 us':>14s} {'bare p50 us':>12s} {'ratio':>7s}  goal {GOAL[0]}-{GOAL[1]}")
    outside = 0
    for case in cases:
        runner, bare = (statistics.median(samples[case.case_id][k]) for k in ("runner", "bare"))
        ratio = runner / bare
        ok = GOAL[0] <= ratio <= GOAL[1]
        outside += not ok
        print(f"{case.case_id:52s} {1000 * runner:14.2f} {1000 * bare:12.2f} {ratio:7.3f}  {'ok' if ok else 'OUTSIDE'}")
    print(f"{len(cases) - outside}/{len(cases)} cases within the goal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
