"""Where a cold build of the quick job's deployed torch artifacts spends its time, per recipe.

For one model (digits-cnn or minilm-l6-s32) the quick profile's torch recipes that apply here
(AOTInductor packages, ExecuTorch programs, the TorchScript pair) are built one after another in
ONE fresh process, as the main job's session builds them: an empty artifact cache and an empty
Inductor cache of its own (TORCHINDUCTOR_CACHE_DIR), the trained fp32 weights from the shared
cache (training is not a build). Each recipe's wall time and CPU time (this process and its
compilers) are split into phases, each phase's own time (a nested phase is not counted twice):

  model        the fp32 torch module (weights from the cache), once per process
  export       torch.export (PT2E capture, the package's static-batch export, ExecuTorch's)
  prepare / calibrate / convert    PT2E observers, the calibration split, convert_pt2e
  qat train    the QAT fine-tuning loop
  inductor     aoti_compile_and_package's Python: decompositions, freezing, lowering, codegen
  cc pch / cc wrapper / cc kernel / cc link / cc other    the C++ compiler runs it starts
  et lower / et emit    to_edge_transform_and_lower(XNNPACK), to_executorch
  load         loading the artifact back (aoti_load_package, ExecuTorch Runtime)
  other        the rest: copies, the comparison with the module, census, manifest, hashing

Variants are settings tried against the default, each in its own process, interleaved round by
round (default, variant, default, variant, ...), with the 1-minute load average beside every
figure; compare a variant only with the default of the same rounds.

    .venv/bin/python benchmarks/cold_build.py --model digits [--variant wrapper-O0] [--p50 9] [--rounds 2] [-k aoti]
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = {"digits": ("suites/test_digits.py", "suite"), "minilm-l6-s32": ("suites/test_minilm.py", "s32_b1")}
PHASES = ("model", "export", "prepare", "calibrate", "convert", "qat train", "inductor", "cc pch", "cc wrapper",
          "cc kernel", "cc link", "cc other", "et lower", "et emit", "load", "other")
# variant -> (environment, settings applied in the child before anything is built)
VARIANTS: dict[str, dict] = {
    "default": {},
    # the generated wrapper at -O0 (torch's default -O1): about 1 s less per package, and MiniLM s32's
    # static-int8 package 11% slower (2.40 vs 2.14 ms, 9 interleaved rounds): not used
    "wrapper-O0": {"env": {"AOT_INDUCTOR_COMPILE_WRAPPER_OPT_LEVEL": "O0"}},
    "no-pch": {"env": {"TORCHINDUCTOR_PRECOMPILE_HEADERS_OFF": "1"}},  # no precompiled headers
}
# (Inductor's compile worker pool is no variant: on a CPU-only torch, without triton, AOTInductor
# compiles its two C++ files in this process, whatever compile_threads says.)


def cpu_now() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Phases:
    """Wall time per phase, each phase's own (time in a nested phase goes to that one)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []

    @contextlib.contextmanager
    def phase(self, name: str):
        started = time.perf_counter()
        self.stack.append([name, 0.0])
        try:
            yield
        finally:
            _, inner = self.stack.pop()
            took = time.perf_counter() - started
            self.totals[name] += took - inner
            if self.stack:
                self.stack[-1][1] += took

    def wrap(self, owner, attr: str, name) -> None:
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            with self.phase(name(args) if callable(name) else name):
                return original(*args, **kwargs)

        setattr(owner, attr, timed)


def compiler_phase(args) -> str:
    """Which C++ compile a CppBuilder.build is, from the file it makes."""
    target = str(args[0].get_target_file_path())
    if "precompiled_headers" in target or target.endswith((".gch", ".pch", ".i")):
        return "cc pch"
    if target.endswith(".so"):
        return "cc link"
    name = Path(target).name
    return "cc wrapper" if "wrapper" in name else "cc kernel" if "kernel" in name else "cc other"


