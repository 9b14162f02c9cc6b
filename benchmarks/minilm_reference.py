"""Does quantbench report what a bare loop measures, on a real transformer?

all-MiniLM-L6-v2 (minilm-l6-s128: batch 1, 128 tokens), in one run on this machine:
  quantbench    four cases through BenchSession on the local target (a fresh runner process
                per case): onnxruntime fp32 / dynamic-int8 (.onnx), torch fp32 / torch.ao dynamic
                int8 (both TorchScript: a speedup compares quantization, not formats).
  bare loops    the same artifact files, each in a fresh process with THREADS threads:
                InferenceSession.run, or the loaded torch module under inference_mode().
  torch eager   for reference, the eager module and torch.ao.quantization.quantize_dynamic
                of it, as a PyTorch user runs them without exporting.
Rounds alternate harness and bare measurements to spread drift, and every round is printed.
Then the int8 speedup over fp32 each way and their ratio (goal: quantbench within 10% of the
bare loop), the ONNX artifact sizes and the fidelity columns. The issue's reference figures
(measured on a quiet machine) are printed beside them, never used in a computation.

    .venv/bin/python benchmarks/minilm_reference.py [--rounds 3] [--seconds 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from harness.artifacts import load_artifact
from harness.data import resolve_data
from harness.models import minilm_l6_s128
from harness.quantize import recipes_for
from harness.runner import system
from harness import settings
from harness.session import BenchSession, SessionOptions
from harness.suite import Case, Timing
from targets import TargetConfig


# Issue #8's figures: 2 threads, batch 1, sequence 128, AVX-512 VNNI, quiet machine.
ISSUE_REFERENCE = {("onnxruntime", "fp32"): 9.6, ("onnxruntime", "dynamic-int8"): 5.0,
                   ("torch", "fp32"): 18.8, ("torch", "dynamic-int8"): 7.1}
ISSUE_SIZES_MB = {"fp32": 90.3, "dynamic-int8": 22.8}
TORCH_DYNAMIC = "torch.ao.quantize_dynamic(Linear,qint8,x86)"

ORT_LOOP = r"""
import json, sys, time, numpy as np, onnxruntime as ort
path, inputs, threads, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
so = ort.SessionOptions(); so.intra_op_num_threads = threads
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
data = np.load(inputs)
feed = {i.name: data[i.name][:1] for i in s.get_inputs()}
for _ in range(20): s.run(None, feed)
lat = []; end = time.perf_counter() + seconds
while time.perf_counter() < end:
    t = time.perf_counter_ns(); s.run(None, feed); lat.append((time.perf_counter_ns() - t) / 1e6)
print(json.dumps({"p50": float(np.median(lat)), "n": len(lat)}))
"""

TORCH_LOOP = r"""
import json, sys, time, numpy as np, torch
path, inputs, threads, seconds, how = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), json.loads(sys.argv[5])
torch.set_num_threads(threads)
if how["format"] == "eager":  # the module as a PyTorch user runs it, no export
    from harness.models.minilm import build_torch_module
    module = build_torch_module()
    if how["mode"] == "dynamic-int8":
        torch.backends.quantized.engine = "x86"
        module = torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)
else:  # the artifact file quantbench measured
    if how.get("quantized_engine"):
        torch.backends.quantized.engine = how["quantized_engine"]
    module = torch.jit.load(path) if how["format"] == "torchscript" else torch.export.load(path).module()
data = np.load(inputs)
args = tuple(torch.from_numpy(data[n][:1]) for n in ("input_ids", "attention_mask"))
lat = []
with torch.inference_mode():
    for _ in range(20): module(*args)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter_ns(); module(*args); lat.append((time.perf_counter_ns() - t) / 1e6)
