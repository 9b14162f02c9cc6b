"""TFLite artifacts from the model's PyTorch source: litert-torch converts, ai-edge-quantizer quantizes.

The PyTorch user's path to LiteRT. fp32 is `litert_torch.convert` of the spec's torch
module; fp16, dynamic-int8, static-int8, int16x8 and mixed are ai-edge-quantizer recipes
applied to that fp32 .tflite (calibrated on the calibration split); qat-int8 fine-tunes
through litert-torch's own PT2E quantizer and converts with it.

litert-torch 0.10 cannot export digits-cnn with a dynamic batch (its lowering of the
flatten fails on a symbolic size), so these artifacts have a static batch of 1: a case
with another batch size fails in the runner with both shapes in the reason.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from harness.artifacts import BuiltModel
from harness.profiles import NIGHTLY_ONLY
from harness.quantize.base import BuildContext, NotApplicable, Recipe, require_trainable
from harness.quantize.tflite_graph import MODEL_FILE, check_kept_float, describe, graph_io_of, kept_layers, op_names

SLUG = "litert-torch"
SOURCE = "torch"
STATIC_BATCH = 1
LIBS = ("torch", "litert-torch", "ai-edge-litert")
AEQ_LIBS = LIBS + ("ai-edge-quantizer",)
QAT_LIBS = LIBS + ("torchao",)
QAT_EPOCHS = 5  # fine-tuning epochs from the fp32 weights
QAT_LEARNING_RATE = 5e-4
QAT_BATCH = 32
SEED = 0
# Ops ai-edge-quantizer's float_casting algorithm casts to float16 (its SUPPORTED_WEIGHT_QUANT_OPS).
FP16_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D_TRANSPOSE", "EMBEDDING_LOOKUP")
# Static int8 in a graph with attention (a SOFTMAX): only these ops, the rest stays float. The
# whole-graph recipe also quantizes the mask SELECT/ADD, softmax and residual ADDs, and
# all-MiniLM-L6-v2 keeps 0.60 cosine to fp32; with these ops only, 0.952. BATCH_MATMUL (the
# attention products) is left float: quantized too it gave the same cosine at twice the
# latency (18 ms vs 9.5 ms, 2 threads). onnxruntime's recipe has a like rule (static_op_types).
ATTENTION_STATIC_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")
STATIC_OPS_NOTE = "every supported op; with attention (SOFTMAX and BATCH_MATMUL) only the attention_ops"


def _litert_torch():
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # the harness has its own progress line
    import litert_torch

    return litert_torch


def _signature_inputs(ctx: BuildContext) -> dict[str, str]:
    """litert-torch names the signature inputs args_0, args_1, ... in forward() order, which
    is the order the sample args were given in: the dataset's input order."""
    return {name: f"args_{i}" for i, name in enumerate(ctx.dataset.input_names)}


def _samples(ctx: BuildContext, inputs, start: int, count: int):
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(inputs[n][start:start + count])) for n in ctx.dataset.input_names)


def _torch_notes(ctx: BuildContext) -> dict:
    return {"source": f"torch module converted by litert-torch {_litert_torch().__version__}", "static_batch": STATIC_BATCH}


def _write(ctx: BuildContext, out: Path, content: bytes, notes: dict, src: "FloatTflite" = None) -> BuiltModel:
    src = src or TORCH
    path = out / MODEL_FILE
    path.write_bytes(bytes(content))
    return describe(path, src.signature(ctx), src.layout, {**src.notes(ctx), **notes})


def _content(edge_model) -> bytes:
    content = edge_model.model_content
    return bytes(content() if callable(content) else content)


@dataclass(frozen=True)
class FloatTflite:
    """The fp32 .tflite ai-edge-quantizer starts from, and how the data feeds it. Two sources
    share every ai-edge-quantizer recipe below: litert-torch's conversion of the torch module,
    and a user's own .tflite file (tflite_file.py), whose fp32 row is the file itself."""

    source: str  # Recipe.source
    slug: str  # case-id slug
    fp32: Callable[[BuildContext], bytes]  # the fp32 .tflite bytes
    signature: Callable[[BuildContext], dict[str, str]]  # dataset input name -> signature input name
    notes: Callable[[BuildContext], dict]  # what the manifest says of the source
    layout: str  # layout of 4-D inputs, for the manifest
    known_layers: Callable[[BuildContext], dict]  # names `mixed` may use, with weights to match ops by
    where: str  # how errors name the framework and source


