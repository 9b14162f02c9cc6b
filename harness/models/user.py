"""Bring your own model: an ONNX file or a PyTorch factory, with your data and metric."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Union

from harness.data import DataSource
from harness.metrics import Metric
from harness.models import files
from harness.models.spec import ModelSpec

MetricSpec = Union[str, Metric, Callable[..., float]]


def onnx_model(
    name: str,
    path: Union[str, Path],
    data: DataSource,
    metric: MetricSpec = "top1",
    sensitive_layers: tuple[str, ...] = (),
    version: str = "1",
) -> ModelSpec:
    """An fp32 ONNX file. The file's content hash is part of every cache key, so a new
    file re-quantizes by itself. onnxruntime modes only (torch/tflite cases are n/a)."""
    path = Path(path).expanduser()
    return ModelSpec(
        name=name,
        data=data,
        version=version,
        metric=metric,
        onnx_file=path,
        sensitive_layers=tuple(sensitive_layers),
        description=f"user ONNX model {path}",
        inputs=lambda: files.onnx_inputs(path),
    )


def torch_model(
    name: str,
    factory: Callable[[], Any],
    data: DataSource,
    metric: MetricSpec = "top1",
    sensitive_layers: tuple[str, ...] = (),
    version: str = "1",
) -> ModelSpec:
    """A zero-argument function returning a trained `torch.nn.Module` (fp32). Its
    weights are hashed into the cache key; bump `version` if the code changes."""
    return ModelSpec(
        name=name,
        data=data,
        version=version,
        metric=metric,
        torch_factory=lambda ctx: factory().eval(),
        sensitive_layers=tuple(sensitive_layers),
        description=f"user PyTorch model from {getattr(factory, '__qualname__', factory)}",
    )


def tflite_model(
    name: str,
    path: Union[str, Path],
    data: DataSource,
    metric: MetricSpec = "top1",
    sensitive_layers: tuple[str, ...] = (),
    version: str = "1",
) -> ModelSpec:
    """A ready fp32 `.tflite` file (one signature). Its fp32 row is the file itself; fp16,
    dynamic-int8, static-int8, int16x8 and mixed come from ai-edge-quantizer (tflite cases only).
    The file's content hash is part of every cache key."""
    path = files.check_exists(Path(path), "tflite")
    return ModelSpec(
        name=name,
        data=data,
        version=version,
        metric=metric,
        tflite_file=path,
        sensitive_layers=tuple(sensitive_layers),
        description=f"user .tflite model {path}",
        inputs=lambda: files.tflite_inputs(path),
        files=(path,),
    )
