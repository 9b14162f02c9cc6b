"""ONNX Runtime recipes: export, fp16, dynamic int8, static int8 (QDQ) and mixed precision.

Everything is calibrated on the dataset's calibration split, never on random data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from harness.artifacts import BuiltModel
from harness.data import batches
from harness.quantize import qat_torch
from harness.quantize.base import BuildContext, NotApplicable, Recipe
from harness.quantize.onnx_graph import OPSET, WEIGHTED_OPS, describe, kept_layers, node_names

FP32_FILE = "model.onnx"
CALIBRATION_BATCH = 16
LIBS = ("onnxruntime", "onnx")


def _export_torch(ctx: BuildContext, out: Path) -> dict:
    import torch

    module = ctx.torch_module
    names = ctx.dataset.input_names
    example = tuple(torch.from_numpy(np.ascontiguousarray(ctx.dataset.eval_inputs[n][:2])) for n in names)
    batch = torch.export.Dim("batch", min=1, max=4096)
    ctx.progress("exporting to ONNX (torch.onnx.export, dynamo)")
    torch.onnx.export(
        module,
        example,
        str(out),
        input_names=list(names),
        output_names=["output"],
        dynamic_shapes=tuple({0: batch} for _ in names),
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
    )
    import onnx

    from harness.quantize.onnx_weights import strip_debug_metadata

    exported = onnx.load(str(out))
    strip_debug_metadata(exported)  # stack traces etc.: debug info that outweighs a small model's weights
    onnx.save(exported, str(out))
    # Parity check: the exported graph must compute what the module computes.
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feed = {n: ctx.dataset.eval_inputs[n][:8] for n in names}
    with torch.no_grad():
        expected = module(*(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in names))
    expected = expected[0] if isinstance(expected, (tuple, list)) else expected
    got = session.run(None, feed)[0]
    max_abs = float(np.max(np.abs(got - expected.numpy())))
    if not max_abs < 1e-3 * max(1.0, float(np.max(np.abs(expected.numpy())))):
        raise RuntimeError(f"ONNX export differs from the torch module by {max_abs:.3g} (max abs) on evaluation samples")
    return {"recipe": f"onnxruntime.fp32(torch.onnx.export dynamo, opset {OPSET})", "export_max_abs_diff": max_abs}


def build_fp32(ctx: BuildContext, out: Path) -> BuiltModel:
    target = out / FP32_FILE
    if ctx.spec.onnx_file is not None:
        import onnx

        if not ctx.spec.onnx_file.is_file():
            raise FileNotFoundError(f"ONNX file {ctx.spec.onnx_file} does not exist")
        # onnx.load pulls in external data (e.g. model.onnx.data beside the file); saving
        # one self-contained file keeps the artifact a single file a device can load.
        onnx.save(onnx.load(str(ctx.spec.onnx_file)), str(target))
        notes = {"source": str(ctx.spec.onnx_file), "recipe": "onnxruntime.fp32(user ONNX file)"}
    else:
        notes = _export_torch(ctx, target)
    return describe(target, notes)


def fp32_path(ctx: BuildContext) -> Path:
    artifact, _ = ctx.artifact(FP32)
    return artifact.model_file


def build_fp16(ctx: BuildContext, out: Path) -> BuiltModel:
    import onnx
    from onnxconverter_common import float16

    ctx.progress("converting to float16 (onnxconverter-common)")
    model = onnx.load(str(fp32_path(ctx)))
    # onnxconverter-common retypes the output of a Cast-to-float (e.g. an int64 attention mask
    # cast for pooling) as float16 but leaves its `to` attribute float, which onnxruntime refuses
    # to load. Blocked, such a Cast stays float and the converter casts its output to float16.
    casts = [n.name for n in model.graph.node if n.name and n.op_type == "Cast"
             and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)]
    converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=casts)
    onnx.save(converted, str(out / "model.onnx"))
    return describe(out / "model.onnx", {"keep_io_types": True, "float_casts_kept": casts})


PER_CHANNEL_OPSET = 13  # QuantizeLinear/DequantizeLinear take the `axis` of per-channel scales from opset 13


def quantizable(ctx: BuildContext, out: Path) -> Path:
    """The fp32 graph as onnxruntime's quantizers need it, written beside the artifact:

    - every Constant node's tensor moved into the initializers. Some exporters (paddle2onnx)
      keep all weights in Constant nodes, which the quantizers treat as activations:
      quantize_dynamic then quantized each weight again at run time and kept the float copy
      (the PaddleOCR classifier's file grew to 1.12x fp32 and ran 7x slower);
    - the default-domain opset raised to 13 when it is older: per-channel QDQ writes
      DequantizeLinear with an `axis`, which opset 11 does not have (that classifier's static
      int8 graph failed to load: INVALID_GRAPH "Unrecognized attribute: axis").
    """
    import onnx
    from onnx import version_converter

    model = onnx.load(str(fp32_path(ctx)))
    kept, moved = [], 0
    for node in model.graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
            moved += 1
        else:
            kept.append(node)
    if moved:
        del model.graph.node[:]
        model.graph.node.extend(kept)
        ctx.progress(f"moved {moved} Constant-node tensors into initializers")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), PER_CHANNEL_OPSET)
    if opset < PER_CHANNEL_OPSET:
        ctx.progress(f"converting opset {opset} to {PER_CHANNEL_OPSET} (per-channel QDQ)")
        try:
            model = version_converter.convert_version(model, PER_CHANNEL_OPSET)
        except Exception as exc:  # noqa: BLE001 - onnx raises plain errors for ops it cannot adapt
            raise RuntimeError(f"per-channel int8 needs ONNX opset {PER_CHANNEL_OPSET} and onnx could not convert this "
                               f"opset-{opset} graph ({type(exc).__name__}: {exc}); re-export it with opset >= 13") from exc
    path = out / "float.onnx.tmp"
    onnx.save(model, str(path))
    return path


def quantized_ops(path: Path) -> str:
    """Which weighted ops of a quantized graph compute in int8, e.g. "MatMul 1/1, Conv 0/53":
    integer kernels (ConvInteger, MatMulInteger, QLinear*) and QDQ ops whose weight input is
    a DequantizeLinear count as int8."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    integer = {"ConvInteger": "Conv", "MatMulInteger": "MatMul", "QLinearConv": "Conv", "QLinearMatMul": "MatMul",
               "DynamicQuantizeMatMul": "MatMul", "QGemm": "Gemm"}
    counts: dict[str, list[int]] = {}
    for node in graph.node:
        op = integer.get(node.op_type, node.op_type)
        if op not in WEIGHTED_OPS:
            continue
        quantized = node.op_type in integer or (len(node.input) > 1 and node.input[1] in dequantized)
        total = counts.setdefault(op, [0, 0])
        total[0] += int(quantized)
        total[1] += 1
    return ", ".join(f"{op} {q}/{n}" for op, (q, n) in counts.items()) or "no weighted op"