def build_fp32(ctx: BuildContext, out: Path) -> BuiltModel:
    litert_torch = _litert_torch()
    ctx.progress("litert_torch.convert (float32)")
    module = ctx.torch_module.eval()
    edge = litert_torch.convert(module, _samples(ctx, ctx.dataset.eval_inputs, 0, STATIC_BATCH))
    content = _content(edge)
    # Parity check: the .tflite must compute what the module computes.
    from ai_edge_litert.interpreter import Interpreter
    import torch

    runner = Interpreter(model_content=content).get_signature_runner()
    dtypes = _signature_dtypes(content)
    worst = 0.0
    for i in range(8):
        args = _samples(ctx, ctx.dataset.eval_inputs, i, STATIC_BATCH)
        got = next(iter(runner(**{f"args_{j}": a.numpy().astype(dtypes[f"args_{j}"], copy=False)
                                  for j, a in enumerate(args)}).values()))
        with torch.no_grad():
            expected = module(*args)
        expected = (expected[0] if isinstance(expected, (tuple, list)) else expected).numpy()
        worst = max(worst, float(np.max(np.abs(got - expected))))
    if not worst < 1e-3:
        raise RuntimeError(f"litert-torch output differs from the torch module by {worst:.3g} (max abs) on evaluation samples")
    return _write(ctx, out, content, {"convert_max_abs_diff": worst})


def source_layers(ctx: BuildContext) -> dict[str, Optional[np.ndarray]]:
    """The torch module paths LiteRT ops are named by, with the weights of those that have one
    (an op is matched to its module by its weight values; the op locations litert-torch writes
    are fused and ambiguous)."""
    found = {}
    for name, module in ctx.torch_module.named_modules():
        weight = getattr(module, "weight", None)
        if name:
            found[name] = weight.detach().float().cpu().numpy() if hasattr(weight, "detach") else None
    return found


def fp32_content(ctx: BuildContext) -> bytes:
    artifact, _ = ctx.artifact(FP32)
    return artifact.model_file.read_bytes()


def _signature_dtypes(content: bytes) -> dict[str, np.dtype]:
    """The .tflite signature's input dtypes: litert-torch turns int64 inputs (token ids) into int32."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_content=content).get_signature_runner().get_input_details()
    return {name: np.dtype(d["dtype"]) for name, d in details.items()}


def _calibration(ctx: BuildContext, float_model: bytes, src: "FloatTflite") -> dict:
    """ai-edge-quantizer's calibration data: signature -> list of feeds, one sample each."""
    calib = ctx.dataset.calib_inputs
    names = src.signature(ctx)
    dtypes = _signature_dtypes(float_model)
    n = len(next(iter(calib.values())))
    return {"serving_default": [{names[k]: np.ascontiguousarray(v[i:i + 1], dtype=dtypes[names[k]]) for k, v in calib.items()}
                                for i in range(n)]}


def _quantize(ctx: BuildContext, src: "FloatTflite", what: str, configure, float_model: Optional[bytes] = None,
              calibration: Optional[dict] = None) -> bytes:
    """Run ai-edge-quantizer on the source's fp32 .tflite (its bytes, when the caller has read
    them); `configure(quantizer)` sets the recipe; `calibration`: a calibrate() result to reuse."""
    from ai_edge_quantizer import quantizer as aeq

    float_model = float_model or src.fp32(ctx)
    q = aeq.Quantizer(float_model)
    configure(q)
    if q.need_calibration and calibration is None:
        data = _calibration(ctx, float_model, src)
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

    content = _quantize(ctx, src, "dynamic_wi8_afp32", _load(recipe.dynamic_wi8_afp32))
    return _write(ctx, out, content, {"weights": "int8 per-channel", "activations": "float, quantized at run time"}, src)


def build_dynamic_legacy(src: "FloatTflite", ctx: BuildContext, out: Path) -> BuiltModel:
    """Like TFLiteConverter's dynamic range: weight tensors under 1,024 elements stay float."""
    from ai_edge_quantizer import recipe

    content = _quantize(ctx, src, "dynamic_legacy_wi8_afp32", _load(recipe.dynamic_legacy_wi8_afp32))
    return _write(ctx, out, content, {"weights": "int8 per-channel where >= 1024 elements, else float",
                                      "activations": "float, quantized at run time"}, src)


