"""The fake-quantized fine-tune every torch QAT recipe shares (qat_torch.qat_convert, behind the
eager .pt2, the AOTInductor package, the ExecuTorch program and the ONNX export; and
tflite_torch.build_qat through litert-torch's quantizer, which takes "classify" only: its distill
on MiniLM was slow and gained nothing, tflite_torch.DISTILL_NA), with the objective the dataset
declares (Dataset.qat_objective, on the split Dataset.qat_split, at Dataset.qat_learning_rate or
the recipe's):

  - "classify": cross-entropy on the split's integer labels (digits-cnn's train split);
  - "distill": self-distillation for a model whose data has no labels (MiniLM's sentences): the
    targets are the fp32 model's own outputs on the split's inputs, and the loss is the squared
    L2 distance of the fake-quantized model's outputs to them (summed over an output, mean over
    the batch). For L2-normalized embeddings that distance is exactly 2 * (1 - cosine), the
    metric they are scored by, and for logits it also keeps their scale, which a cosine loss
    would leave free. Summed over an output's features (MiniLM's 384) rather than averaged, its
    gradients stay far above Adam's epsilon (a per-element mean divides them by the output size).

The caller holds deterministic_torch (seed, one thread): batch order comes from a generator of
the fine-tune's own. A non-finite loss stops it with QATDiverged: the case becomes `error`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from harness.quantize.base import BuildContext, NotApplicable, require_trainable


class QATDiverged(RuntimeError):
    """The fine-tuning loss became NaN/Inf; no model is produced."""


@dataclass(frozen=True)
class TrainingSet:
    """The inputs a QAT fine-tune sees and what its outputs are pulled towards."""

    inputs: tuple  # torch tensors in the dataset's input order, samples on axis 0
    targets: Any  # int64 labels (classify) or the fp32 model's outputs (distill), a torch tensor
    objective: str  # Dataset.qat_objective
    split: str  # Dataset.qat_split
    learning_rate: Optional[float] = None  # Dataset.qat_learning_rate: None, the recipe's own

    def rate(self, recipe_rate: float) -> float:
        """The learning rate the fine-tune uses: the dataset's where it names one, else the recipe's."""
        return recipe_rate if self.learning_rate is None else self.learning_rate

    def __len__(self) -> int:
        return int(len(self.targets))

    def facts(self) -> dict[str, Any]:
        """For the manifest: what the fine-tune trained on and towards."""
        facts = {"objective": self.objective, "split": self.split, "samples": len(self)}
        return dict(facts, learning_rate=self.learning_rate) if self.learning_rate is not None else facts


def _split_inputs(ctx: BuildContext, mode: str):
    data = ctx.dataset
    if data.qat_split == "calib":
        return data.calib_inputs, data.calib_labels
    if data.train_inputs is None:
        have = "labels" if data.qat_objective == "classify" else "inputs (labels are not needed to distill)"
        raise NotApplicable(
            f"{mode} fine-tunes on a train split and dataset {data.name!r} has none (give x_train/y_train in the .npz, "
            f"or train {have} in the Dataset; a dataset whose calibration split is its only non-evaluation data can "
            "set qat_split='calib')"
        )
    return data.train_inputs, data.train_labels


def training_set(ctx: BuildContext, mode: str = "qat-int8", batch_size: int = 64) -> TrainingSet:
    """The split the dataset names, with its labels (classify) or the fp32 model's outputs on it
    (distill, computed in batches of `batch_size` under no_grad). NotApplicable, with the reason,
    where the model is not trainable or the data cannot serve the objective. Call it inside
    deterministic_torch: the fp32 outputs are then the one-thread ones on every run."""
    import torch

    require_trainable(ctx.spec, mode)
    data = ctx.dataset
    inputs, labels = _split_inputs(ctx, mode)
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in data.input_names)
    if data.qat_objective == "distill":
        module = ctx.torch_module.eval()
        with torch.no_grad():
            outputs = [_first(module(*(t[i:i + batch_size] for t in tensors)))
                       for i in range(0, len(tensors[0]), batch_size)]
        return TrainingSet(tensors, torch.cat(outputs).detach().clone(), "distill", data.qat_split, data.qat_learning_rate)
    if labels is None:
        raise NotApplicable(f"{mode} fine-tunes a classifier with cross-entropy on the {data.qat_split} split's labels and "
                            f"dataset {data.name!r} has none; a model without labels can set qat_objective='distill' "
                            "(match the fp32 model's outputs)")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise NotApplicable(
            f"{mode} here fine-tunes a classifier with cross-entropy on integer labels; dataset {data.name!r} "
            f"has {labels.dtype} {data.qat_split} labels (qat_objective='distill' matches the fp32 outputs instead)"
        )
    return TrainingSet(tensors, torch.from_numpy(labels.astype(np.int64)), "classify", data.qat_split, data.qat_learning_rate)


def _first(out):
    import torch

    return out if isinstance(out, torch.Tensor) else out[0]


def loss_function(objective: str) -> Callable:
    import torch

    if objective == "classify":
        return torch.nn.CrossEntropyLoss()

    def distance(out, target):  # squared L2 per sample, mean over the batch (module docstring: why)
        return (out - target).pow(2).flatten(1).sum(1).mean()

    return distance


def fine_tune(prepared, data: TrainingSet, *, epochs: int, learning_rate: float, batch_size: int, seed: int,
              progress: Callable[[str], None], what: str) -> list[float]:
    """Adam on `prepared` (a PT2E graph with fake quantization) for `epochs` passes over `data`
    in a seeded batch order, at the dataset's learning rate if it names one, else
    `learning_rate` (the recipe's). Returns each epoch's mean loss over its samples. `what`
    names the model in the QATDiverged message."""
    import torch

    learning_rate = data.rate(learning_rate)
    optimizer = torch.optim.Adam(prepared.parameters(), lr=learning_rate)
    loss_fn = loss_function(data.objective)
    generator = torch.Generator().manual_seed(seed)
    epoch_losses = []
    for epoch in range(epochs):
        progress(f"QAT epoch {epoch + 1}/{epochs} ({data.objective})")
        total = 0.0
        for step, idx in enumerate(torch.randperm(len(data), generator=generator).split(batch_size)):
            optimizer.zero_grad()
            loss = loss_fn(_first(prepared(*(x[idx] for x in data.inputs))), data.targets[idx])
            if not torch.isfinite(loss):
                raise QATDiverged(
                    f"QAT of {what} diverged: loss became {loss.item()} at epoch {epoch + 1} step {step + 1} "
                    f"(learning_rate={learning_rate:g}, objective {data.objective}); lower the QAT learning rate or "
                    f"check the {data.split} split for NaN/Inf"
                )
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        epoch_losses.append(round(total / len(data), 6))
    return epoch_losses