# quantize_dynamic's op types but Conv. A dynamically quantized Conv becomes ConvInteger, which
# onnxruntime's CPU provider runs far slower than a float Conv: the PaddleOCR MobileNetV3
# classifier took 72 ms with its 53 convolutions as ConvInteger against 1.2 ms in float (2 threads,
# busy 2-core EPYC). Static int8 (QDQ) is the int8 mode for convolutions, as onnxruntime's
# documentation advises; like torch's quantize_dynamic (Linear only), dynamic covers MatMul,
# Attention, LSTM, Gather (embeddings) and the rest.
DYNAMIC_OP_TYPES = ("Attention", "EmbedLayerNormalization", "Gather", "LSTM", "MatMul", "Transpose")


def build_dynamic(ctx: BuildContext, out: Path) -> BuiltModel:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ctx.progress("quantize_dynamic (int8 weights, per output channel)")
    source = quantizable(ctx, out)
    try:
        # Per channel: one scale per output column. Per tensor, one outlier column sets the scale
        # of the whole matrix: all-MiniLM-L6-v2 keeps 0.964 cosine to fp32 that way, 0.993 per
        # channel, for 0.1 MB more and the same speed (measured on AVX-512 VNNI, issue #8).
        quantize_dynamic(str(source), str(out / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=list(DYNAMIC_OP_TYPES))
    finally:
        source.unlink(missing_ok=True)
    return describe(out / "model.onnx", {"quantized_ops": quantized_ops(out / "model.onnx"),
                                         "op_types_to_quantize": list(DYNAMIC_OP_TYPES)})


class CalibrationReader:
    """Feeds the calibration split to onnxruntime's calibrator in small batches."""

    def __init__(self, ctx: BuildContext) -> None:
        self._batches = iter(list(batches(ctx.dataset.calib_inputs, CALIBRATION_BATCH)))

    def get_next(self):
        return next(self._batches, None)

    def rewind(self) -> None:  # newer onnxruntime calls this between passes
        pass


def preprocessed(ctx: BuildContext, out: Path, optimize: bool = True) -> Path:
    """quant_pre_process of the fp32 graph (weights as initializers): shape inference and, with
    `optimize`, onnxruntime's graph optimization (Conv+BatchNormalization and Conv+Add fusion)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    ctx.progress(f"quant_pre_process (shape inference{', graph optimization' if optimize else ''})")
    source = quantizable(ctx, out)
    path = out / "preprocessed.onnx.tmp"
    try:
        try:
            quant_pre_process(str(source), str(path), skip_optimization=not optimize)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's symbolic shape inference raises plain TypeErrors
            # Symbolic shape inference cannot follow every exported graph (transformers' attention
            # masks: Expand to a computed shape; paddle2onnx's Concat on axis -1); ONNX's own shape
            # inference still runs without it.
            ctx.progress(f"quant_pre_process: symbolic shape inference failed ({type(exc).__name__}), retrying without it")
            quant_pre_process(str(source), str(path), skip_optimization=not optimize, skip_symbolic_shape=True)
    finally:
        source.unlink(missing_ok=True)
    return path


def has_attention(model_path: Path) -> bool:
    """A MatMul of two computed tensors (query x key, attention x value): an attention graph.
    A Softmax alone is not one: classifiers end in a Softmax over a MatMul with a weight."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    constant = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return any(n.op_type == "MatMul" and len(n.input) == 2 and not (set(n.input) & constant) for n in graph.node)


def static_op_types(model_path: Path) -> Optional[list[str]]:
    """The op types static QDQ quantizes: onnxruntime's default (None) for most graphs, only
    the weighted ops for graphs with attention.

    The default set also puts QDQ on Add, Mul, Softmax, ...: in an encoder that quantizes the
    attention-mask Add, whose operand holds the dtype's minimum, and the residual Adds, and
    all-MiniLM-L6-v2 falls to 0.37 cosine to fp32. Weighted ops only: 0.937, the FFN output
    projections also float (the `mixed` default): 0.991 (issue #8). Convolutional nets keep the
    default so Relu/MaxPool stay inside int8 chains.
    """
    import onnx

    if not has_attention(model_path):
        return None
    ops = {n.op_type for n in onnx.load(str(model_path), load_external_data=False).graph.node}
    return [op for op in WEIGHTED_OPS if op in ops]


def quantize_preprocessed(ctx: BuildContext, pre: Path, output: Path, exclude: list[str], op_types: Optional[list[str]],
                          calibration_cache: Optional[Path] = None) -> None:
    """quantize_static (QDQ, U8S8, per channel, MinMax) of the preprocessed graph `pre` into
    `output`, with the `exclude` nodes float. With `calibration_cache`, the calibration ranges
    are computed on the first call and read back on the next ones (onnxruntime's own cache;
    the ranges do not depend on which nodes are excluded: the sensitivity search builds many)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    cached = calibration_cache is not None and calibration_cache.is_file()
    if not cached:
        ctx.progress(f"calibrating on {len(next(iter(ctx.dataset.calib_inputs.values())))} samples (MinMax)")
    quantize_static(
        str(pre),
        str(output),
        None if cached else CalibrationReader(ctx),
        quant_format=QuantFormat.QDQ,
        # U8S8: uint8 activations, int8 weights. With S8S8, onnxruntime 1.32's CPU provider
        # left half of MiniLM's quantized MatMuls as DequantizeLinear + float MatMul:
        # 49 ms vs 21 ms fp32, against 12 ms U8S8, same cosine (0.936); digits-cnn is the
        # same speed and accuracy either way (AVX-512 VNNI, 2 threads). Without VNNI,
        # U8S8's VPMADDUBSW can saturate (onnxruntime's quantization docs): left alone.
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=exclude,
        op_types_to_quantize=op_types,
        calibration_cache_path=calibration_cache,
    )


def _quantize_static(ctx: BuildContext, out: Path, exclude: list[str]) -> dict:
    """quantize_static on the pre-processed graph. When the result does not load (a graph from
    another exporter that quant_pre_process's optimizer rewrites into a form quantize_static
    breaks: INVALID_GRAPH at load), or when the optimization fused a node `mixed` keeps in float
    into another (its name is gone), again without the optimization, as preprocessed() already
    retries without symbolic shape inference."""
    from harness.quantize.host_check import load_error

    op_types = static_op_types(fp32_path(ctx))
    if op_types:
        ctx.progress(f"attention graph: quantizing {', '.join(op_types)} only")
    notes: dict = {"op_types_to_quantize": op_types or "onnxruntime default", "pre_process": "quant_pre_process"}
    renamed = _quantize_preprocessed(ctx, out, exclude, op_types, optimize=True)
    refused = load_error(out / "model.onnx", "onnxruntime")
    # A still broken second result is the host check's build error (BuildContext.artifact).
    if refused or renamed:
        why = (f"with the optimization the result did not load ({refused[:200]})" if refused else
               f"the optimization fused nodes to keep in float away ({', '.join(renamed[:5])})")
        ctx.progress(f"again without quant_pre_process's graph optimization: {why[:80]}")
        _quantize_preprocessed(ctx, out, exclude, op_types, optimize=False)
        notes["pre_process"] = f"quant_pre_process(skip_optimization): {why}"
    notes["quantized_ops"] = quantized_ops(out / "model.onnx")
    return notes


def _quantize_preprocessed(ctx: BuildContext, out: Path, exclude: list[str], op_types: Optional[list[str]],
                           optimize: bool) -> list[str]:
    """quantize_static on quant_pre_process's output; returns the nodes of `exclude` that the
    pre-processing removed (fused into others), which then could not be kept in float."""
    import onnx

    pre = preprocessed(ctx, out, optimize)
    names = {n.name for n in onnx.load(str(pre), load_external_data=False).graph.node}
    try:
        quantize_preprocessed(ctx, pre, out / "model.onnx", exclude, op_types)
    finally:
        pre.unlink(missing_ok=True)
    return [n for n in exclude if n not in names]


def build_static(ctx: BuildContext, out: Path) -> BuiltModel:
    return describe(out / "model.onnx", _quantize_static(ctx, out, exclude=[]))


# Why `mixed` keeps float32 only (a float16 request is n/a): the build's and the search's reason.
MIXED_FLOAT32_ONLY = ("quantize_static keeps excluded nodes in float32, and a float16 island would compute in "
                      "float16 only on a CUDA target, where this QDQ graph has no int8 path here")


def build_mixed(ctx: BuildContext, out: Path) -> BuiltModel:
    ctx.only_float32_kept(MIXED_FLOAT32_ONLY)
    fp32 = fp32_path(ctx)
    names, how = ctx.float_layers(MIXED)
    kept = kept_layers(fp32, names, f"{ctx.spec.name} in onnxruntime")
    if not kept and names is None:
        raise NotApplicable("the model has no Conv/MatMul/Gemm node to keep in float")
    exclude = node_names(kept)
    notes = _quantize_static(ctx, out, exclude=exclude)
    return describe(out / "model.onnx", {**notes, "kept_float": exclude, "kept_float_layers": [layer.name for layer in kept],
                                         "kept_float_precision": "float32", "layers": names if names is not None
                                         else "first and last weighted node", **how})


STATIC_OP_TYPES = "onnxruntime's default; with attention (a MatMul of two activations) only the attention_ops"
GRAPH_PREP = "Constant weights as initializers, opset >= 13"
PRE_PROCESS = GRAPH_PREP + ", quant_pre_process; without its optimization if the result does not load or a node to keep float is fused away"
FP32 = Recipe("onnxruntime", "fp32", "onnxruntime.fp32", "fp32", build_fp32, {"opset": OPSET, "debug_metadata": "stripped"},
              ("torch", "onnx", "onnxscript"))
MIXED = Recipe("onnxruntime", "mixed", "onnxruntime.quantize_static(QDQ,MinMax,per_channel,U8S8,nodes_to_exclude)",
               "qdq-mixed", build_mixed, {"format": "QDQ", "calibrate": "MinMax", "per_channel": True, "activation": "QUInt8",
                                          "weight": "QInt8", "calibration_batch": CALIBRATION_BATCH,
                                          "op_types": STATIC_OP_TYPES, "attention_ops": WEIGHTED_OPS,
                                          "pre_process": PRE_PROCESS}, LIBS)
RECIPES: tuple[Recipe, ...] = (
    FP32,
    Recipe("onnxruntime", "fp16", "onnxconverter_common.convert_float_to_float16(keep_io_types)", "fp16", build_fp16,
           {"keep_io_types": True, "node_block_list": "Cast-to-float"}, ("onnxconverter-common", "onnx")),
    Recipe("onnxruntime", "dynamic-int8", "onnxruntime.quantize_dynamic(QInt8,per_channel,no Conv)", "dyn", build_dynamic,
           {"weight_type": "QInt8", "per_channel": True, "op_types": list(DYNAMIC_OP_TYPES), "graph": GRAPH_PREP},
           LIBS),
    Recipe("onnxruntime", "static-int8", "onnxruntime.quantize_static(QDQ,MinMax,per_channel,U8S8)", "qdq", build_static,
           {"format": "QDQ", "calibrate": "MinMax", "per_channel": True, "activation": "QUInt8", "weight": "QInt8",
            "calibration_batch": CALIBRATION_BATCH, "op_types": STATIC_OP_TYPES, "attention_ops": WEIGHTED_OPS,
            "pre_process": PRE_PROCESS}, LIBS),
    MIXED,
    qat_torch.onnx_recipe(),  # the torch qat-int8 model (PT2E QAT), exported with its QDQ pairs
)

# Modes with no onnxruntime recipe, and why (they appear as n/a rows, never silently dropped).
UNAVAILABLE: dict[str, str] = {
    "bf16": "onnxruntime's CPU execution provider has no bfloat16 kernels for Conv/Gemm/MatMul",
    "int16x8": "int16 activations with int8 weights is a TFLite mode; onnxruntime's CPU kernels for 16-bit QDQ are reference-only",
}
