"""Accuracy metrics, scored on the host from the outputs the runner brought back."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Union

import numpy as np

Outputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Metric:
    """A named score in its own unit (top-1 is a fraction in [0, 1])."""

    name: str  # the `metric` column
    fn: Callable[..., float]  # fn(outputs, labels) or, if needs_reference, fn(outputs, labels, reference)
    higher_is_better: bool = True  # direction used for accuracy budgets
    needs_reference: bool = False  # scored against the fp32 outputs of the same framework and target
    companions: tuple["Metric", ...] = ()  # more scores of the same outputs, each recorded in a column of its name

    def score(self, outputs: Outputs, labels: Optional[np.ndarray], reference: Optional[Outputs] = None) -> float:
        if self.needs_reference:
            if reference is None:
                raise ValueError(f"metric {self.name} needs the fp32 reference outputs, and none were measured")
            return float(self.fn(outputs, labels, reference))
        return float(self.fn(outputs, labels))

    def companion_scores(self, outputs: Outputs, labels: Optional[np.ndarray], reference: Optional[Outputs] = None) -> dict[str, float]:
        """The companions' scores by name: extra columns of the row beside `accuracy`."""
        return {m.name: m.score(outputs, labels, reference) for m in self.companions}


def _first(outputs: Outputs) -> np.ndarray:
    return next(iter(outputs.values()))


def top1(outputs: Outputs, labels: np.ndarray) -> float:
    if labels is None:
        raise ValueError("top-1 needs labels (y_eval) in the dataset")
    logits = _first(outputs)
    return float(np.mean(np.argmax(logits.reshape(len(labels), -1), axis=1) == labels))


def _embeddings(outputs: Outputs, reference: Outputs) -> tuple[np.ndarray, np.ndarray]:
    """The first output and its fp32 reference as (n, d) float64 arrays of the same shape."""
    got, ref = _first(outputs), _first(reference)
    n = len(ref)
    got, ref = np.asarray(got, dtype=np.float64).reshape(n, -1), np.asarray(ref, dtype=np.float64).reshape(n, -1)
    if got.shape != ref.shape:
        raise ValueError(f"outputs of shape {got.shape} cannot be compared with fp32 outputs of shape {ref.shape}")
    return got, ref


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_to_fp32(outputs: Outputs, labels: Optional[np.ndarray], reference: Outputs) -> float:
    """Mean over evaluation samples of cos(output, fp32 output): 1.0 is the fp32 model itself."""
    got, ref = _embeddings(outputs, reference)
    return float(np.mean(np.sum(_unit(got) * _unit(ref), axis=1)))


def nn_agreement(outputs: Outputs, labels: Optional[np.ndarray], reference: Outputs) -> float:
    """Fraction of evaluation samples whose nearest neighbour (cosine, among the other
    evaluation samples) is the same sample as with the fp32 outputs."""
    got, ref = _embeddings(outputs, reference)
    if len(ref) < 2:
        raise ValueError("nn_agreement needs at least 2 evaluation samples")

    def nearest(x: np.ndarray) -> np.ndarray:
        unit = _unit(x)
        similarity = unit @ unit.T
        np.fill_diagonal(similarity, -np.inf)  # a sample is not its own neighbour
        return np.argmax(similarity, axis=1)

    return float(np.mean(nearest(got) == nearest(ref)))


NN_AGREEMENT = Metric("nn_agreement", nn_agreement, needs_reference=True)

METRICS: dict[str, Metric] = {
    "top1": Metric("top1", top1),
    # Fidelity to fp32 (as MLPerf sets targets relative to the fp32 reference); the accuracy
    # column holds cosine_to_fp32, and the row gets an nn_agreement column beside it.
    "cosine_to_fp32": Metric("cosine_to_fp32", cosine_to_fp32, needs_reference=True, companions=(NN_AGREEMENT,)),
    "nn_agreement": NN_AGREEMENT,
}


def resolve_metric(spec: Union[str, Metric, Callable[..., float]]) -> Metric:
    """'top1', a Metric, or a user function `f(first_output, labels) -> float`.

    A plain function receives the model's first output as one array (all evaluation
    samples stacked) and the labels; build a `Metric` to see every output by name.
    """
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str):
        if spec not in METRICS:
            raise ValueError(f"unknown metric {spec!r}; known: {', '.join(METRICS)}")
        return METRICS[spec]
    if callable(spec):
        return Metric(getattr(spec, "__name__", "custom"), lambda outputs, labels: spec(_first(outputs), labels))
    raise ValueError(f"metric must be a name, a Metric or a function, not {type(spec).__name__}")
