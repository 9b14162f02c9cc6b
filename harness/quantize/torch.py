"""PyTorch recipes: fp32, bf16/fp16, two dynamic-int8 recipes (legacy torch.ao and torchao),
static-int8 / mixed / qat-int8 through PT2E.

Every artifact loads on the target without the model's Python source (torch.export `.pt2`,
TorchScript for the legacy torch.ao dynamic modules); the manifest's notes["torch_load"] and
runtime_requires tell the runner how (see torch_export.py). torch is imported lazily: the
registry is read at suite collection, long before anything is built.
"""
from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from harness.artifacts import BuiltModel
from harness.models.spec import ModelSpec
from harness.profiles import NIGHTLY_ONLY
from harness.quantize import qat_torch, torch_cuda
from harness.quantize.base import BuildContext, NotApplicable, Recipe
from harness.quantize.pt2e_torch import RUNTIME_REQUIRES, arch_family, quantizer_applicable
from harness.quantize.torch_export import LoadSpec, example_inputs, fp32_copy, save_exported, save_torchscript

if TYPE_CHECKING:
    from targets.base import TargetInfo

LIBS = ("torch",)
PT2E_LIBS = ("torch", "torchao")
# CPU flags that mean native float16 arithmetic, per architecture family (x86: Sapphire Rapids
# and later / AMX-FP16; ARM: ARMv8.2-A half-precision). Without them torch converts every op.
HALF_FLAGS: dict[str, tuple[str, ...]] = {"x86": ("avx512_fp16", "amx_fp16"), "arm": ("asimdhp", "fphp")}


# -- applicability --------------------------------------------------------------------------
def cpu_flags(target: "TargetInfo") -> Optional[set[str]]:
    """The target's CPU flags, from its facts (runner.system.describe() on the local machine and,
    through runner.facts, on ssh devices); None when it reports none."""
    flags = target.facts.get("cpu_flags")
    return set(flags.split()) if flags else None


def half_applicable(spec: ModelSpec, target: "TargetInfo") -> Optional[str]:
    if target.kind == "cuda":
        return None
    family = arch_family(target.arch)
    wanted = HALF_FLAGS.get(family)
    flags = cpu_flags(target)
    if wanted is None:
        return f"no known float16 compute flags for {target.arch} (target {target.name})"
    if flags is None:
        return (f"target {target.name} does not report its CPU flags, so float16 compute ({' or '.join(wanted)}) "
                "cannot be confirmed")
    if not flags & set(wanted):
        return (f"the CPU of target {target.name} ({target.device}) has no float16 arithmetic "
                f"({' / '.join(wanted)} absent): torch would convert every op, measuring emulation, not fp16")
    return None


def engine_applicable(engine: str):
    family = {"x86": "x86", "fbgemm": "x86", "qnnpack": "arm"}[engine]

    def check(spec: ModelSpec, target: "TargetInfo") -> Optional[str]:
        if arch_family(target.arch) == family:
            return None
        other = "ao-qnnpack (qnnpack)" if family == "x86" else "ao-x86 (x86/fbgemm)"
        return (f"torch's {engine} quantized engine is the {family} kernel library and target {target.name} is "
                f"{target.arch}; recipe {other} covers that architecture")

    return check


# -- fp32, bf16, fp16 -----------------------------------------------------------------------
def build_fp32(ctx: BuildContext, out: Path) -> BuiltModel:
    return save_exported(fp32_copy(ctx), ctx, out, what="fp32", tolerance=1e-6, compare_eager=True)


def build_fp32_torchscript(ctx: BuildContext, out: Path) -> BuiltModel:
    """The fp32 module as TorchScript: the baseline of the recipes that ship TorchScript (torch.ao
    dynamic), so their speedup compares quantization, not TorchScript against torch.export."""
    built = save_torchscript(fp32_copy(ctx), ctx, out, what="fp32 (TorchScript)", load=LoadSpec(format="torchscript"),
                             tolerance=1e-6, compare_eager=True)
    # the recipe column says how it was captured: scripted, or traced when the model does not script
    return replace(built, notes=dict(built.notes, recipe=f"{built.notes['torchscript']} (TorchScript)"))


def build_fp32_compiled(compile: str):
    """The fp32 torch.export program compiled on the target like the compiled recipes' artifacts."""
    def build(ctx: BuildContext, out: Path) -> BuiltModel:
        return save_exported(fp32_copy(ctx), ctx, out, what=f"fp32 ({compile})", load=LoadSpec(compile=compile),
                             tolerance=1e-6)
    return build


