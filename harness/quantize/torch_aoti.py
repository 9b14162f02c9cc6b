"""PyTorch recipes whose artifact is an AOTInductor package: what a PyTorch user deploys on an
x86 CPU (execution "aoti").

Each recipe builds its torch module as the eager recipes do (fp32, bf16, PT2E static/dynamic int8
with X86InductorQuantizer calibrated on the calibration split, QAT, mixed, torchao's int8 dynamic),
then `torch.export` (dynamic batch) -> `torch._inductor.aoti_compile_and_package` with CPU freezing
on (constant folding lets Inductor match the q/dq patterns and prepack int8 weights for oneDNN).
The runner loads the package with `torch._inductor.aoti_load_package` (notes["torch_load"]
format "aoti"); a speedup compares it with the AOTI fp32 package of the same model.

Compiled kernels are for an instruction set: the manifest's notes["built_isa"] records the vector
ISA Inductor picked on the build host, its compiler flags and the CPU flags they need, and
`isa_reason` makes the case n/a before anything runs on a target that lacks one. Building needs
a C++ compiler on the build host: `compiler_missing` says what to install instead of Inductor's
traceback. torch is imported lazily: the registry is read at suite collection.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from harness.artifacts import BuiltModel
from harness.models.spec import ModelSpec
from harness.profiles import ALL_PROFILES, NIGHTLY_ONLY
from harness.quantize import aoti_kernels, build_host, inductor_cache
from harness.quantize.base import BuildContext, NotApplicable, Recipe
from harness.quantize.pt2e_builds import PT2EBuilds
from harness.quantize.pt2e_torch import arch_family, quantizer_applicable, weights_dequantized_once
from harness.quantize.qat_torch import QATConfig
from harness.quantize.torch import PT2E_LIBS, cpu_flags, half_applicable

if TYPE_CHECKING:
    from harness.artifacts import Artifact
    from targets.base import TargetInfo

LIBS = ("torch",)
EXECUTION = "aoti"
# gcc/clang flags Inductor compiles CPU kernels with -> the /proc/cpuinfo flag each one needs
FLAG_FEATURES = {
    "-mavx2": "avx2", "-mfma": "fma", "-mf16c": "f16c", "-mavx512f": "avx512f", "-mavx512dq": "avx512dq",
    "-mavx512vl": "avx512vl", "-mavx512bw": "avx512bw", "-mavx512vnni": "avx512_vnni", "-mavx512bf16": "avx512_bf16",
    "-mavx512fp16": "avx512_fp16", "-mamx-tile": "amx_tile", "-mamx-bf16": "amx_bf16", "-mamx-int8": "amx_int8",
    "-mavxvnni": "avx_vnni",
}
# the build host's flags worth recording beside the package (what its kernels could use)
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimdhp", "sve")
# x86 flags meaning native bfloat16 arithmetic (Cooper Lake / Sapphire Rapids and later)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


AOTI_BATCH = 1  # packages are compiled for this batch (static shapes); other batch sizes are n/a


class CompilerMissing(RuntimeError):
    """The build host has no C++ compiler for AOTInductor; the message says what to install."""


# -- the build host: compiler and ISA -----------------------------------------------------------
def compiler_missing() -> Optional[str]:
    """Why AOTInductor cannot compile here (no C++ compiler), or None. Reads what Inductor uses:
    $CXX, else g++ (torch._inductor.config.cpp.cxx)."""
    from torch._inductor import cpp_builder

    wanted = os.environ.get("CXX") or "g++"
    try:
        found = cpp_builder.get_cpp_compiler()
    except Exception:  # noqa: BLE001 - InvalidCxxCompiler and friends: none of the candidates runs
        found = None
    if found and shutil.which(found):
        return None
    where = f"$CXX={os.environ['CXX']!r} is not a runnable program" if os.environ.get("CXX") else f"{wanted} is not on PATH"
    return (f"AOTInductor compiles C++ kernels on the build host and this host has no C++ compiler ({where}); "
            "install g++ (Debian/Ubuntu: apt-get install g++) or set CXX to a C++ compiler")


def host_isa() -> dict[str, Any]:
    """The ISA this host's Inductor compiles CPU kernels for, and the CPU flags behind it."""
    from torch._inductor import cpu_vec_isa

    from harness.runner.system import cpu_flags as host_flags

    isa = cpu_vec_isa.pick_vec_isa()
    flags = str(isa.build_arch_flags()).split() if isa else []
    have = set(host_flags().split())
    requires = sorted({FLAG_FEATURES[f] for f in flags if f in FLAG_FEATURES})
    return {"vec_isa": str(isa) if isa else "none (scalar)", "compile_flags": " ".join(dict.fromkeys(flags)),
            "requires": requires, "host_flags": [f for f in ISA_FLAGS if f in have]}


