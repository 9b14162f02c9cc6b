"""A Keras model as code: an architecture builder any process can import, and how to train it.

The builder takes the `keras` module as its argument, so the same code builds the model
under Keras 3 (this process: training, TFLite conversion) and under tf-keras (the
TF_USE_LEGACY_KERAS=1 subprocess that quantization-aware training needs, see
harness/quantize/tflite_qat_keras.py). Weights move between the two as a plain list of
arrays, which both Keras versions read and write in the same order.

Training is seeded with TensorFlow's op determinism on, happens once, and the weights are
cached under the harness cache like the torch weights of the same model.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from harness.artifacts import sha256_file
from harness.data import Dataset
from harness.models.spec import ModelContext


def load_builder(reference: str) -> Callable[[Any], Any]:
    """`package.module:function` -> the function."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise ValueError(f"Keras builder {reference!r} must look like 'package.module:function'")
    return getattr(importlib.import_module(module_name), attr)


def model_inputs(model, inputs: Mapping[str, np.ndarray]):
    """The arrays in the form model.fit/predict take: one array, or a list in the model's input order."""
    names = [t.name.split(":")[0] for t in model.inputs]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ValueError(f"the Keras model's inputs are named {names} but the data has {sorted(inputs)}; "
                         f"name the keras.Input layers after the dataset's inputs")
    arrays = [inputs[n] for n in names]
    return arrays[0] if len(arrays) == 1 else arrays


def _tensorflow_version() -> str:
    for dist in ("tensorflow", "tensorflow-cpu"):  # the same module ships in either distribution
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "missing"


@dataclass(frozen=True)
class KerasFactory:
    """`keras_factory` of a ModelSpec: called with a ModelContext, returns the trained fp32 model."""

    builder: str  # "package.module:function"; function(keras) returns the uncompiled model (Keras 3 and tf-keras alike)
    cache_name: str  # file-name stem of the cached weights; put the model's version in it
    epochs: int = 40  # fp32 training epochs
    batch_size: int = 32  # training batch size
    learning_rate: float = 2e-3  # Adam learning rate of the fp32 training
    seed: int = 0  # keras.utils.set_random_seed, for weights init and batch order
    from_logits: bool = True  # the model outputs logits (SparseCategoricalCrossentropy on integer labels)
    input_layout: str = "NCHW"  # layout of the image inputs the model takes (it may transpose inside)

    def build(self, keras) -> Any:
        return load_builder(self.builder)(keras)

    def weights_path(self, ctx: ModelContext) -> Path:
        """The cached trained weights (library versions from their metadata: no TensorFlow import)."""
        name = (f"{self.cache_name}-{ctx.dataset.fingerprint()}-keras{importlib.metadata.version('keras')}"
                f"-tf{_tensorflow_version()}.weights.npz")
        return Path(ctx.cache_dir) / name

    def identity(self, ctx: ModelContext) -> Optional[str]:
        """The cached weights file's hash once it exists (so a run with every artifact cached never
        imports TensorFlow on the host), else None."""
        path = self.weights_path(ctx)
        return sha256_file(path) if path.is_file() else None

    def train(self, keras, model, dataset: Dataset, epochs: int, learning_rate: float,
              progress: Callable[[str], None] = lambda m: None, what: str = "training") -> list[float]:
        """Deterministic fit on the train split; returns the loss per epoch. A NaN loss is an error."""
        import tensorflow as tf

        if dataset.train_inputs is None or dataset.train_labels is None:
            raise ValueError(f"dataset {dataset.name!r} has no train split (train_inputs/train_labels) to train the Keras model on")
        keras.utils.set_random_seed(self.seed)
        tf.config.experimental.enable_op_determinism()
        model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=self.from_logits))
        report = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: progress(f"{what} epoch {epoch + 1}/{epochs}"))
        history = model.fit(model_inputs(model, dataset.train_inputs), dataset.train_labels, batch_size=self.batch_size,
                            epochs=epochs, shuffle=True, verbose=0, callbacks=[report, keras.callbacks.TerminateOnNaN()])
        losses = [float(v) for v in history.history.get("loss", [])]
        if len(losses) < epochs or not np.all(np.isfinite(losses)):
            raise RuntimeError(f"{what} diverged: loss per epoch {losses} (NaN or Inf); lower the learning rate")
        return losses

    def __call__(self, ctx: ModelContext):
        import keras

        path = self.weights_path(ctx)
        keras.utils.set_random_seed(self.seed)  # before the build: the initial weights are drawn there
        model = self.build(keras)
        if path.is_file():
            with np.load(path) as npz:
                model.set_weights([npz[f"w{i}"] for i in range(len(npz.files))])
            return model
        self.train(keras, model, ctx.dataset, self.epochs, self.learning_rate, ctx.progress, what="Keras training")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        np.savez(tmp, **{f"w{i}": w for i, w in enumerate(model.get_weights())})
        os.replace(tmp, path)  # atomic: a concurrent run never reads half a file
        return model
