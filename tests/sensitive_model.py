"""A digits MLP with one layer built to be very sensitive to int8 (tests of keep_float="auto").

`fc1` reads the 64 pixels of sklearn's digits, four of which arrive 1000x larger (as sensor
channels in another unit would); fc1's weights for those four are 1000x smaller, so in float
the model computes exactly what the plain MLP computes. Quantized per tensor, fc1's input
scale is set by the four huge channels and the sixty normal pixels round to zero: fc1 must
rank first and stay float, in every framework. `plain=True` is the same MLP without the huge
channels, whose static int8 loses next to nothing.
"""
from __future__ import annotations

import functools

import numpy as np

from harness.data import Dataset
from harness.models import torch_model

HUGE_CHANNELS = (27, 28, 35, 36)  # centre pixels: informative, so the model uses them
SCALE = 1000.0
SEED = 0


@functools.lru_cache(maxsize=2)
def load_data(plain: bool = False) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
    if not plain:
        x[:, HUGE_CHANNELS] *= SCALE
    order = np.random.default_rng(SEED).permutation(len(x))
    evaluation, calibration, train = order[:400], order[400:600], order[600:]
    return Dataset(name="digits-flat" + ("" if plain else "-huge-channels"), eval_inputs={"input": x[evaluation]},
                   calib_inputs={"input": x[calibration]}, eval_labels=y[evaluation], calib_labels=y[calibration],
                   train_inputs={"input": x[train]}, train_labels=y[train], source="sklearn load_digits, flattened")


def _mlp():
    import torch

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(64, 32)
            self.fc2 = torch.nn.Linear(32, 32)
            self.fc3 = torch.nn.Linear(32, 10)

        def forward(self, x):
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    return MLP()


@functools.lru_cache(maxsize=2)
def _state(plain: bool) -> dict:
    """Trained on the plain pixels (seeded, one thread, full batch), then fc1 compensates the huge channels."""
    import torch

    data = load_data(plain=True)
    torch.manual_seed(SEED)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = _mlp()
        x, y = torch.from_numpy(data.train_inputs["input"]), torch.from_numpy(data.train_labels)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(300):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if not plain:
        state["fc1.weight"][:, list(HUGE_CHANNELS)] /= SCALE
    return state


def build(plain: bool = False):
    model = _mlp()
    model.load_state_dict(_state(plain))
    return model.eval()


sensitive_mlp = torch_model("sensitive-mlp", build, data=load_data)
plain_mlp = torch_model("plain-mlp", functools.partial(build, plain=True), data=functools.partial(load_data, plain=True))
