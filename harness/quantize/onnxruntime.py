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
from harness.quantize.onnx_graph import OPSET, WEIGHTED_OPS, describe, first_and_last_weighted, resolve_nodes

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


def build_dynamic(ctx: BuildContext, out: Path) -> BuiltModel:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ctx.progress("quantize_dynamic (int8 weights, per output channel)")
    # Per channel: one scale per output column. Per tensor, one outlier column sets the scale
    # of the whole matrix: all-MiniLM-L6-v2 keeps 0.964 cosine to fp32 that way, 0.993 per
    # channel, for 0.1 MB more and the same speed (measured on AVX-512 VNNI, issue #8).
    quantize_dynamic(str(fp32_path(ctx)), str(out / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    return describe(out / "model.onnx")


class CalibrationReader:
    """Feeds the calibration split to onnxruntime's calibrator in small batches."""

    def __init__(self, ctx: BuildContext) -> None:
        self._batches = iter(list(batches(ctx.dataset.calib_inputs, CALIBRATION_BATCH)))

    def get_next(self):
        return next(self._batches, None)

    def rewind(self) -> None:  # newer onnxruntime calls this between passes
        pass


def preprocessed(ctx: BuildContext, out: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    ctx.progress("quant_pre_process (shape inference, graph optimization)")
    path = out / "preprocessed.onnx.tmp"
    try:
        quant_pre_process(str(fp32_path(ctx)), str(path))
    except Exception as exc:  # noqa: BLE001 - onnxruntime's symbolic shape inference raises plain TypeErrors
        # Symbolic shape inference cannot follow every exported graph (transformers' attention
        # masks: Expand to a computed shape); ONNX's own shape inference still runs without it.
        ctx.progress(f"quant_pre_process: symbolic shape inference failed ({type(exc).__name__}), retrying without it")
        quant_pre_process(str(fp32_path(ctx)), str(path), skip_symbolic_shape=True)
    return path


def static_op_types(model_path: Path) -> Optional[list[str]]:
    """The op types static QDQ quantizes: onnxruntime's default (None) for most graphs, only
    the weighted ops for graphs with attention (a Softmax).

    The default set also puts QDQ on Add, Mul, Softmax, ...: in an encoder that quantizes the
    attention-mask Add, whose operand holds the dtype's minimum, and the residual Adds, and
    all-MiniLM-L6-v2 falls to 0.37 cosine to fp32. Weighted ops only: 0.937, the FFN output
    projections also float (the `mixed` default): 0.991 (issue #8). Convolutional nets keep the
    default so Relu/MaxPool stay inside int8 chains.
    """
    import onnx

    ops = {n.op_type for n in onnx.load(str(model_path), load_external_data=False).graph.node}
    return [op for op in WEIGHTED_OPS if op in ops] if "Softmax" in ops else None


def _quantize_static(ctx: BuildContext, out: Path, exclude: list[str]) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    op_types = static_op_types(fp32_path(ctx))
    if op_types:
        ctx.progress(f"attention graph: quantizing {', '.join(op_types)} only")
    pre = preprocessed(ctx, out)
    try:
        ctx.progress(f"calibrating on {len(next(iter(ctx.dataset.calib_inputs.values())))} samples (MinMax)")
        quantize_static(
            str(pre),
            str(out / "model.onnx"),
            CalibrationReader(ctx),
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
        )
    finally:
        pre.unlink(missing_ok=True)
    return {"op_types_to_quantize": op_types or "onnxruntime default"}


def build_static(ctx: BuildContext, out: Path) -> BuiltModel:
    return describe(out / "model.onnx", _quantize_static(ctx, out, exclude=[]))


def build_mixed(ctx: BuildContext, out: Path) -> BuiltModel:
    fp32 = fp32_path(ctx)
    where = f"{ctx.spec.name} in onnxruntime"
    exclude = resolve_nodes(fp32, ctx.keep_float, where) if ctx.keep_float else first_and_last_weighted(fp32)
    if not exclude:
        raise NotApplicable("the model has no Conv/MatMul/Gemm node to keep in float")
    notes = _quantize_static(ctx, out, exclude=exclude)
    return describe(out / "model.onnx", {**notes, "kept_float": exclude,
                                         "layers": list(ctx.keep_float) or "first and last weighted node"})


STATIC_OP_TYPES = "onnxruntime's default; with attention (Softmax) only the attention_ops"
FP32 = Recipe("onnxruntime", "fp32", "onnxruntime.fp32", "fp32", build_fp32, {"opset": OPSET, "debug_metadata": "stripped"},
              ("torch", "onnx", "onnxscript"))
RECIPES: tuple[Recipe, ...] = (
    FP32,
    Recipe("onnxruntime", "fp16", "onnxconverter_common.convert_float_to_float16(keep_io_types)", "fp16", build_fp16,
           {"keep_io_types": True, "node_block_list": "Cast-to-float"}, ("onnxconverter-common", "onnx")),
    Recipe("onnxruntime", "dynamic-int8", "onnxruntime.quantize_dynamic(QInt8,per_channel)", "dyn", build_dynamic,
           {"weight_type": "QInt8", "per_channel": True}, LIBS),
    Recipe("onnxruntime", "static-int8", "onnxruntime.quantize_static(QDQ,MinMax,per_channel,U8S8)", "qdq", build_static,
           {"format": "QDQ", "calibrate": "MinMax", "per_channel": True, "activation": "QUInt8", "weight": "QInt8",
            "calibration_batch": CALIBRATION_BATCH, "op_types": STATIC_OP_TYPES, "attention_ops": WEIGHTED_OPS}, LIBS),
    Recipe("onnxruntime", "mixed", "onnxruntime.quantize_static(QDQ,MinMax,per_channel,U8S8,nodes_to_exclude)", "qdq-mixed",
           build_mixed, {"format": "QDQ", "calibrate": "MinMax", "per_channel": True, "activation": "QUInt8", "weight": "QInt8",
                         "calibration_batch": CALIBRATION_BATCH,
                         "op_types": STATIC_OP_TYPES, "attention_ops": WEIGHTED_OPS}, LIBS),
    qat_torch.onnx_recipe(),  # the torch qat-int8 model (PT2E QAT), exported with its QDQ pairs
)

# Modes with no onnxruntime recipe, and why (they appear as n/a rows, never silently dropped).
UNAVAILABLE: dict[str, str] = {
    "bf16": "onnxruntime's CPU execution provider has no bfloat16 kernels for Conv/Gemm/MatMul",
    "int16x8": "int16 activations with int8 weights is a TFLite mode; onnxruntime's CPU kernels for 16-bit QDQ are reference-only",
}