def isa_key(ctx: BuildContext) -> dict[str, str]:
    """The cache key's part from the build host: the ISA Inductor compiles kernels for, probed
    once per build host (build_host.py; its checks compile under the cache, as the builds do:
    inductor_cache.py)."""
    def probe() -> dict[str, str]:
        with inductor_cache.probing(ctx.cache.root.parent):
            isa = host_isa()
        return {"vec_isa": isa["vec_isa"], "compile_flags": isa["compile_flags"]}

    found, _ = build_host.remembered(ctx.cache.root.parent, probe)
    return {"vec_isa": found["vec_isa"], "compile_flags": found["compile_flags"]}


def isa_summary(built: dict[str, Any]) -> str:
    """The row's built_isa: the vector ISA and the CPU flags its kernels need."""
    return f"{built['vec_isa']} (needs {' '.join(built['requires']) or 'no extension'})"


def package_reason(artifact: "Artifact", target: "TargetInfo", batch_size: int) -> Optional[str]:
    """Why this package cannot run this case: another batch than it was compiled for, or kernels
    for an ISA the target's CPU lacks; None when it can."""
    batch = (artifact.manifest.get("notes") or {}).get("aoti_batch")
    if batch is not None and batch != batch_size:
        return (f"this AOTInductor package was compiled for batch {batch} (static shapes) and the case runs batch "
                f"{batch_size}")
    return isa_reason(artifact, target)


def isa_reason(artifact: "Artifact", target: "TargetInfo") -> Optional[str]:
    """Why this package's kernels cannot run on the target's CPU (an ISA it lacks), or None."""
    built = (artifact.manifest.get("notes") or {}).get("built_isa")
    if not built:
        return None
    flags = cpu_flags(target)
    if flags is None:
        return (f"target {target.name} does not report its CPU flags, so the ISA this AOTInductor package was built "
                f"for ({isa_summary(built)}) cannot be confirmed there")
    missing = [f for f in built["requires"] if f not in flags]
    if not missing:
        return None
    return (f"this AOTInductor package was built for {isa_summary(built)} and the CPU of target {target.name} "
            f"({target.device}) lacks {' '.join(missing)}: its kernels would stop on an illegal instruction; build the "
            "package on a host with the target's ISA")


# -- applicability ------------------------------------------------------------------------------
def aoti_applicable(extra=None):
    """AOTI packages are built here for this host's CPU architecture (no cross compilation)
    and for the CPU (CUDA packages are not built yet)."""
    import platform

    def check(spec: ModelSpec, target: "TargetInfo") -> Optional[str]:
        from targets.cuda import on_gpu

        if on_gpu(target.kind, target.profile):
            return "AOTInductor packages are built for the CPU here; CUDA packages (device=\"cuda\") are not built yet"
        host = arch_family(platform.machine())
        if arch_family(target.arch) != host:
            return (f"AOTInductor compiles the package's kernels for the build host's architecture ({platform.machine()}) "
                    f"and target {target.name} is {target.arch}")
        return extra(spec, target) if extra else None

    return check


def bf16_applicable(spec: ModelSpec, target: "TargetInfo") -> Optional[str]:
    flags = cpu_flags(target)
    if flags is None:
        return f"target {target.name} does not report its CPU flags, so native bfloat16 ({' or '.join(BF16_FLAGS)}) cannot be confirmed"
    if not flags & set(BF16_FLAGS):
        return (f"the CPU of target {target.name} ({target.device}) has no native bfloat16 arithmetic "
                f"({' / '.join(BF16_FLAGS)} absent): Inductor would convert every op, measuring emulation, not bf16")
    return None


