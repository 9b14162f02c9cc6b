"""digits-cnn: a small CNN trained on scikit-learn's 1,797 real handwritten 8x8 digits.

Training is seeded and deterministic, takes a few seconds, and happens once: the fp32
weights are cached under the harness cache and reused by every later run.
"""
from __future__ import annotations

import functools
import gzip
import importlib.metadata
import importlib.util
import os
from pathlib import Path
from typing import Optional

import numpy as np

from harness.artifacts import sha256_file
from harness.data import Dataset
from harness.models.keras_factory import KerasFactory
from harness.models.spec import ModelContext, ModelSpec
from harness.training import deterministic_torch

SEED = 0
N_EVAL = 500
N_CALIB = 200
EPOCHS = 40
BATCH = 32
LEARNING_RATE = 2e-3


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's load_digits as (images (N, 8, 8), labels): read from the csv it ships, as
    load_digits does, without importing scikit-learn (and SciPy) into every run."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt", encoding="utf-8") as f:
                data = np.loadtxt(f, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits  # another layout: the public function

    digits = load_digits()
    return digits.images, digits.target


@functools.lru_cache(maxsize=1)
def load_data() -> Dataset:
    """Fixed, seeded split of `load_digits` into train / calibration / held-out evaluation."""
    images, target = _digits()
    x = (images.astype(np.float32) / 16.0)[:, None, :, :]  # (N, 1, 8, 8) in [0, 1]
    y = target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    eval_idx, calib_idx, train_idx = np.split(order, [N_EVAL, N_EVAL + N_CALIB])
    return Dataset(
        name="sklearn.load_digits",
        eval_inputs={"input": x[eval_idx]},
        calib_inputs={"input": x[calib_idx]},
        eval_labels=y[eval_idx],
        train_inputs={"input": x[train_idx]},
        train_labels=y[train_idx],
        calib_labels=y[calib_idx],
        source="scikit-learn load_digits (UCI optical recognition of handwritten digits, 1,797 images)",
    )


def build_torch_module():
    import torch.nn as nn

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.relu2 = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.flatten = nn.Flatten()
            self.fc1 = nn.Linear(32 * 4 * 4, 64)
            self.relu3 = nn.ReLU()
            self.fc2 = nn.Linear(64, 10)

        def forward(self, x):
            x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
            return self.fc2(self.relu3(self.fc1(self.flatten(x))))

    return DigitsCNN()


def train_torch(module, dataset: Dataset, epochs: int = EPOCHS, progress=lambda m: None):
    """Deterministic training: fixed seed, one thread, deterministic algorithms, fixed batch
    order (call it inside `deterministic_torch`, with the module built there too: its initial
    weights come from the global generator)."""
    import torch

    x = torch.from_numpy(dataset.train_inputs["input"])
    y = torch.from_numpy(dataset.train_labels)
    optimizer = torch.optim.Adam(module.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    module.train()
    for epoch in range(epochs):
        progress(f"training epoch {epoch + 1}/{epochs}")
        for idx in torch.randperm(len(x), generator=generator).split(BATCH):
            optimizer.zero_grad()
            loss = loss_fn(module(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
    return module.eval()


def trained_torch_module(dataset: Dataset, progress=lambda m: None):
    """digits-cnn built and trained from SEED: the same weights in every fresh process."""
    with deterministic_torch(SEED):
        module = build_torch_module()  # its initial weights come from the seeded global generator
        return train_torch(module, dataset, progress=progress)


def weights_path(ctx: ModelContext) -> Path:
    """Where the trained fp32 torch weights are cached (torch's version from its metadata: no import)."""
    return Path(ctx.cache_dir) / (f"digits-cnn-v{digits_cnn.version}-{ctx.dataset.fingerprint()}"
                                  f"-torch{importlib.metadata.version('torch')}.pt")


def torch_identity(ctx: ModelContext) -> Optional[str]:
    """The cached weights file's hash, once it exists (ModelSpec.torch_identity)."""
    path = weights_path(ctx)
    return sha256_file(path) if path.is_file() else None


def torch_factory(ctx: ModelContext):
    """The trained fp32 module, from the cache when it was trained before."""
    import torch

    path = weights_path(ctx)
    if path.is_file():
        module = build_torch_module()
        module.load_state_dict(torch.load(path, weights_only=True))
        return module.eval()
    module = trained_torch_module(ctx.dataset, progress=ctx.progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(module.state_dict(), tmp)
    os.replace(tmp, path)  # atomic: a concurrent run never reads half a file
    return module


def build_keras_model(keras):
    """The same architecture in Keras, for TFLite's own path. It takes the dataset's NCHW
    input and transposes to NHWC inside (a TRANSPOSE op in the .tflite), so every framework
    is fed the same arrays. `keras` is Keras 3 or tf-keras (the QAT subprocess)."""
    layers = keras.layers
    inputs = keras.Input(shape=(1, 8, 8), name="input")
    x = layers.Permute((2, 3, 1), name="to_nhwc")(inputs)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="fc1")(x)
    outputs = layers.Dense(10, name="fc2")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


keras_factory = KerasFactory(
    builder="harness.models.digits_cnn:build_keras_model",
    cache_name="digits-cnn-v1-keras",
    epochs=EPOCHS,
    batch_size=BATCH,
    learning_rate=LEARNING_RATE,
    seed=SEED,
    input_layout="NCHW",
)


digits_cnn = ModelSpec(
    name="digits-cnn",
    version="1",
    data=load_data,
    metric="top1",
    torch_factory=torch_factory,
    torch_identity=torch_identity,
    keras_factory=keras_factory,
    sensitive_layers=("conv1", "fc2"),  # first conv and last linear (same names in torch and Keras)
    description="2-conv CNN on sklearn load_digits (8x8 grey images, 10 classes)",
)