def build_fp16(src: "FloatTflite", ctx: BuildContext, out: Path) -> BuiltModel:
    from ai_edge_quantizer import qtyping

    def configure(q):
        for op in FP16_OPS:
            q.add_weight_only_config(".*", qtyping.TFLOperationName(op), 16, algorithm_key="float_casting")

    content = _quantize(ctx, src, "float_casting (float16 weights)", configure)
    return _write(ctx, out, content, {"weights": "float16", "compute": "float32 (weights dequantized)"}, src)


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
    content = _quantize(ctx, src, f"static_wi8_ai8 on {covers}", configure, float_model)
    io = "int8" if covers == "every supported op" else "as fp32 (only the covered ops are int8)"
    return _write(ctx, out, content, {"weights": "int8 per-channel", "activations": "int8", "io": io, "quantized_ops": covers}, src)


def build_int16x8(src: "FloatTflite", ctx: BuildContext, out: Path) -> BuiltModel:
    from ai_edge_quantizer import recipe

    content = _quantize(ctx, src, "static_wi8_ai16", _load(recipe.static_wi8_ai16))
    return _write(ctx, out, content, {"weights": "int8 per-channel", "activations": "int16", "io": "int16"}, src)


def static_calibration(ctx: BuildContext, src: "FloatTflite", float_model: bytes) -> dict:
    """ai-edge-quantizer's calibration result for the static recipe: min/max of every tensor it
    quantizes, reusable for any subset of those ops (the sensitivity search builds many)."""
    from ai_edge_quantizer import quantizer as aeq
    from ai_edge_quantizer import recipe

    q = aeq.Quantizer(float_model)
    _static(recipe.static_wi8_ai8(), float_model)[0](q)
    data = _calibration(ctx, float_model, src)
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
    """The `mixed` recipe of a source (what its sensitivity search is keyed by)."""
    from harness.quantize import recipes_for

    return next(r for r in recipes_for("tflite", "mixed") if r.source == src.source and r.slug == src.slug)


def build_mixed(src: "FloatTflite", ctx: BuildContext, out: Path) -> BuiltModel:
    """static_wi8_ai8 everywhere, then no_quantize for the kept ops (the latest matching
    config wins in ai-edge-quantizer's recipe; ops are matched on their output names)."""
    float_model = src.fp32(ctx)
    names, how = ctx.float_layers(mixed_recipe(src))
    kept, kept_names = kept_layers(float_model, names, f"{ctx.spec.name} in {src.where}", src.known_layers(ctx))
    configure, covers, scopes = mixed_configure(float_model, kept, ctx.kept_precision)
    content = _quantize(ctx, src, f"static_wi8_ai8 with {len(kept)} ops kept {ctx.kept_precision}", configure, float_model)
    facts = check_kept_float(float_model, content, kept, "ai-edge-quantizer(no_quantize)")
    precision = {(): "float32", ("float32",): "float32", ("float16",): "float16 weights (float_casting; float32 compute)"}.get(
        tuple(facts["kept_weight_dtypes"]), "mixed: " + ", ".join(facts["kept_weight_dtypes"]))
    return _write(ctx, out, content, {"layers": names if names is not None else "first and last weighted op",
                                      "kept_float_layers": kept_names, "kept_float_precision": precision,
                                      "no_quantize_scopes": scopes, "quantized_ops": covers, **facts, **how}, src)


def _qat_quantizer(module, probe_args):
    """litert-torch's PT2E quantizer, QAT flavour. litert-torch 0.10's conv+BatchNorm QAT
    patterns call torch.export.export on a plain function, which torch 2.13 refuses; a model
    without BatchNorm never matches them, so they are skipped there (and recorded)."""
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    exported = lambda: torch.export.export(copy.deepcopy(module).train(), probe_args,  # noqa: E731
                                           dynamic_shapes=tuple({0: torch.export.Dim("batch")} for _ in probe_args)).module()
    quantizer = PT2EQuantizer().set_global(config)
    try:
        return quantizer, prepare_qat_pt2e(exported(), quantizer), None
    except Exception as exc:  # noqa: BLE001 - decide below whether the fallback is sound
        failure = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        raise NotApplicable(f"litert-torch's PT2E QAT quantizer fails on this torch ({failure}), and the model has "
                            f"BatchNorm layers, whose conv+bn QAT patterns are the failing part")

    class NoConvBnQAT(PT2EQuantizer):
        STATIC_QAT_ONLY_OPS: list = []  # conv+bn patterns: nothing to match without BatchNorm

    quantizer = NoConvBnQAT().set_global(config)
    return quantizer, prepare_qat_pt2e(exported(), quantizer), f"conv+bn QAT patterns skipped (no BatchNorm): {failure}"


