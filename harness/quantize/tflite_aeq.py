"""ai-edge-quantizer's recipes on an fp32 .tflite, shared by every TFLite source that starts from one.

`FloatTflite` says where the fp32 .tflite comes from and how the data feeds it: litert-torch's
conversion of the torch module (tflite_torch.TORCH), a user's own .tflite file
(tflite_file.FILE), a SavedModel's conversion (tflite_keras.saved_model_source). fp16,
dynamic-int8, static-int8, int16x8 and mixed are ai-edge-quantizer recipes applied to it
(calibrated on the calibration split); `aeq_recipes(src, ...)` makes them for a source.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from harness.artifacts import BuiltModel
from harness.profiles import NIGHTLY_ONLY
from harness.quantize.base import BuildContext, Recipe
from harness.quantize.tflite_graph import MODEL_FILE, check_kept_float, describe, graph_io_of, kept_layers, op_names

# Ops ai-edge-quantizer's float_casting algorithm casts to float16 (its SUPPORTED_WEIGHT_QUANT_OPS).
FP16_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D_TRANSPOSE", "EMBEDDING_LOOKUP")
# Static int8 in a graph with attention (a SOFTMAX): only these ops, the rest stays float. The
# whole-graph recipe also quantizes the mask SELECT/ADD, softmax and residual ADDs, and
# all-MiniLM-L6-v2 keeps 0.60 cosine to fp32; with these ops only, 0.952. BATCH_MATMUL (the
# attention products) is left float: quantized too it gave the same cosine at twice the
# latency (18 ms vs 9.5 ms, 2 threads). onnxruntime's recipe has a like rule (static_op_types).
ATTENTION_STATIC_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")
STATIC_OPS_NOTE = "every supported op; with attention (SOFTMAX and BATCH_MATMUL) only the attention_ops"


@dataclass(frozen=True)
class FloatTflite:
    """The fp32 .tflite ai-edge-quantizer starts from, and how the data feeds it. Two sources
    share every ai-edge-quantizer recipe below (three, with a SavedModel's conversion): litert-torch's conversion of the torch module,
    and a user's own .tflite file (tflite_file.py), whose fp32 row is the file itself."""

    source: str  # Recipe.source
    slug: str  # case-id slug
    fp32: Callable[[BuildContext], bytes]  # the fp32 .tflite bytes
    signature: Callable[[BuildContext], dict[str, str]]  # dataset input name -> signature input name
    notes: Callable[[BuildContext], dict]  # what the manifest says of the source
    layout: str  # layout of 4-D inputs, for the manifest
    known_layers: Callable[[BuildContext], dict]  # names `mixed` may use, with weights to match ops by
    where: str  # how errors name the framework and source


def write(ctx: BuildContext, out: Path, content: bytes, notes: dict, src: FloatTflite) -> BuiltModel:
    """The .tflite file and its manifest description, with what the source says of itself."""
    path = out / MODEL_FILE
    path.write_bytes(bytes(content))
    return describe(path, src.signature(ctx), src.layout, {**src.notes(ctx), **notes})


def signature_dtypes(content: bytes) -> dict[str, np.dtype]:
    """The .tflite signature's input dtypes: litert-torch turns int64 inputs (token ids) into int32."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_content=content).get_signature_runner().get_input_details()
    return {name: np.dtype(d["dtype"]) for name, d in details.items()}


def calibration_data(ctx: BuildContext, float_model: bytes, src: "FloatTflite") -> dict:
    """ai-edge-quantizer's calibration data: signature -> list of feeds, one sample each."""
    calib = ctx.dataset.calib_inputs
    names = src.signature(ctx)
    dtypes = signature_dtypes(float_model)
    n = len(next(iter(calib.values())))
    return {"serving_default": [{names[k]: np.ascontiguousarray(v[i:i + 1], dtype=dtypes[names[k]]) for k, v in calib.items()}
                                for i in range(n)]}


def quantize(ctx: BuildContext, src: "FloatTflite", what: str, configure, float_model: Optional[bytes] = None,
              calibration: Optional[dict] = None) -> bytes:
    """Run ai-edge-quantizer on the source's fp32 .tflite (its bytes, when the caller has read
    them); `configure(quantizer)` sets the recipe; `calibration`: a calibrate() result to reuse."""
    from ai_edge_quantizer import quantizer as aeq

    float_model = float_model or src.fp32(ctx)
    q = aeq.Quantizer(float_model)
    configure(q)
    if q.need_calibration and calibration is None:
        data = calibration_data(ctx, float_model, src)
        ctx.progress(f"ai-edge-quantizer {what}: calibrating on {len(data['serving_default'])} samples")
        calibration = q.calibrate(data, num_threads=1)
    ctx.progress(f"ai-edge-quantizer {what}")
    result = q.quantize(calibration if q.need_calibration else None, enable_progress_report=False)
    return bytes(result.quantized_model)


def _load(recipe_fn):
    def configure(q):
        q.load_quantization_recipe(recipe_fn())
    return configure


def build_dynamic(src: "FloatTflite", ctx: BuildContext, out: Path) -> BuiltModel:
    from ai_edge_quantizer import recipe

    content = quantize(ctx, src, "dynamic_wi8_afp32", _load(recipe.dynamic_wi8_afp32))
    return write(ctx, out, content, {"weights": "int8 per-channel", "activations": "float, quantized at run time"}, src)


def build_dynamic_legacy(src: "FloatTflite", ctx: BuildContext, out: Path) -> BuiltModel:
    """Like TFLiteConverter's dynamic range: weight tensors under 1,024 elements stay float."""
    from ai_edge_quantizer import recipe

    content = quantize(ctx, src, "dynamic_legacy_wi8_afp32", _load(recipe.dynamic_legacy_wi8_afp32))
    return write(ctx, out, content, {"weights": "int8 per-channel where >= 1024 elements, else float",
                                      "activations": "float, quantized at run time"}, src)


def build_fp16(src: "FloatTflite", ctx: BuildContext, out: Path) -> BuiltModel:
    from ai_edge_quantizer import qtyping

    def configure(q):
        for op in FP16_OPS:
            q.add_weight_only_config(".*", qtyping.TFLOperationName(op), 16, algorithm_key="float_casting")

    content = quantize(ctx, src, "float_casting (float16 weights)", configure)
    return write(ctx, out, content, {"weights": "float16", "compute": "float32 (weights dequantized)"}, src)


def static_recipe(float_model: bytes | Path, base: list[dict]) -> tuple[list[dict], str]:
    """ai-edge-quantizer's whole-graph `base` recipe, or for a graph with attention the same
    config restricted to ATTENTION_STATIC_OPS; and what it covers, for the manifest."""
    ops = static_ops(float_model)
    if ops is None:
        return base, "every supported op"
    return [dict(entry, operation=op) for entry in base for op in ops], ", ".join(ops) + " (attention graph)"


def static_ops(float_model: bytes | Path) -> Optional[list[str]]:
    """The ops static_recipe restricts int8 to in a graph with attention, else None (every supported op)."""
    present = op_names(float_model)
    # Attention multiplies two activations (BATCH_MATMUL) into a SOFTMAX; a classifier that ends
    # in a SOFTMAX over a FULLY_CONNECTED is not an attention graph.
    if not {"SOFTMAX", "BATCH_MATMUL"} <= present:
        return None
    return [op for op in ATTENTION_STATIC_OPS if op in present]


def _static(base: list[dict], float_model: bytes):
    entries, covers = static_recipe(float_model, base)

    def configure(q):
        q.load_quantization_recipe(entries)

    return configure, covers


def build_static(src: "FloatTflite", ctx: BuildContext, out: Path) -> BuiltModel:
    from ai_edge_quantizer import recipe

    float_model = src.fp32(ctx)
    configure, covers = _static(recipe.static_wi8_ai8(), float_model)
    content = quantize(ctx, src, f"static_wi8_ai8 on {covers}", configure, float_model)
    io = "int8" if covers == "every supported op" else "as fp32 (only the covered ops are int8)"
    return write(ctx, out, content, {"weights": "int8 per-channel", "activations": "int8", "io": io, "quantized_ops": covers}, src)


def build_int16x8(src: "FloatTflite", ctx: BuildContext, out: Path) -> BuiltModel:
    from ai_edge_quantizer import recipe

    content = quantize(ctx, src, "static_wi8_ai16", _load(recipe.static_wi8_ai16))
    return write(ctx, out, content, {"weights": "int8 per-channel", "activations": "int16", "io": "int16"}, src)


def static_calibration(ctx: BuildContext, src: "FloatTflite", float_model: bytes) -> dict:
    """ai-edge-quantizer's calibration result for the static recipe: min/max of every tensor it
    quantizes, reusable for any subset of those ops (the sensitivity search builds many)."""
    from ai_edge_quantizer import quantizer as aeq
    from ai_edge_quantizer import recipe

    q = aeq.Quantizer(float_model)
    _static(recipe.static_wi8_ai8(), float_model)[0](q)
    data = calibration_data(ctx, float_model, src)
    ctx.progress(f"ai-edge-quantizer static_wi8_ai8: calibrating on {len(data['serving_default'])} samples")
    return q.calibrate(data, num_threads=1)


def mixed_configure(float_model: bytes, kept: list, precision: str = "float32"):
    """static_wi8_ai8 (restricted as static_recipe says), then no_quantize for the kept ops, or
    (precision float16) float16 weights for them (float_casting, computed in float32):
    (configure, what the static recipe covers, the kept ops' scopes). A kept op that reads the
    model's input (or writes its output) keeps that float too: the whole-graph recipe quantizes
    the graph's inputs and outputs themselves (its INPUT/OUTPUT pseudo-ops), and an int8 input
    in front of a float first layer rounds away what keeping it float was for."""
    from ai_edge_quantizer import qtyping, recipe

    scopes = ["^" + re.escape(op.scope) + "$" for op in kept]
    static, covers = _static(recipe.static_wi8_ai8(), float_model)
    reads_input, writes_output, layout = graph_io_of(float_model, kept) if kept else (False, False, [])
    io = [name for name, touched in ((qtyping.TFLOperationName.INPUT, reads_input),
                                     (qtyping.TFLOperationName.OUTPUT, writes_output)) if touched]

    def configure(q):
        static(q)
        for scope, op in zip(scopes, kept):
            if precision == "float16" and op.op in FP16_OPS:
                q.add_weight_only_config(scope, qtyping.TFLOperationName(op.op), 16, algorithm_key="float_casting")
            else:
                q.update_quantization_recipe(scope, qtyping.TFLOperationName.ALL_SUPPORTED, qtyping.OpQuantizationConfig(),
                                             algorithm_key="no_quantize")
        for operation in io:
            q.update_quantization_recipe(".*", operation, qtyping.OpQuantizationConfig(), algorithm_key="no_quantize")
        for scope in layout:  # reshapes between the model's input and a kept layer: float too
            q.update_quantization_recipe("^" + re.escape(scope) + "$", qtyping.TFLOperationName.ALL_SUPPORTED,
                                         qtyping.OpQuantizationConfig(), algorithm_key="no_quantize")

    return configure, covers, scopes + [f"{op.value} (graph {op.value.lower()})" for op in io] + layout


def mixed_recipe(src: "FloatTflite") -> Recipe:
    """The `mixed` recipe of a source (what its sensitivity search is keyed by): the one
    aeq_recipes made for it, or (a SavedModel's conversion) the one its module registered."""
    return MIXED_RECIPES[(src.source, src.slug)]


def build_mixed(src: "FloatTflite", ctx: BuildContext, out: Path) -> BuiltModel:
    """static_wi8_ai8 everywhere, then no_quantize for the kept ops (the latest matching
    config wins in ai-edge-quantizer's recipe; ops are matched on their output names)."""
    float_model = src.fp32(ctx)
    names, how = ctx.float_layers(mixed_recipe(src))
    kept, kept_names = kept_layers(float_model, names, f"{ctx.spec.name} in {src.where}", src.known_layers(ctx))
    configure, covers, scopes = mixed_configure(float_model, kept, ctx.kept_precision)
    content = quantize(ctx, src, f"static_wi8_ai8 with {len(kept)} ops kept {ctx.kept_precision}", configure, float_model)
    facts = check_kept_float(float_model, content, kept, "ai-edge-quantizer(no_quantize)")
    precision = {(): "float32", ("float32",): "float32", ("float16",): "float16 weights (float_casting; float32 compute)"}.get(
        tuple(facts["kept_weight_dtypes"]), "mixed: " + ", ".join(facts["kept_weight_dtypes"]))
    return write(ctx, out, content, {"layers": names if names is not None else "first and last weighted op",
                                      "kept_float_layers": kept_names, "kept_float_precision": precision,
                                      "no_quantize_scopes": scopes, "quantized_ops": covers, **facts, **how}, src)


def aeq_recipes(src: FloatTflite, prefix: str, libraries: tuple[str, ...], params: dict) -> tuple[Recipe, ...]:
    """The ai-edge-quantizer recipes on `src`'s fp32 .tflite; `prefix` starts each recipe name."""
    def recipe(mode: str, name: str, build, extra: dict, slug: str = src.slug) -> Recipe:
        return Recipe("tflite", mode, f"{prefix} + ai_edge_quantizer({name})", slug, partial(build, src),
                      {**params, **extra}, libraries, source=src.source)

    calibrated = {"calibration": "calib split, batch 1"}
    static = {**calibrated, "ops": STATIC_OPS_NOTE, "attention_ops": ATTENTION_STATIC_OPS}
    return (
        recipe("fp16", "float_casting fp16", build_fp16, {"ops": list(FP16_OPS)}),
        recipe("dynamic-int8", "dynamic_wi8_afp32", build_dynamic, {}),
        # ai-edge-quantizer's default quantizes every weight tensor, the small first conv included;
        # the legacy recipe skips small ones as TFLiteConverter does: both rows, so users can compare.
        replace(recipe("dynamic-int8", "dynamic_legacy_wi8_afp32", build_dynamic_legacy, {"min_weight_elements": 1024},
                       slug=src.slug + "-legacy"), profiles=NIGHTLY_ONLY),
        recipe("static-int8", "static_wi8_ai8", build_static, static),
        recipe("int16x8", "static_wi8_ai16", build_int16x8, calibrated),
        register_mixed(src.source, src.slug, recipe("mixed", "static_wi8_ai8, no_quantize", build_mixed,
                                   {**static, "io": "float where a kept layer reads it (through layout ops) or writes it"})),
    )


# (source, slug) -> the `mixed` recipe of that FloatTflite (mixed_recipe): filled as the recipes are made.
MIXED_RECIPES: dict[tuple[str, str], Recipe] = {}


def register_mixed(source: str, slug: str, recipe: Recipe) -> Recipe:
    MIXED_RECIPES[(source, slug)] = recipe
    return recipe