def instrument(phases: Phases) -> None:
    import torch
    import torch._inductor
    from torch._inductor import cpp_builder
    from torchao.quantization.pt2e import quantize_pt2e

    from harness.quantize import pt2e_torch, qat_torch

    phases.wrap(torch.export, "export", "export")
    for attr, name in (("prepare_pt2e", "prepare"), ("prepare_qat_pt2e", "prepare"), ("convert_pt2e", "convert")):
        phases.wrap(quantize_pt2e, attr, name)
    phases.wrap(pt2e_torch, "calibrate", "calibrate")  # the dynamic builds reach it through calibrate_weights_only
    phases.wrap(qat_torch, "qat_convert", "qat train")  # its own time is the training loop
    phases.wrap(torch._inductor, "aoti_compile_and_package", "inductor")
    phases.wrap(torch._inductor, "aoti_load_package", "load")
    phases.wrap(cpp_builder.CppBuilder, "build", compiler_phase)
    try:
        from executorch import exir
        from executorch.exir.program import _program
        from executorch.runtime import Runtime
    except ImportError:
        return
    phases.wrap(exir, "to_edge_transform_and_lower", "et lower")
    phases.wrap(_program.EdgeProgramManager, "to_executorch", "et emit")
    phases.wrap(Runtime, "load_program", "load")


def apply_settings(settings: dict) -> None:
    import importlib

    for where, value in settings.items():
        module, attr = where.split(":")
        setattr(importlib.import_module(module), attr, value)


