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

    def score(self, outputs: Outputs, labels: Optional[np.ndarray], reference: Optional[Outputs] = None) -> float:
        if self.needs_reference:
            if reference is None:
                raise ValueError(f"metric {self.name} needs the fp32 reference outputs, and none were measured")
            return float(self.fn(outputs, labels, reference))
        return float(self.fn(outputs, labels))


def _first(outputs: Outputs) -> np.ndarray:
    return next(iter(outputs.values()))


def top1(outputs: Outputs, labels: np.ndarray) -> float:
    if labels is None:
        raise ValueError("top-1 needs labels (y_eval) in the dataset")
    logits = _first(outputs)
    return float(np.mean(np.argmax(logits.reshape(len(labels), -1), axis=1) == labels))


METRICS: dict[str, Metric] = {
    "top1": Metric("top1", top1),
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
