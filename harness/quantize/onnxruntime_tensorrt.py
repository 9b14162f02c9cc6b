"""onnxruntime recipes that run through TensorRT (TensorrtExecutionProvider) on a CUDA GPU.

  - fp16: the fp32 graph, with TensorRT free to pick fp16 kernels (trt_fp16_enable);
  - static-int8: a QDQ graph quantized for TensorRT's explicit quantization (symmetric
    int8 activations and per-channel weights, zero points 0, as TensorRT requires),
    run with trt_int8_enable and no calibration table (the scales are in the graph).

The provider and its options travel in the recipe's params (so in the manifest): the
runner puts that provider first, before the target's CUDA and CPU providers. These
recipes exist where onnxruntime-gpu is installed (the only package with TensorRT);
on a target without a GPU, onnxruntime-gpu or TensorRT they are n/a with the reason.
"""
from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from harness.artifacts import BuiltModel
from harness.quantize.base import BuildContext, Recipe
from harness.quantize.onnxruntime import CALIBRATION_BATCH, CalibrationReader, describe, fp32_path, preprocessed

if TYPE_CHECKING:
    from harness.models.spec import ModelSpec
    from targets.base import TargetInfo

PROVIDER = "TensorrtExecutionProvider"
DISTRIBUTION = "onnxruntime-gpu"  # the onnxruntime build that has TensorrtExecutionProvider
LIBS = ("onnxruntime", DISTRIBUTION, "onnx")  # whichever onnxruntime build is installed quantizes


def tensorrt_reason(spec: "ModelSpec", target: "TargetInfo") -> Optional[str]:
    """Why TensorRT cannot run on this target, or None."""
    if target.kind != "cuda":
        return (f"the TensorRT recipes run on cuda targets, whose probe checks onnxruntime-gpu and TensorRT; "
                f"target {target.name} is {target.kind}")
    if PROVIDER not in target.facts.get("onnxruntime_providers", []):
        return (f"onnxruntime on target {target.name} has no {PROVIDER} "
                f"(it has {', '.join(target.facts.get('onnxruntime_providers', [])) or 'no onnxruntime'}): install onnxruntime-gpu")
    trt = target.facts.get("tensorrt") or {}
    if not trt.get("loadable"):
        return (f"TensorRT 10 is not loadable on target {target.name} ({trt.get('reason', 'not probed')}): "
                "install TensorRT 10 and put its lib/ directory on LD_LIBRARY_PATH")
    return None


def build_fp32_graph(ctx: BuildContext, out: Path) -> BuiltModel:
    shutil.copyfile(fp32_path(ctx), out / "model.onnx")
    return describe(out / "model.onnx", {"graph": "fp32 (TensorRT chooses fp16 kernels)"})


def build_symmetric_qdq(ctx: BuildContext, out: Path) -> BuiltModel:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    pre = preprocessed(ctx, out)
    try:
        ctx.progress(f"calibrating on {len(next(iter(ctx.dataset.calib_inputs.values())))} samples (MinMax, symmetric)")
        quantize_static(
            str(pre), str(out / "model.onnx"), CalibrationReader(ctx),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            per_channel=True, calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    finally:
        pre.unlink(missing_ok=True)
    return describe(out / "model.onnx", {"graph": "QDQ, symmetric int8 (TensorRT explicit quantization)"})


PARAMS_INT8 = {"format": "QDQ", "calibrate": "MinMax", "per_channel": True, "activation": "QInt8 symmetric",
               "weight": "QInt8 symmetric", "calibration_batch": CALIBRATION_BATCH,
               "execution_provider": [PROVIDER, {"trt_int8_enable": True}]}

RECIPES: tuple[Recipe, ...] = (
    Recipe("onnxruntime", "fp16", "onnxruntime.TensorRT(trt_fp16_enable) on the fp32 graph", "trt-fp16",
           build_fp32_graph, {"execution_provider": [PROVIDER, {"trt_fp16_enable": True}]}, LIBS, tensorrt_reason),
    Recipe("onnxruntime", "static-int8", "onnxruntime.TensorRT(trt_int8_enable) on quantize_static(QDQ,MinMax,per_channel,symmetric)",
           "trt-int8", build_symmetric_qdq, PARAMS_INT8, LIBS, tensorrt_reason),
)


def registered() -> tuple[Recipe, ...]:
    """The recipes, where onnxruntime-gpu is installed; elsewhere none (no TensorRT to run them)."""
    try:
        importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return ()
    return RECIPES
