"""PyTorch recipes whose artifact is an ExecuTorch program (`.pte`) lowered with the XNNPACK
delegate: what a PyTorch user ships on an ARM board or an x86 edge box (execution "executorch").

Each recipe builds its torch module (fp32; fp16 with float32 inputs and outputs; PT2E static
int8 per-channel with XNNPACKQuantizer calibrated on the calibration split; XNNPACK's dynamic
int8; QAT with XNNPACKQuantizer(is_qat); mixed: the sensitive layers left unannotated), then
`torch.export` at batch PTE_BATCH -> `to_edge_transform_and_lower(XnnpackPartitioner)` ->
`to_executorch()` -> model.pte. The program is loaded back with the ExecuTorch runtime on the
build host and compared with its module; the runner runs it with the official bindings or
`executorch-numpy-runtime` (harness/runner/backend_executorch.py). A speedup compares it with
the `.pte` fp32 of the same model.

The manifest records what the XNNPACK delegate took (`notes.delegation`, the row's
`delegated_ops` / `delegation_complete`; executorch_program.py) and the program format the file
is written in (`notes.executorch_program`: the flatbuffer identifier, e.g. "ET12", that a device's
runtime must read: harness/compat.py). A .pte is not compiled for an ISA: it is built here for
any target CPU. torch and executorch are imported lazily: the registry is read at collection.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from harness.artifacts import BuiltModel
from harness.models.spec import ModelSpec
from harness.profiles import NIGHTLY_ONLY
from harness.quantize.base import BuildContext, NotApplicable, Recipe
from harness.quantize.pt2e_builds import PT2EBuilds
from harness.quantize.pt2e_torch import arch_family, weights_dequantized_once
from harness.quantize.qat_torch import QATConfig
from harness.quantize.torch import cpu_flags

if TYPE_CHECKING:
    from harness.artifacts import Artifact
    from targets.base import TargetInfo

EXECUTION = "executorch"
RUNTIME = "executorch"  # the runner backend (harness/runner/__main__.py BACKENDS)
LIBS = ("torch", "executorch")
PT2E_LIBS = ("torch", "torchao", "executorch")
PTE_BATCH = 1  # programs are lowered for this batch (static shapes); other batch sizes are n/a
# arm64 CPU flags meaning native fp16 arithmetic (ARMv8.2-A FP16: what XNNPACK's f16 kernels use)
FP16_FLAGS = ("asimdhp", "fphp")


class LoweringFailed(RuntimeError):
    """The program ExecuTorch wrote does not compute what its module computes."""


# -- applicability ------------------------------------------------------------------------------
def cpu_only(extra=None):
    """A .pte with the XNNPACK delegate runs on a CPU; a GPU target has no row for it."""

    def check(spec: ModelSpec, target: "TargetInfo") -> Optional[str]:
        from targets.cuda import on_gpu

        if on_gpu(target.kind, target.profile):
            return "ExecuTorch programs here are lowered for the XNNPACK CPU delegate; this target measures its GPU"
        return extra(spec, target) if extra else None

    return check


def fp16_applicable(spec: ModelSpec, target: "TargetInfo") -> Optional[str]:
    """fp16 only where the target CPU computes in fp16 (arm64 with asimdhp/fphp); elsewhere
    XNNPACK would not run fp16 arithmetic natively and the row would time conversions."""
    family = arch_family(target.arch)
    if family != "arm":
        return (f"ExecuTorch fp16 is built here for arm64 CPUs with native fp16 arithmetic ({' / '.join(FP16_FLAGS)}); "
                f"target {target.name} is {target.arch}, where the fp32 .pte is the deployed float program")
    flags = cpu_flags(target)
    if flags is None:
        return f"target {target.name} does not report its CPU flags, so fp16 arithmetic ({' or '.join(FP16_FLAGS)}) cannot be confirmed"
    if not flags & set(FP16_FLAGS):
        return (f"the CPU of target {target.name} ({target.device}) has no fp16 arithmetic ({' / '.join(FP16_FLAGS)} "
                "absent, e.g. a Cortex-A72 in a Raspberry Pi 4): XNNPACK would convert every op")
    return None


def program_reason(artifact: "Artifact", target: "TargetInfo", batch_size: int) -> Optional[str]:
    """Why this program cannot run on the target, before anything is shipped: a device without
    an ExecuTorch runtime, or one that reads another program format (harness/compat.py); None
    when it can. (Another batch than PTE_BATCH is n/a at collection: Recipe.batches.)"""
    from harness.compat import pte_problem

    return pte_problem(artifact.path, artifact.manifest, target.facts or {}, target.name)


# -- lowering -----------------------------------------------------------------------------------
def example_inputs(ctx: BuildContext, n: int) -> tuple:
    """The first n evaluation samples in the standard (contiguous) memory format: a clone of a
    one-channel image batch keeps channels-last-looking strides, and a program exported from such
    an example reorders its delegate's output wrongly (XNNPACK 'Attempted to resize a static
    tensor' on every call; executorch 1.4.1)."""
    import numpy as np
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(ctx.dataset.eval_inputs[name][:n]))
                 .clone(memory_format=torch.contiguous_format) for name in ctx.dataset.input_names)