def build_qat(ctx: BuildContext, out: Path) -> BuiltModel:
    import torch

    require_trainable(ctx.spec)

    litert_torch = _litert_torch()
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    dataset = ctx.dataset
    if dataset.train_inputs is None or dataset.train_labels is None:
        raise ValueError(f"qat-int8 fine-tunes on the train split, and dataset {dataset.name!r} has none")
    quantizer, prepared, workaround = _qat_quantizer(ctx.torch_module, _samples(ctx, dataset.eval_inputs, 0, 2))
    torch.manual_seed(SEED)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread keeps float reductions in a fixed order
    losses = []
    try:
        x = [torch.from_numpy(dataset.train_inputs[n]) for n in dataset.input_names]
        y = torch.from_numpy(dataset.train_labels)
        optimizer = torch.optim.Adam(prepared.parameters(), lr=QAT_LEARNING_RATE)
        loss_fn = torch.nn.CrossEntropyLoss()
        generator = torch.Generator().manual_seed(SEED)
        for epoch in range(QAT_EPOCHS):
            ctx.progress(f"QAT fine-tuning epoch {epoch + 1}/{QAT_EPOCHS} (litert-torch PT2E)")
            total = 0.0
            for idx in torch.randperm(len(y), generator=generator).split(QAT_BATCH):
                optimizer.zero_grad()
                loss = loss_fn(prepared(*(t[idx] for t in x)), y[idx])
                if not torch.isfinite(loss):
                    raise RuntimeError(f"QAT fine-tuning diverged: loss {float(loss)} in epoch {epoch + 1}; lower the learning rate")
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
            losses.append(round(total / len(y), 6))
    finally:
        torch.set_num_threads(threads)
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared, fold_quantize=False)
    ctx.progress("litert_torch.convert (PT2E QAT int8)")
    edge = litert_torch.convert(converted, _samples(ctx, dataset.eval_inputs, 0, STATIC_BATCH),
                                quant_config=QuantConfig(pt2e_quantizer=quantizer))
    notes = {"qat": {"epochs": QAT_EPOCHS, "learning_rate": QAT_LEARNING_RATE, "loss_per_epoch": losses}, "io": "int8"}
    if workaround:
        notes["qat"]["workaround"] = workaround
    return _write(ctx, out, _content(edge), notes)


TORCH = FloatTflite(source=SOURCE, slug=SLUG, fp32=lambda ctx: fp32_content(ctx), signature=_signature_inputs,
                    notes=_torch_notes, layout="NCHW", known_layers=lambda ctx: source_layers(ctx),
                    where="tflite (litert-torch)")


def _recipe(mode: str, name: str, build, params: dict, libraries=AEQ_LIBS) -> Recipe:
    return Recipe("tflite", mode, name, SLUG, build, {"static_batch": STATIC_BATCH, **params}, libraries, source=SOURCE)


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
        recipe("mixed", "static_wi8_ai8, no_quantize", build_mixed,
               {**static, "io": "float where a kept layer reads it (through layout ops) or writes it"}),
    )


FP32 = _recipe("fp32", "litert_torch.convert(float32)", build_fp32, {}, LIBS)
RECIPES: tuple[Recipe, ...] = (
    FP32,
    *aeq_recipes(TORCH, "litert_torch.convert", AEQ_LIBS, {"static_batch": STATIC_BATCH}),
    _recipe("qat-int8", "litert_torch PT2EQuantizer(qat, per-channel) + convert", build_qat,
            {"epochs": QAT_EPOCHS, "learning_rate": QAT_LEARNING_RATE, "batch": QAT_BATCH}, QAT_LIBS),
)
