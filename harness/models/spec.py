"""ModelSpec: how to build a model's fp32 reference and where its data comes from."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from harness.artifacts import TensorSpec
from harness.data import DataSource, Dataset
from harness.metrics import Metric


@dataclass(frozen=True)
class ModelContext:
    """What a model factory may use: a cache directory, the data, a progress line."""

    cache_dir: Path  # persistent, shared across runs; write atomically
    dataset: Dataset
    progress: Callable[[str], None] = lambda message: None


@dataclass(frozen=True)
class ModelSpec:
    """One model a suite benchmarks.

    A spec has at least one source of fp32 weights: a PyTorch factory (from which ONNX
    and LiteRT artifacts are exported) or an ONNX file (onnxruntime modes only).
    """

    name: str  # the `model` column, also part of case ids
    data: DataSource  # .npz path, Dataset, or loader returning a Dataset
    version: str = "1"  # bump when the architecture or training changes: it is part of every cache key
    metric: Union[str, Metric, Callable[..., float]] = "top1"  # 'top1', a Metric or f(first_output, labels)
    torch_factory: Optional[Callable[[ModelContext], Any]] = None  # returns the fp32 torch.nn.Module in eval mode
    onnx_file: Optional[Path] = None  # a ready fp32 ONNX model (used instead of exporting)
    keras_factory: Optional[Callable[[ModelContext], Any]] = None  # same architecture in Keras (TFLite's own path)
    tflite_file: Optional[Path] = None  # a ready fp32 .tflite (ai-edge-quantizer modes; its fp32 row is the file)
    saved_model: Optional[Path] = None  # a TensorFlow SavedModel directory (TFLiteConverter.from_saved_model)
    pt2_file: Optional[Path] = None  # a torch.export program (.pt2); torch_factory then loads it
    sensitive_layers: tuple[str, ...] = ()  # layers `mixed` keeps in float (module names or ONNX node names)
    description: str = ""  # one line for reports and docs
    # The model's own inputs, read from its file (ONNX, .tflite, .pt2, Keras): the data is bound to
    # them (one input takes the data's one input whatever its name) and checked against their shapes.
    inputs: Optional[Callable[[], tuple[TensorSpec, ...]]] = field(default=None, compare=False)
    files: tuple[Path, ...] = ()  # the user's model files/directories: their content hashes are in every cache key
    # The fp32 torch weights' identity without building the module (e.g. the hash of the weights file
    # the factory caches), so a run whose artifacts are all cached imports no torch on the host.
    # None from it means "not known yet": the module is built, then it is asked again.
    torch_identity: Optional[Callable[[ModelContext], Optional[str]]] = field(default=None, compare=False)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(
            name for name, present in (
                ("torch", self.torch_factory is not None),
                ("onnx", self.onnx_file is not None),
                ("keras", self.keras_factory is not None or self.saved_model is not None),
                ("tflite", self.tflite_file is not None),
            ) if present
        )