def lower(module, ctx: BuildContext, what: str):
    """torch.export at PTE_BATCH -> XNNPACK-lowered edge program (a module the delegate cannot
    take, or export refuses, is n/a naming the first line of the refusal)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from harness.quantize.torch_export import first_line

    try:
        program = torch.export.export(module, example_inputs(ctx, PTE_BATCH))
    except Exception as exc:  # noqa: BLE001 - export's refusal is the row's reason
        raise NotApplicable(f"torch.export could not capture model {ctx.spec.name} for {what} ({first_line(exc)})") from exc
    ctx.progress("lowering to ExecuTorch (XNNPACK partitioner)")
    try:
        return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    except Exception as exc:  # noqa: BLE001
        raise NotApplicable(f"{what} does not lower to an ExecuTorch program ({first_line(exc)})") from exc


def save_pte(module, ctx: BuildContext, out: Path, *, what: str, notes: Optional[dict] = None,
             tolerance: Optional[float] = 1e-4, int8: bool = False) -> BuiltModel:
    """Lower, write model.pte, load it back with the ExecuTorch runtime and compare it with the
    module on 8 samples (fp32: within `tolerance`; int8/fp16: XNNPACK's kernels round differently
    from the eager reference, so the difference is recorded and the row's accuracy is the program's)."""
    import importlib.metadata

    import torch
    from executorch.runtime import Runtime

    from harness.quantize.executorch_program import delegation, program_version
    from harness.quantize.torch_export import _flat_outputs, _output_names, _tensor_specs

    edge = lower(module, ctx, what)
    found = delegation(edge.exported_program().graph_module, int8=int8)
    program = edge.to_executorch()
    path = out / "model.pte"
    path.write_bytes(program.buffer)
    method = Runtime.get().load_program(path).load_method("forward")
    feed = example_inputs(ctx, 8)
    want, got = [], []
    reference = weights_dequantized_once(module)  # a PT2E graph's outputs, its weights dequantized once
    with torch.inference_mode():
        for i in range(0, 8, PTE_BATCH):
            part = tuple(x[i:i + PTE_BATCH].clone(memory_format=torch.contiguous_format) for x in feed)
            want.append(_flat_outputs(reference(*part)))
            got.append([torch.as_tensor(o).clone() for o in method.execute(list(part))])
    want = [torch.cat(parts) for parts in zip(*want)]
    got = [torch.cat(parts) for parts in zip(*got)]
    worst = max(float((w.float() - g.float()).abs().max()) for w, g in zip(want, got))
    agree = [float((w.argmax(-1) == g.argmax(-1)).float().mean()) for w, g in zip(want, got) if w.dim() > 1]
    scale = max(1.0, max(float(w.float().abs().max()) for w in want))
    if tolerance is not None and worst > tolerance * scale:
        raise LoweringFailed(f"the ExecuTorch program of {ctx.spec.name} ({what}) differs from the module it was lowered "
                             f"from by {worst:.3g} (max abs)")
    if found["int8_ops"]:
        notes = dict(notes or {}, quantized_ops=found["int8_ops"])  # the row's quantized_ops
    facts = dict(notes or {}, delegation=found, pte_batch=PTE_BATCH, vs_module_max_abs_diff=worst,
                 vs_module_top1_agreement=agree[0] if agree else None,
                 executorch_program={"identifier": program_version(path), "executorch": importlib.metadata.version("executorch")},
                 lowering="torch.export -> to_edge_transform_and_lower(XnnpackPartitioner) -> to_executorch")
    return BuiltModel(path.name, _tensor_specs(ctx.dataset.input_names, feed), _tensor_specs(_output_names(len(got)), got),
                      RUNTIME, (), facts)


# -- recipes ------------------------------------------------------------------------------------
def build_fp32(ctx: BuildContext, out: Path) -> BuiltModel:
    from harness.quantize.torch_export import fp32_copy

    return save_pte(fp32_copy(ctx), ctx, out, what="fp32 (ExecuTorch)")


def build_fp16(ctx: BuildContext, out: Path) -> BuiltModel:
    import torch

    from harness.quantize.torch import _cast_wrapper
    from harness.quantize.torch_export import fp32_copy

    return save_pte(_cast_wrapper(fp32_copy(ctx), torch.float16), ctx, out, what="fp16 (ExecuTorch)", tolerance=None,
                    notes={"compute_dtype": "float16", "io_dtype": "float32"})


def _name(quantize: str) -> str:
    return f"{quantize} -> to_edge_transform_and_lower(XnnpackPartitioner) (ExecuTorch .pte)"


# static-int8, mixed, qat-int8, dynamic-int8: PT2E with XNNPACKQuantizer, written as a .pte (MIXED: below)
PT2E_BUILDS = PT2EBuilds("xnnpack", save_pte, "ExecuTorch", lambda: MIXED)
QAT = QATConfig(quantizer="xnnpack")
PT2E = "torchao.pt2e.prepare_pt2e(XNNPACKQuantizer(per_channel{}))+convert_pt2e"
REVISION = {"executorch": 2}  # 2: int8 heavy ops counted (quantized_ops), float-only XNNPACKQuantizer
# The quick profile runs fp32, static and dynamic int8 (what the main job needs to answer); the
# other modes add about 5-15 s of lowering each, cold, and run nightly (README "ExecuTorch").
QUICK = None  # every profile (Recipe's default)


def pte_recipe(mode: str, quantize: str, slug: str, build, params: dict, libraries: tuple[str, ...],
               applicable=None, profiles=QUICK) -> Recipe:
    extra = {} if profiles is None else {"profiles": profiles}
    return Recipe("torch", mode, _name(quantize), slug, build, dict(params, pte_batch=PTE_BATCH, **REVISION), libraries,
                  cpu_only(applicable), execution=EXECUTION, artifact_check=program_reason, batches=(PTE_BATCH,),
                  **extra)


FP32 = pte_recipe("fp32", "torch.export", "pte", build_fp32, {}, LIBS)
MIXED = pte_recipe("mixed", PT2E.format(", keep_float layers None"), "pt2e-xnnpack-pte", PT2E_BUILDS.static(mixed=True),
                   {"calibration_batch": 16, "quantizer": "xnnpack"}, PT2E_LIBS, profiles=NIGHTLY_ONLY)
RECIPES: tuple[Recipe, ...] = (
    FP32,
    pte_recipe("fp16", "torch.export(.to(float16), fp32 io)", "pte", build_fp16, {"io": "float32"}, LIBS, fp16_applicable,
               profiles=NIGHTLY_ONLY),
    pte_recipe("static-int8", PT2E.format(""), "pt2e-xnnpack-pte", PT2E_BUILDS.static(), {"calibration_batch": 16,
               "quantizer": "xnnpack"}, PT2E_LIBS),
    pte_recipe("dynamic-int8", PT2E.format(", is_dynamic"), "pt2e-xnnpack-pte", PT2E_BUILDS.dynamic(),
               {"calibration_batch": 16}, PT2E_LIBS),
    pte_recipe("qat-int8", f"torchao.pt2e.prepare_qat_pt2e(XNNPACKQuantizer(per_channel),{QAT.epochs}ep,"
               f"lr={QAT.learning_rate:g})+convert_pt2e", "pt2e-xnnpack-pte", PT2E_BUILDS.qat(QAT), QAT.params(), PT2E_LIBS,
               profiles=NIGHTLY_ONLY),
    MIXED,
)