def torch_recipes(model: str, info, which: str):
    """The torch recipes of the model's quick suite that apply on this host: `quick`, those of the
    quick profile now; `old`, those it had before issue 21 (the eager programs and TorchScript)."""
    from harness.profiles import QUICK

    path, name = MODELS[model]
    spec = importlib.util.spec_from_file_location(f"suite_{Path(path).stem}", REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    suite = getattr(module, name)
    cases = [c for c in suite.cases() if c.framework == "torch" and c.recipe is not None and not c.na_reason
             and not c.recipe.not_applicable_reason(c.model, info)]
    if which == "old":
        return suite.model, [c.recipe for c in cases if c.recipe.execution in ("", "torchscript")]
    return suite.model, [c.recipe for c in cases if QUICK in c.profiles]


def child(args) -> None:
    """One process: build the selected recipes in order, print one JSON line per recipe."""
    if os.environ.get("TORCHINDUCTOR_PRECOMPILE_HEADERS_OFF"):
        import torch._inductor.config as inductor_config

        inductor_config.aot_inductor.precompile_headers = False
    apply_settings(VARIANTS[args.variant[0]].get("set", {}))
    from harness import settings
    from harness.artifacts import ArtifactCache
    from harness.data import resolve_data
    from harness.quantize import RECIPES
    from harness.quantize.base import BuildContext
    from targets import TargetConfig
    from targets.local import LocalTarget

    info = LocalTarget(TargetConfig(name="local", kind="local"), settings.cache_dir()).info()
    spec, recipes = torch_recipes(args.model, info, args.which)
    recipes = [r for r in recipes if args.only in f"{r.mode}-{r.slug}"]
    for extra in filter(None, args.extra.split(",")):  # framework:mode-slug, e.g. onnxruntime:qat-int8-qdq
        framework, rid = extra.split(":")
        recipes += [r for r in RECIPES[framework] if f"{r.mode}-{r.slug}" == rid]
    phases = Phases()
    instrument(phases)
    ctx = BuildContext(spec, resolve_data(spec.data), ArtifactCache(Path(args.work) / "artifacts"),
                       settings.cache_dir() / "models")
    with phases.phase("model"):
        ctx.torch_module  # noqa: B018 - built (or loaded) once per process, as in a session
    for recipe in recipes:
        phases.totals.clear()
        load, wall0, cpu0 = os.getloadavg()[0], time.perf_counter(), cpu_now()
        status, path = "ok", ""
        try:
            with phases.phase("other"):
                path = str(ctx.artifact(recipe)[0].path)
        except Exception as exc:  # noqa: BLE001 - n/a or a failure is reported, the next recipe goes on
            status = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        print("RESULT " + json.dumps({"recipe": f"{recipe.framework}:{recipe.mode}-{recipe.slug}", "status": status,
                                      "artifact": path,
                                      "wall": time.perf_counter() - wall0, "cpu": cpu_now() - cpu0, "load": load,
                                      "phases": dict(phases.totals)}), flush=True)


def run_child(model: str, variant: str, only: str, extra: str, which: str, keep: bool) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="qb-cold-build-"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"),
           **VARIANTS[variant].get("env", {})}
    cmd = [sys.executable, __file__, "--child", "--model", model, "--variant", variant, "-k", only, "--extra", extra,
           "--which", which, "--work", str(work)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    rows = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not rows:
        print(proc.stdout[-2000:] + proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"the {variant} build process failed ({proc.returncode})")
    print(f"  {variant}: {len(rows)} recipes, {time.perf_counter() - started:.0f} s wall in its process "
          f"(work {work})", flush=True)
    if not keep:
        subprocess.run(["rm", "-rf", str(work)])
    return rows


class BareLoop:
    """One package loaded in this process (one thread), called in a plain loop."""

    def __init__(self, artifact, feed, open_call) -> None:
        import numpy as np
        import torch

        tensors = [torch.from_numpy(np.ascontiguousarray(feed[t["name"]])) for t in artifact.manifest["inputs"]]
        self.call, self.context = open_call(str(artifact.model_file), tensors,
                                            artifact.manifest.get("runtime") == "executorch", 1)

    def p50(self, seconds: float, warmup: int = 20) -> float:
        with self.context:
            for _ in range(warmup):
                self.call()
            times, start = [], time.perf_counter()
            while len(times) < 50 or time.perf_counter() - start < seconds:
                t0 = time.perf_counter_ns()
                self.call()
                times.append((time.perf_counter_ns() - t0) / 1e6)
        return statistics.median(times)


def p50s(results: dict[str, list[list[dict]]], rounds: int, seconds: float) -> None:
    """The packages of the last round, each variant's beside the default's: bare-loop p50s
    (benchmarks/torch_deployed.open_call: the compiled model's C++ runner, host arrays out), one
    thread, interleaved over `rounds`, so a build setting shows whether it changes the artifact's speed."""
    import numpy as np
    import torch

    from benchmarks.torch_deployed import open_call
    from harness.artifacts import load_artifact
    from harness.data import resolve_data
    from harness.models import digits_cnn, minilm_l6_s32

    specs = {spec.name: spec for spec in (digits_cnn, minilm_l6_s32)}
    torch.set_num_threads(1)
    last = {variant: {row["recipe"]: row["artifact"] for row in rows[-1] if row["artifact"]} for variant, rows in results.items()}
    variants = list(last)
    loops: dict[tuple[str, str], Bare] = {}
    feed = None
    for recipe in last[variants[0]]:
        for variant in variants:
            path = last[variant].get(recipe)
            if path and recipe.split(":")[1].endswith(("-aoti", "-pte")):  # the deployed packages, not TorchScript
                artifact = load_artifact(Path(path))
                if feed is None:
                    dataset = resolve_data(specs[artifact.manifest["model"]].data)
                    feed = {name: np.ascontiguousarray(a[:1]) for name, a in dataset.eval_inputs.items()}
                loops[(recipe, variant)] = BareLoop(artifact, feed, open_call)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in loops}
    for r in range(rounds):
        for key in (list(loops) if r % 2 == 0 else list(loops)[::-1]):
            times[key].append(loops[key].p50(seconds))
    print(f"bare-loop p50 ms of each package (1 thread, median of {rounds} interleaved rounds; load "
          f"{os.getloadavg()[0]:.1f})")
    for recipe in last[variants[0]]:
        base = statistics.median(times[(recipe, variants[0])]) if (recipe, variants[0]) in times else None
        cells = []
        for variant in variants:
            if (recipe, variant) in times:
                p50 = statistics.median(times[(recipe, variant)])
                cells.append(f"{variant} {p50:.4f}" + (f" ({p50 / base:.3f}x)" if base and variant != variants[0] else ""))
        print(f"  {recipe[:44]:<44} " + "   ".join(cells))
    for variant in variants:
        for path in {str(Path(p).parent.parent) for p in last[variant].values()}:
            subprocess.run(["rm", "-rf", path])


