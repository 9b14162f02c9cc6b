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


def keras_model(
    name: str,
    model: Union[str, Path, Callable[[], Any]],
    data: DataSource,
    metric: MetricSpec = "top1",
    sensitive_layers: tuple[str, ...] = (),
    version: str = "1",
) -> ModelSpec:
    """A TensorFlow user's model, as they save it: a `.keras` file, a SavedModel directory, or
    a zero-argument function returning a built (trained) Keras model. Every TFLite mode goes
    through tf.lite.TFLiteConverter (from_keras_model / from_saved_model); qat-int8 runs tfmot
    on a Keras model with a train split (a SavedModel is n/a: it is not a Keras model).
    A file's or directory's content hash is in every cache key, a function's model's weights too."""
    if callable(model):
        build = _once(model)
        return ModelSpec(
            name=name, data=data, version=version, metric=metric, sensitive_layers=tuple(sensitive_layers),
            keras_factory=lambda ctx: build(),
            description=f"user Keras model from {getattr(model, '__qualname__', model)}",
            inputs=lambda: files.keras_inputs(build()),
        )
    path = Path(model).expanduser()
    if path.is_dir() or not path.exists() and not path.suffix:
        path = files.check_exists(path, "saved_model")
        return ModelSpec(
            name=name, data=data, version=version, metric=metric, sensitive_layers=tuple(sensitive_layers),
            saved_model=path, description=f"user SavedModel {path}",
            inputs=lambda: files.saved_model_inputs(path), files=(path,),
        )
    path = files.check_exists(path, "keras")
    load = _once(lambda: files.load_keras_file(path))
    return ModelSpec(
        name=name, data=data, version=version, metric=metric, sensitive_layers=tuple(sensitive_layers),
        keras_factory=lambda ctx: load(), description=f"user Keras model {path}",
        inputs=lambda: files.keras_inputs(load()), files=(path,),
    )


def torch_export_model(
    name: str,
    path: Union[str, Path],
    data: DataSource,
    metric: MetricSpec = "top1",
    sensitive_layers: tuple[str, ...] = (),
    version: str = "1",
) -> ModelSpec:
    """A `torch.export` program saved with `torch.export.save` (`.pt2`, exported with a dynamic
    batch dimension): no Python model code needed. The torch modes of a torch factory where they
    apply (PT2E static/mixed, fp16/bf16), onnxruntime and LiteRT through the same exporters;
    qat-int8 and the module-swapping dynamic-int8 recipes are n/a with the reason. The file's
    content hash is in every cache key; `mixed` takes the module paths the program recorded."""
    path = files.check_exists(Path(path), "pt2")
    return ModelSpec(
        name=name, data=data, version=version, metric=metric, sensitive_layers=tuple(sensitive_layers),
        torch_factory=lambda ctx: files.load_pt2_module(path), pt2_file=path,
        description=f"user torch.export program {path}", inputs=lambda: files.pt2_inputs(path), files=(path,),
    )


def _once(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Call `fn` the first time only (a model read for its inputs is the model the recipes use)."""
    made: list = []

    def call():
        if not made:
            made.append(fn())
        return made[0]

    return call
