"""Two models as users bring them through `torch_model()`: an LSTM sequence classifier and a
small MobileNet-style CNN (BatchNorm, depthwise-separable convolutions), both trained on
scikit-learn's real digits (the LSTM reads each 8x8 image as 8 rows of 8 pixels).

Training is seeded and single-threaded, so the weights (and the artifact cache keys that
hash them) are the same in every process; it takes a few seconds each."""
from __future__ import annotations

import functools

import numpy as np

from harness.data import Dataset
from harness.models import torch_model
from harness.models.digits_cnn import load_data as digits_data

EPOCHS = 12


@functools.lru_cache(maxsize=None)
def digits_sequences() -> Dataset:
    """digits-cnn's split, each image as a sequence of 8 rows: (N, 8, 8)."""
    data = digits_data()
    rows = lambda inputs: {"input": np.ascontiguousarray(inputs["input"][:, 0])}  # noqa: E731
    return Dataset(name="digits-rows", eval_inputs=rows(data.eval_inputs), calib_inputs=rows(data.calib_inputs),
                   eval_labels=data.eval_labels, train_inputs=rows(data.train_inputs), train_labels=data.train_labels,
                   source=data.source)


def _trained(module, data: Dataset):
    import torch

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a fixed reduction order: the same weights in every process
    try:
        x = torch.from_numpy(data.train_inputs["input"])
        y = torch.from_numpy(data.train_labels)
        optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
        order = torch.Generator().manual_seed(0)
        module.train()
        for _ in range(EPOCHS):
            for idx in torch.randperm(len(y), generator=order).split(64):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(module(x[idx]), y[idx]).backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return module.eval()


def build_lstm():
    import torch

    class LSTMClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(input_size=8, hidden_size=64, batch_first=True)
            self.head = torch.nn.Linear(64, 10)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[:, -1])

    torch.manual_seed(0)
    return _trained(LSTMClassifier(), digits_sequences())


def build_mobilenet():
    import torch
    from torch import nn

    def separable(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class TinyMobileNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.blocks = nn.Sequential(separable(16, 32, 1), separable(32, 64, 2))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(64, 10)

        def forward(self, x):
            return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))

    torch.manual_seed(0)
    return _trained(TinyMobileNet(), digits_data())


lstm = torch_model("digits-lstm", build_lstm, data=digits_sequences)
mobilenet = torch_model("digits-mobilenet", build_mobilenet, data=digits_data)


def build_sparse_head():
    """An MLP whose head multiplies a sparsified hidden layer (torch.sparse.mm): Inductor has no
    lowering for the sparse matmul and leaves aten::_sparse_addmm to AOTInductor's proxy
    executor, where it fails (torch 2.13): the AOTI row must name it."""
    import torch

    class SparseHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(64, 32)
            self.head = torch.nn.Parameter(torch.randn(32, 10) * 0.1)

        def forward(self, x):
            h = torch.relu(self.hidden(x.flatten(1)))
            return torch.sparse.mm(h.to_sparse(), self.head)

    torch.manual_seed(0)
    return _trained(SparseHead(), digits_data())


sparse_head = torch_model("digits-sparse-head", build_sparse_head, data=digits_data)


@functools.lru_cache(maxsize=None)
def soft_clip_op():
    """The model's own operator, `quantbench_user::soft_clip` (torch.library.custom_op, registered
    once per process): AOTInductor calls it by name through the dispatcher."""
    import torch

    @torch.library.custom_op("quantbench_user::soft_clip", mutates_args=(), schema="(Tensor x) -> Tensor")
    def soft_clip(x):
        return torch.tanh(x / 3) * 3

    @soft_clip.register_fake
    def _(x):
        return torch.empty_like(x)

    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (1 - torch.tanh(x / 3) ** 2)

    soft_clip.register_autograd(backward, setup_context=lambda ctx, inputs, output: ctx.save_for_backward(inputs[0]))

    return torch.ops.quantbench_user.soft_clip


def build_custom_op_mlp():
    import torch

    clip = soft_clip_op()

    class ClippedMLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(64, 32)
            self.head = torch.nn.Linear(32, 10)

        def forward(self, x):
            return self.head(clip(torch.relu(self.hidden(x.flatten(1)))))

    torch.manual_seed(0)
    return _trained(ClippedMLP(), digits_data())


custom_op_mlp = torch_model("digits-custom-op", build_custom_op_mlp, data=digits_data)