def table(results: dict[str, list[list[dict]]]) -> None:
    """Per recipe and variant: medians over the rounds of wall, CPU and each phase; loads seen."""
    variants = list(results)
    recipes = [row["recipe"] for row in results[variants[0]][0]]
    used = [p for p in PHASES if any(row["phases"].get(p, 0) > 0.05 for rounds in results.values()
                                     for rows in rounds for row in rows)]
    head = f"{'recipe':<44} {'variant':<11} {'wall s':>7} {'cpu s':>6} {'load':>9} " + " ".join(f"{p:>10}" for p in used)
    print(head)
    totals = {v: [0.0, 0.0] for v in variants}
    for recipe in recipes:
        for variant in variants:
            rows = [row for rows in results[variant] for row in rows if row["recipe"] == recipe]
            if not rows:
                continue
            wall = statistics.median(r["wall"] for r in rows)
            cpu = statistics.median(r["cpu"] for r in rows)
            totals[variant][0] += wall
            totals[variant][1] += cpu
            loads = "/".join(f"{r['load']:.1f}" for r in rows)
            figures = " ".join(f"{statistics.median(r['phases'].get(p, 0.0) for r in rows):10.1f}" for p in used)
            bad = "" if all(r["status"] == "ok" for r in rows) else f"  [{rows[0]['status']}]"
            print(f"{recipe[:44]:<44} {variant:<11} {wall:7.1f} {cpu:6.1f} {loads:>9} {figures}{bad}")
    for variant, (wall, cpu) in totals.items():
        print(f"{'TOTAL (sum of medians)':<44} {variant:<11} {wall:7.1f} {cpu:6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=tuple(MODELS), default="digits")
    parser.add_argument("--variant", action="append", default=[], choices=tuple(VARIANTS),
                        help="settings to compare with the default (repeatable)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of default + variants")
    parser.add_argument("-k", dest="only", default="", help="only recipes whose mode-slug contains this")
    parser.add_argument("--extra", default="", help="more recipes, framework:mode-slug, comma-separated")
    parser.add_argument("--which", choices=("quick", "old"), default="quick",
                        help="the quick profile's torch recipes now, or those it had before issue 21 (eager, TorchScript)")
    parser.add_argument("--p50", type=int, default=0, metavar="ROUNDS",
                        help="then time each variant's packages in interleaved bare loops (ROUNDS rounds)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per bare-loop measurement")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if "QUANTBENCH_CACHE" not in os.environ:
        print("note: QUANTBENCH_CACHE unset: the fp32 weights are trained in the default cache first", flush=True)
    variants = ["default"] + [v for v in args.variant if v != "default"]
    results: dict[str, list[list[dict]]] = {v: [] for v in variants}
    print(f"{args.model}: cold builds (empty artifact and Inductor caches), {len(variants)} variant(s) x "
          f"{args.rounds} round(s), load {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs",
          flush=True)
    for r in range(args.rounds):
        order = variants if r % 2 == 0 else variants[::-1]  # ABBA: neither goes first every time
        for variant in order:
            results[variant].append(run_child(args.model, variant, args.only, args.extra, args.which,
                                              keep=bool(args.p50) and r == args.rounds - 1))
    table(results)
    if args.p50:
        p50s(results, args.p50, args.seconds)


if __name__ == "__main__":
    main()