# -- packaging ----------------------------------------------------------------------------------
def export_static(module, ctx: BuildContext, what: str, batch: int):
    """torch.export at a fixed batch: Inductor's frozen CPU kernels with a dynamic batch gave
    wrong outputs here (torch 2.13: a conv net off by tens at every batch), a static one matches."""
    from harness.quantize.torch_export import export_program

    return export_program(module, ctx, what, batch=batch)


def save_aoti(module, ctx: BuildContext, out: Path, *, what: str, notes: Optional[dict] = None,
              tolerance: Optional[float] = 1e-4, runtime_requires: tuple[str, ...] = (), int8: bool = False) -> BuiltModel:
    """torch.export (batch AOTI_BATCH) -> AOTInductor package (freezing on) as model.pt2, loaded
    back with aoti_load_package and compared with the module sample by sample (fp32: within
    `tolerance`; int8 and bf16: Inductor's fused kernels round differently from the eager
    reference, so the difference is recorded, and the row's accuracy is the package's own).
    `int8`: an int8 recipe, whose manifest says which heavy calls Inductor fused into int8
    kernels and which stayed float (notes["delegation"], aoti_kernels.py)."""
    import torch
    import torch._inductor.config as inductor_config

    from harness.quantize.torch_export import (LoadSpec, _flat_outputs, _output_names, _strip_debug, _tensor_specs,
                                               example_inputs)

    missing = compiler_missing()
    if missing:
        raise CompilerMissing(missing)
    if ctx.export.torch_format == "torchscript":
        raise NotApplicable(f"{what} ships an AOTInductor package, and this target asks for TorchScript files "
                            "(torch_format = \"torchscript\")")
    program = export_static(module, ctx, what, AOTI_BATCH)
    _strip_debug(program)
    path = out / "model.pt2"
    with inductor_cache.probing(ctx.cache.root.parent):
        isa = host_isa()
    ctx.progress(f"compiling the AOTInductor package ({isa['vec_isa']})")
    # Freezing applies only with gradients off (compile_fx): without no_grad the q/dq pairs stay
    # float convolutions with elementwise quantization instead of oneDNN int8 kernels. Inductor
    # compiles under the cache directory, not /tmp (inductor_cache.py: a cold run is cold).
    try:
        with inductor_cache.compiling(ctx.cache.root.parent), torch.no_grad(), inductor_config.patch(freezing=True):
            torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    except Exception as exc:  # noqa: BLE001 - an operator Inductor cannot lower: the row names it
        raise NotApplicable(aoti_kernels.lowering_reason(what, exc, program=program)) from exc
    proxied = aoti_kernels.proxy_ops(path)  # ops the package would look up in the dispatcher at run time
    custom = aoti_kernels.custom_op_reason(what, proxied)
    if custom:
        raise NotApplicable(custom)
    feed = example_inputs(ctx, 8)
    want, got = [], []
    reference = weights_dequantized_once(module)  # a PT2E graph's outputs, its weights dequantized once
    try:
        loaded = torch._inductor.aoti_load_package(str(path))
        with torch.inference_mode():
            for i in range(0, 8, AOTI_BATCH):
                part = tuple(x[i:i + AOTI_BATCH] for x in feed)
                want.append(_flat_outputs(reference(*part)))
                got.append([o.clone() for o in _flat_outputs(loaded(*part))])
    except Exception as exc:  # noqa: BLE001 - e.g. a proxy-executed op that fails in the package
        raise NotApplicable(aoti_kernels.lowering_reason(what, exc, proxied)) from exc
    want = [torch.cat(parts) for parts in zip(*want)]
    got = [torch.cat(parts) for parts in zip(*got)]
    worst = max(float((w.float() - g.float()).abs().max()) for w, g in zip(want, got))
    calls = aoti_kernels.census(path)
    agree = [float((w.argmax(-1) == g.argmax(-1)).float().mean()) for w, g in zip(want, got) if w.dim() > 1]
    scale = max(1.0, max(float(w.float().abs().max()) for w in want))
    if tolerance is not None and worst > tolerance * scale:
        raise RuntimeError(f"the AOTInductor package of {ctx.spec.name} ({what}) differs from the module it was built "
                           f"from by {worst:.3g} (max abs)")
    facts = dict(notes or {}, torch_load=dict(LoadSpec(format="aoti").as_note()), built_isa=isa,
                 built_isa_summary=isa_summary(isa), aoti_batch=AOTI_BATCH, vs_module_max_abs_diff=worst,
                 vs_module_top1_agreement=agree[0] if agree else None,
                 compile="torch._inductor.aoti_compile_and_package(freezing=True)",
                 fused_int8_kernels=aoti_kernels.int8_kernels(calls), kernel_calls=dict(sorted(calls.items())),
                 proxy_ops=[op for op, _ in proxied])
    if int8:
        facts["delegation"] = aoti_kernels.delegation(calls)
    return BuiltModel(path.name, _tensor_specs(ctx.dataset.input_names, feed), _tensor_specs(_output_names(len(got)), got),
                      "torch", tuple(runtime_requires), facts)