print(json.dumps({"p50": float(np.median(lat)), "n": len(lat)}))
"""


def bare_p50(framework: str, artifact, inputs: Path, threads: int, seconds: float, eager_mode: str = "") -> float:
    """p50 of a bare loop in a fresh process: the artifact's file, or (eager_mode) the eager torch module."""
    if framework == "onnxruntime":
        cmd = [sys.executable, "-c", ORT_LOOP, str(artifact.model_file), str(inputs), str(threads), str(seconds)]
    else:
        how = {"format": "eager", "mode": eager_mode} if eager_mode else dict(artifact.manifest["notes"]["torch_load"])
        cmd = [sys.executable, "-c", TORCH_LOOP, str(artifact.model_file), str(inputs), str(threads), str(seconds), json.dumps(how)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bare {framework} loop ({eager_mode or artifact.model_file}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["p50"]


def pick(framework: str, mode: str):
    recipes = recipes_for(framework, mode)
    if framework == "torch" and mode == "dynamic-int8":
        recipes = tuple(r for r in recipes if r.name == TORCH_DYNAMIC)
    if framework == "torch" and mode == "fp32":  # the torch.ao recipe is TorchScript: so is its fp32 baseline
        recipes = tuple(r for r in recipes if r.execution == "torchscript")
    if not recipes:
        raise SystemExit(f"no {framework} {mode} recipe registered (wanted {TORCH_DYNAMIC if framework == 'torch' else 'any'})")
    return recipes[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/harness rounds per case")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=settings.cache_dir())
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="qb-minilm-ref-"))
    spec = minilm_l6_s128
    dataset = resolve_data(spec.data)
    inputs = work / "inputs.npz"
    import numpy as np

    np.savez(inputs, **dataset.eval_inputs)
    timing = Timing(warmup_runs=20, warmup_s=0.5, min_runs=50, min_duration_s=args.seconds, max_duration_s=args.seconds * 4)
    options = SessionOptions(results_dir=work / "results", cache_dir=args.cache_dir, threads=args.threads)
    cases = {(fw, mode): Case("minilm-reference", spec, fw, mode, pick(fw, mode), 1, timing=timing)
             for fw in ("onnxruntime", "torch") for mode in ("fp32", "dynamic-int8")}

    print(f"all-MiniLM-L6-v2, batch 1, 128 tokens, {args.threads} threads, {args.rounds} alternating rounds of "
          f"{args.seconds:g} s, CPU {system.cpu_model()} ({system.physical_cores()} cores)")
    bare: dict = {k: [] for k in cases}
    eager: dict = {k: [] for k in cases if k[0] == "torch"}
    harness: dict = {k: [] for k in cases}
    rows: dict = {}
    for r in range(args.rounds):
        # A fresh session per round: every case (and its fp32 baseline) runs again in a fresh runner.
        session = BenchSession(TargetConfig(name="local", kind="local"), replace(options, run_id=f"round-{r}"))
        try:
            for key, case in cases.items():
                framework, mode = key
                row = session.run_case(case)
                if row["status"] != "ok":
                    raise SystemExit(f"quantbench case {case.case_id} failed: {row['reason']}")
                harness[key].append(row["latency_p50_ms"])
                rows[key] = row
                artifact = load_artifact(args.cache_dir / "artifacts" / row["artifact_key"])  # the file quantbench measured
                bare[key].append(bare_p50(framework, artifact, inputs, args.threads, args.seconds))
                if key in eager:
                    eager[key].append(bare_p50(framework, artifact, inputs, args.threads, args.seconds, eager_mode=mode))
        finally:
            session.close()
        print(f"round {r}: " + "  ".join(f"{fw}/{mode} qb {harness[(fw, mode)][-1]:.2f} bare {bare[(fw, mode)][-1]:.2f}"
                                         + (f" eager {eager[(fw, mode)][-1]:.2f}" if (fw, mode) in eager else "")
                                         for fw, mode in cases) + " ms", flush=True)

    med = statistics.median
    print(f"\n{'framework':<12}{'mode':<14}{'qb p50 ms':>10}{'bare p50 ms':>12}{'eager ms':>10}{'issue ms':>10}   qb/bare")
    for key in cases:
        h, b = med(harness[key]), med(bare[key])
        e = f"{med(eager[key]):.2f}" if key in eager else "-"
        print(f"{key[0]:<12}{key[1]:<14}{h:>10.2f}{b:>12.2f}{e:>10}{ISSUE_REFERENCE[key]:>10.1f}   {h / b:.3f}")
    print(f"\n{'framework':<12}{'qb speedup':>11}{'bare speedup':>13}{'eager':>8}{'issue':>8}   qb/bare  goal 0.90-1.10")
    for fw in ("onnxruntime", "torch"):
        h = med(harness[(fw, "fp32")]) / med(harness[(fw, "dynamic-int8")])
        b = med(bare[(fw, "fp32")]) / med(bare[(fw, "dynamic-int8")])
        e = f"{med(eager[(fw, 'fp32')]) / med(eager[(fw, 'dynamic-int8')]):.2f}x" if (fw, "fp32") in eager else "-"
        issue = ISSUE_REFERENCE[(fw, "fp32")] / ISSUE_REFERENCE[(fw, "dynamic-int8")]
        print(f"{fw:<12}{h:>10.2f}x{b:>12.2f}x{e:>8}{issue:>7.1f}x   {h / b:.3f}    {'ok' if 0.9 <= h / b <= 1.1 else 'OUTSIDE'}")
    print("\nartifact sizes (MB = 1e6 bytes) and fidelity to fp32 (500 evaluation sentences):")
    for key in cases:
        row = rows[key]
        issue = f"{ISSUE_SIZES_MB[key[1]]:.1f}" if key[0] == "onnxruntime" else "-"
        print(f"  {key[0]:<12}{key[1]:<14}{row['size_bytes'] / 1e6:>8.1f} MB (issue {issue:>5})  cosine_to_fp32 "
              f"{row['accuracy']:.4f}  nn_agreement {row.get('nn_agreement', float('nan')):.3f}  {row['recipe']}")
    print(f"\nresults: {work / 'results'}")


if __name__ == "__main__":
    main()