def _cast_wrapper(module, dtype):
    """The module in `dtype` with float32 inputs and outputs (the casts are in the graph,
    as onnxconverter-common's keep_io_types does): evaluation data and scores stay float32."""
    import torch

    class CastIO(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module.to(dtype)

        def forward(self, *inputs):
            # Only float inputs change dtype: integer inputs (token ids, masks) stay integers.
            out = self.inner(*(x.to(dtype) if x.is_floating_point() else x for x in inputs))
            if isinstance(out, torch.Tensor):
                return out.float()
            return tuple(o.float() for o in out)

    return CastIO().eval()


def build_half(dtype_name: str):
    def build(ctx: BuildContext, out: Path) -> BuiltModel:
        import torch

        wrapped = _cast_wrapper(fp32_copy(ctx), getattr(torch, dtype_name))
        # tolerance: the same graph reloaded computes bit-identical results
        return save_exported(wrapped, ctx, out, what=dtype_name, notes={"compute_dtype": dtype_name, "io_dtype": "float32"})

    return build


# -- dynamic int8 ---------------------------------------------------------------------------
def _no_linear(ctx: BuildContext, what: str, covers: str) -> str:
    """Why a module-swapping dynamic recipe found nothing to quantize."""
    if ctx.spec.pt2_file is not None:
        return (f"{what} swaps nn.Linear modules, and the torch.export program {ctx.spec.pt2_file.name} holds its "
                "layers as graph calls (aten.linear), not modules; static-int8 and mixed (PT2E) quantize them")
    return f"model {ctx.spec.name} has no nn.Linear layer: {what} {covers}"

def _deprecations(caught) -> list[str]:
    texts = [" ".join(str(w.message).split()) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    return list(dict.fromkeys(texts))


def build_ao_dynamic(engine: str, name: str):
    """torch.ao.quantization.quantize_dynamic (deprecated, still shipped): Linear layers get
    int8 weights, activations are quantized at run time; convolutions stay float32."""

    def build(ctx: BuildContext, out: Path) -> BuiltModel:
        import torch

        if engine not in torch.backends.quantized.supported_engines:
            raise NotApplicable(f"this torch build has no {engine} quantized engine (it has {torch.backends.quantized.supported_engines})")
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = engine  # packs the weights for this engine's kernels
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                quantized = torch.ao.quantization.quantize_dynamic(fp32_copy(ctx), {torch.nn.Linear}, dtype=torch.qint8)
                layers = [n for n, m in quantized.named_modules() if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")]
                if not layers:
                    raise NotApplicable(_no_linear(ctx, "torch.ao dynamic quantization", "covers Linear (and RNN) layers only"))
                built = save_torchscript(quantized, ctx, out, what="dynamic-int8 (torch.ao)",
                                         load=LoadSpec(format="torchscript", quantized_engine=engine),
                                         notes={"quantized_layers": layers, "quantized_engine": engine})
        finally:
            torch.backends.quantized.engine = previous
        for w in caught:  # recorded in the manifest and passed on: the deprecations are not silenced
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        deprecated = _deprecations(caught)
        notes = dict(built.notes, deprecation_warnings=deprecated)
        if deprecated:  # the recipe column then says so in every report
            notes["recipe"] = f"{name} DEPRECATED: {deprecated[0].split('. ')[0]}"
        return replace(built, notes=notes)

    return build


def build_torchao_dynamic(ctx: BuildContext, out: Path) -> BuiltModel:
    """torchao.quantize_(Int8DynamicActivationInt8WeightConfig): int8 weights (per channel)
    and int8 activations quantized per token at run time, on nn.Linear layers."""
    import torch
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    module = fp32_copy(ctx)
    shapes = linear_shapes(module, ctx)
    quantize_(module, Int8DynamicActivationInt8WeightConfig())
    layers = [n for n, m in module.named_modules()
              if isinstance(m, torch.nn.Linear) and type(m.weight) not in (torch.Tensor, torch.nn.Parameter)]
    if not layers:
        raise NotApplicable(_no_linear(ctx, "torchao's Int8DynamicActivationInt8WeightConfig", "quantizes nn.Linear layers"))
    notes = {"quantized_layers": layers, "weight_type": type(getattr(module.get_submodule(layers[0]), "weight")).__name__,
             # the int8 matmuls' shapes: torch._int_mm on CUDA refuses some (torch_cuda.int_mm_reason)
             "int8_matmuls": {name: shapes[name] for name in layers if name in shapes}}
    return save_exported(module, ctx, out, what="dynamic-int8 (torchao)", runtime_requires=("torchao",), notes=notes)


def linear_shapes(module, ctx: BuildContext) -> dict[str, dict[str, int]]:
    """Each nn.Linear's K (in_features), N (out_features) and the rows it multiplies per sample
    (1 for a vector per sample, the tokens for a sequence), from one fp32 forward pass."""
    import torch

    seen: dict[str, tuple] = {}

    def record(name: str):
        def hook(mod, args, out) -> None:  # returns None: the output stays as it is
            seen.setdefault(name, tuple(args[0].shape))

        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    example = example_inputs(ctx)
    try:
        with torch.no_grad():
            module(*example)
    finally:
        for hook in hooks:
            hook.remove()
    samples = int(example[0].shape[0])
    shapes = {}
    for name, shape in seen.items():
        layer = module.get_submodule(name)
        rows = 1
        for dim in shape[:-1]:
            rows *= int(dim)
        shapes[name] = {"k": layer.in_features, "n": layer.out_features, "rows_per_sample": rows // samples}
    return shapes


# -- static int8 and mixed through PT2E -----------------------------------------------------------
# Why PT2E's `mixed` keeps float32 only (a float16 request is n/a): the build's and the search's reason.
PT2E_FLOAT32_ONLY = ("PT2E leaves set_module_name_qconfig(None) layers in float32, and its int8 kernels are "
                     "CPU kernels (on a GPU there is no int8 path to mix float16 with)")


def pt2e_convert(ctx: BuildContext, quantizer: str, mixed: bool = False, recipe: Optional[Recipe] = None):
    """prepare_pt2e -> calibrate on the calibration split -> convert_pt2e (mixed: the keep_float
    layers left unannotated; `recipe` is the mixed recipe the float layers were handed to, by
    default the eager one). Returns (converted GraphModule, manifest notes). Shared by the eager
    and the AOTInductor recipes (torch_aoti.py)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from harness.quantize.pt2e_torch import calibrate, fp32_capture, layer_precision, make_quantizer, resolve_keep_float
    from harness.quantize.torch_export import drop_unused_state

    if mixed:
        ctx.only_float32_kept(PT2E_FLOAT32_ONLY)
    names, how = ctx.float_layers(recipe or mixed_recipe(quantizer)) if mixed else (None, {})
    keep = resolve_keep_float(ctx, ctx.torch_module, names) if mixed else []  # reads module names only
    prepared = prepare_pt2e(fp32_capture(ctx), make_quantizer(quantizer, keep_float=keep))
    ctx.progress("calibrating (PT2E observers)")
    samples = calibrate(prepared, ctx)
    converted = convert_pt2e(prepared)
    dropped = drop_unused_state(converted)
    layers = layer_precision(converted)
    if not any(p == "int8" for p in layers.values()):
        raise NotApplicable(f"the {quantizer} PT2E quantizer quantized no conv/linear layer of {ctx.spec.name} (layers: {layers})")
    still_int8 = [name for name in keep if layers.get(name) == "int8"]
    if still_int8:
        raise RuntimeError(f"layers {still_int8} of {ctx.spec.name} were to stay float but were quantized")
    notes = {"layers": layers, "calibration_samples": samples, "dropped_float_copies": dropped}
    if mixed:
        notes.update(kept_float=keep, kept_float_layers=keep, kept_float_precision="float32", **how)
    return converted, notes


def build_pt2e(quantizer: str, mixed: bool = False, compile: Optional[str] = None):
    def build(ctx: BuildContext, out: Path) -> BuiltModel:
        converted, notes = pt2e_convert(ctx, quantizer, mixed)
        return save_exported(converted, ctx, out, what="mixed" if mixed else "static-int8", load=LoadSpec(compile=compile),
                             runtime_requires=RUNTIME_REQUIRES, notes=notes)

    return build


def _pt2e_name(quantizer: str, extra: str = "") -> str:
    cls = {"x86": "X86InductorQuantizer", "arm": "ArmInductorQuantizer"}[quantizer]
    return f"torchao.pt2e.prepare_pt2e({cls}{extra})+convert_pt2e"


AO_X86 = "torch.ao.quantize_dynamic(Linear,qint8,x86)"
AO_QNNPACK = "torch.ao.quantize_dynamic(Linear,qint8,qnnpack)"


def reference(recipe: Recipe) -> Recipe:
    """An eagerly run program (torch.export graph, PT2E q/dq pairs, torchao tensor subclasses):
    reference numerics, how accuracy is debugged and what the sensitivity probes use, not what a
    PyTorch user ships (that is an AOTInductor package, torch_aoti.py, or an ExecuTorch program).
    Its row says execution "reference", it is never a candidate of the answer, and it runs in
    the nightly profile only."""
    return replace(recipe, reference=True, profiles=NIGHTLY_ONLY)


FP32 = reference(Recipe("torch", "fp32", "torch.export(eager)", "fp32", build_fp32, {}, LIBS))
# The same fp32 model in the other execution formats, the baselines of the recipes that run so.
# TorchScript (the deprecated torch.ao pair below and its baseline) runs nightly: the quick job's
# torch rows are the formats PyTorch deploys today (AOTInductor, ExecuTorch), within its minutes.
FP32_TORCHSCRIPT = Recipe("torch", "fp32", "torch.jit.script, else trace (TorchScript)", "torchscript", build_fp32_torchscript,
                          {"format": "torchscript"}, LIBS, profiles=NIGHTLY_ONLY, execution="torchscript")
FP32_INDUCTOR = Recipe("torch", "fp32", "torch.export + torch.compile(inductor, freezing) on target", "inductor",
                       build_fp32_compiled("inductor"), {"compile": "inductor"}, LIBS, profiles=NIGHTLY_ONLY,
                       execution="inductor")
RECIPES: tuple[Recipe, ...] = (
    FP32,
    FP32_TORCHSCRIPT,
    FP32_INDUCTOR,
    reference(Recipe("torch", "bf16", "torch.export(.to(bfloat16), fp32 io)", "bf16", build_half("bfloat16"),
                     {"io": "float32"}, LIBS)),
    reference(Recipe("torch", "fp16", "torch.export(.to(float16), fp32 io)", "fp16", build_half("float16"),
                     {"io": "float32"}, LIBS, half_applicable)),
    # torch.ao through TorchScript: deployed (torch.jit.load runs it), deprecated (the row's `deprecated`)
    Recipe("torch", "dynamic-int8", AO_X86, "ao-x86", build_ao_dynamic("x86", AO_X86), {"engine": "x86"}, LIBS,
           engine_applicable("x86"), profiles=NIGHTLY_ONLY, execution="torchscript"),
    Recipe("torch", "dynamic-int8", AO_QNNPACK, "ao-qnnpack", build_ao_dynamic("qnnpack", AO_QNNPACK), {"engine": "qnnpack"},
           LIBS, engine_applicable("qnnpack"), profiles=NIGHTLY_ONLY, execution="torchscript"),
    reference(Recipe("torch", "dynamic-int8", "torchao.quantize_(Int8DynamicActivationInt8WeightConfig)", "torchao",
                     build_torchao_dynamic, {"revision": 2}, PT2E_LIBS,  # revision 2: the manifest records int8_matmuls
                     artifact_check=torch_cuda.int_mm_reason)),
    reference(Recipe("torch", "static-int8", _pt2e_name("x86") + ", eager", "pt2e-x86", build_pt2e("x86"),
                     {"calibration_batch": 16}, PT2E_LIBS, quantizer_applicable("x86"))),
    Recipe("torch", "static-int8", _pt2e_name("x86") + ", torch.compile on target", "pt2e-x86-inductor",
           build_pt2e("x86", compile="inductor"), {"calibration_batch": 16, "compile": "inductor"}, PT2E_LIBS,
           quantizer_applicable("x86"), profiles=NIGHTLY_ONLY, execution="inductor"),  # compiles on the target
    reference(Recipe("torch", "static-int8", _pt2e_name("arm") + ", eager", "pt2e-arm", build_pt2e("arm"),
                     {"calibration_batch": 16}, PT2E_LIBS, quantizer_applicable("arm"))),
    reference(qat_torch.torch_recipe(qat_torch.QATConfig(quantizer="x86"))),
    reference(qat_torch.torch_recipe(qat_torch.QATConfig(quantizer="arm"))),
    reference(Recipe("torch", "mixed", _pt2e_name("x86", ", keep_float layers None") + ", eager", "pt2e-x86",
                     build_pt2e("x86", mixed=True), {"calibration_batch": 16, "quantizer": "x86"}, PT2E_LIBS,
                     quantizer_applicable("x86"))),
    reference(Recipe("torch", "mixed", _pt2e_name("arm", ", keep_float layers None") + ", eager", "pt2e-arm",
                     build_pt2e("arm", mixed=True), {"calibration_batch": 16, "quantizer": "arm"}, PT2E_LIBS,
                     quantizer_applicable("arm"))),
)


def mixed_recipe(quantizer: str) -> Recipe:
    """The PT2E `mixed` recipe of a quantizer (what its sensitivity search is keyed by)."""
    return next(r for r in RECIPES if r.mode == "mixed" and r.params.get("quantizer") == quantizer)


# On a cuda target: the recipes with CUDA kernels run on the GPU, the others are n/a (torch_cuda.py).
RECIPES = torch_cuda.cuda_aware(RECIPES)

# Modes with no torch recipe, and why (n/a rows, never dropped).
UNAVAILABLE: dict[str, str] = {
    "int16x8": "int16 activations with int8 weights is a TFLite mode; PyTorch's CPU int8 paths (fbgemm, oneDNN, "
               "qnnpack, PT2E X86/ARM quantizers) have no int16-activation kernels",
}