def _lowering(what: str, ctx: BuildContext, module, **kw) -> BuiltModel:
    """save_aoti, where a module Inductor cannot lower is n/a with the exception's first line."""
    from harness.quantize.torch_export import ExportFailed, first_line

    try:
        return save_aoti(module, ctx, Path(kw.pop("out")), what=what, **kw)
    except (NotApplicable, CompilerMissing, ExportFailed):
        raise
    except Exception as exc:  # noqa: BLE001 - the lowering's refusal is the row's reason
        raise NotApplicable(f"{what} does not lower to an AOTInductor package ({first_line(exc)})") from exc


# -- recipes ------------------------------------------------------------------------------------
def build_fp32(ctx: BuildContext, out: Path) -> BuiltModel:
    from harness.quantize.torch_export import fp32_copy

    return save_aoti(fp32_copy(ctx), ctx, out, what="fp32 (AOTI)")


def build_half(dtype_name: str):
    """The module in bfloat16 or float16 with float32 inputs and outputs (the casts in the graph)."""
    def build(ctx: BuildContext, out: Path) -> BuiltModel:
        import torch

        from harness.quantize.torch import _cast_wrapper
        from harness.quantize.torch_export import fp32_copy

        return save_aoti(_cast_wrapper(fp32_copy(ctx), getattr(torch, dtype_name)), ctx, out,
                         what=f"{dtype_name} (AOTI)", tolerance=None,
                         notes={"compute_dtype": dtype_name, "io_dtype": "float32"})

    return build


def build_torchao_dynamic(ctx: BuildContext, out: Path) -> BuiltModel:
    import torch
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    from harness.quantize.torch_export import fp32_copy

    module = fp32_copy(ctx)
    quantize_(module, Int8DynamicActivationInt8WeightConfig())
    layers = [n for n, m in module.named_modules()
              if isinstance(m, torch.nn.Linear) and type(m.weight) not in (torch.Tensor, torch.nn.Parameter)]
    if not layers:
        raise NotApplicable(f"model {ctx.spec.name} has no nn.Linear layer: torchao's Int8DynamicActivationInt8WeightConfig "
                            "quantizes nn.Linear layers")
    return _lowering("torchao int8 dynamic", ctx, module, out=out, tolerance=None, notes={"quantized_layers": layers},
                     int8=True)


def compiled(build):
    """The build, after the compiler check: a host without g++ learns it before calibrating or
    fine-tuning (QAT), not after."""
    def checked(ctx: BuildContext, out: Path) -> BuiltModel:
        missing = compiler_missing()
        if missing:
            raise CompilerMissing(missing)
        return build(ctx, out)

    return checked


def _name(quantize: str) -> str:
    return f"{quantize} -> torch._inductor.aoti_compile_and_package(freezing) (AOTI)"


X86_INT8 = quantizer_applicable("x86")
# static-int8, mixed, qat-int8, dynamic-int8: PT2E with X86InductorQuantizer, compiled to a package (MIXED: below)
PT2E_BUILDS = PT2EBuilds("x86", save_aoti, "AOTI", lambda: MIXED)


def build_qat(config: QATConfig):
    """qat-int8 from the QAT artifact of the same config (qat_torch.trained_program), which the ONNX
    export of the same x86 QAT uses too: a run fine-tunes the model once, not once per format."""
    def build(ctx: BuildContext, out: Path) -> BuiltModel:
        from harness.quantize.qat_torch import trained_facts, trained_program

        source, program = trained_program(ctx, config)
        return save_aoti(program.module(), ctx, out, what="qat-int8 (AOTI)", notes=trained_facts(source), tolerance=None,
                         int8=True)

    return build
QAT = QATConfig(quantizer="x86")
PT2E = "torchao.pt2e.prepare_pt2e(X86InductorQuantizer{})+convert_pt2e"
REVISION = {"aoti": 5}  # 4: static batch, no_grad freezing, fused_int8_kernels; 5: kernel_calls, delegation


def aoti_recipe(mode: str, quantize: str, slug: str, build, params: dict, libraries: tuple[str, ...],
                applicable=None, profiles: tuple[str, ...] = ALL_PROFILES) -> Recipe:
    """An AOTI recipe: the deployed torch rows of the quick profile (a second recipe of a mode is
    nightly-only), compiler checked first, the ISA in its key and its check, batch AOTI_BATCH only
    (a case of another batch is n/a at collection)."""
    return Recipe("torch", mode, _name(quantize), slug, compiled(build), dict(params, **REVISION), libraries,
                  aoti_applicable(applicable), profiles=profiles, execution=EXECUTION, artifact_check=package_reason,
                  host_key=isa_key, batches=(AOTI_BATCH,))


FP32 = aoti_recipe("fp32", "torch.export", "aoti", build_fp32, {}, LIBS)
MIXED = aoti_recipe("mixed", PT2E.format(", keep_float layers None"), "pt2e-x86-aoti", PT2E_BUILDS.static(mixed=True),
                    {"calibration_batch": 16, "quantizer": "x86"}, PT2E_LIBS, X86_INT8)
RECIPES: tuple[Recipe, ...] = (
    FP32,
    aoti_recipe("bf16", "torch.export(.to(bfloat16), fp32 io)", "aoti", build_half("bfloat16"), {"io": "float32"}, LIBS,
                bf16_applicable),
    # nightly: where x86 has fp16 arithmetic (avx512_fp16) the package still ran at fp32's speed (MiniLM s32: 15.3 vs
    # 17.3 ms, bf16 2.8 ms), and its build costs a cold quick job 15-20 CPU s (benchmarks/cold_build.py)
    aoti_recipe("fp16", "torch.export(.to(float16), fp32 io)", "aoti", build_half("float16"), {"io": "float32"}, LIBS,
                half_applicable, profiles=NIGHTLY_ONLY),
    aoti_recipe("static-int8", PT2E.format(""), "pt2e-x86-aoti", PT2E_BUILDS.static(), {"calibration_batch": 16}, PT2E_LIBS,
                X86_INT8),
    aoti_recipe("qat-int8", f"torchao.pt2e.prepare_qat_pt2e(X86InductorQuantizer,{QAT.epochs}ep,lr={QAT.learning_rate:g})"
                "+convert_pt2e", "pt2e-x86-aoti", build_qat(QAT), dict(QAT.params(), start="qat artifact"), PT2E_LIBS, X86_INT8),
    aoti_recipe("dynamic-int8", PT2E.format(", is_dynamic"), "pt2e-x86-aoti", PT2E_BUILDS.dynamic("PT2E, AOTI"),
                {"calibration_batch": 16}, PT2E_LIBS, X86_INT8),
    aoti_recipe("dynamic-int8", "torchao.quantize_(Int8DynamicActivationInt8WeightConfig)", "torchao-aoti",
                build_torchao_dynamic, {}, PT2E_LIBS, profiles=NIGHTLY_ONLY),  # the PT2E dynamic one is quick's
    MIXED,
)
