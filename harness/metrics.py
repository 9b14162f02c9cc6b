"""Accuracy metrics, scored on the host from the outputs the runner brought back.

Every metric has a direction. `Metric(..., higher_is_better=False)` declares an error-like
score (MSE, WER, perplexity); a plain function declares it with the `@metric` decorator:

    @metric(higher_is_better=False)
    def mean_squared_error(predictions, targets) -> float: ...

The direction is recorded in each row (`higher_is_better`) and everything that judges an
accuracy follows it: the budget, the over-budget verdict, the history gate, `recommend`
and the dashboard. `accuracy_delta` itself stays the plain difference (this - fp32, in the
metric's unit); `accuracy_loss()` turns it into points lost in the metric's direction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, TypeVar, Union

import numpy as np

from harness.values import number, plain

Outputs = Mapping[str, np.ndarray]
F = TypeVar("F", bound=Callable[..., float])


@dataclass(frozen=True)
class Metric:
    """A named score in its own unit (top-1 is a fraction in [0, 1]) and its direction."""

    name: str  # the `metric` column
    fn: Callable[..., float]  # fn(outputs, labels) or, if needs_reference, fn(outputs, labels, reference)
    higher_is_better: bool = True  # False for error-like scores: a rise is a loss (budgets, gates, recommend)
    needs_reference: bool = False  # scored against the fp32 outputs of the same framework and target
    companions: tuple["Metric", ...] = ()  # more scores of the same outputs, each recorded in a column of its name

    def score(self, outputs: Outputs, labels: Optional[np.ndarray], reference: Optional[Outputs] = None) -> float:
        if self.needs_reference:
            if reference is None:
                raise ValueError(f"metric {self.name} needs the fp32 reference outputs, and none were measured")
            return float(self.fn(outputs, labels, reference))
        return float(self.fn(outputs, labels))

    @property
    def direction(self) -> str:
        return direction_text(self.higher_is_better)

    def companion_scores(self, outputs: Outputs, labels: Optional[np.ndarray], reference: Optional[Outputs] = None) -> dict[str, float]:
        """The companions' scores by name: extra columns of the row beside `accuracy`."""
        return {m.name: m.score(outputs, labels, reference) for m in self.companions}


def direction_text(higher_is_better: bool) -> str:
    return "higher is better" if higher_is_better else "lower is better"


def accuracy_loss(value: Any, baseline: Any, higher_is_better: bool = True) -> Optional[float]:
    """Points (100 x the metric's unit) lost going from `baseline` to `value` in the metric's
    direction: positive is worse, negative is better; None when either side is missing."""
    a, b = number(value), number(baseline)
    if a is None or b is None:
        return None
    return 100.0 * ((b - a) if higher_is_better else (a - b))


def metric(fn: Optional[F] = None, *, name: Optional[str] = None, higher_is_better: bool = True):
    """Declare a plain metric function's direction (and optionally its column name):
    `@metric(higher_is_better=False)`. The function is returned unchanged, with the
    attributes `higher_is_better` and `metric_name` set, which `resolve_metric` reads."""
    def mark(f: F) -> F:
        f.higher_is_better = bool(higher_is_better)  # type: ignore[attr-defined]
        f.metric_name = name or getattr(f, "__name__", "custom")  # type: ignore[attr-defined]
        return f
    return mark(fn) if fn is not None else mark


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
    samples stacked) and the labels; build a `Metric` to see every output by name. Its
    direction is higher-is-better unless declared with `@metric(higher_is_better=False)`.
    """
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str):
        if spec not in METRICS:
            raise ValueError(f"unknown metric {spec!r}; known: {', '.join(METRICS)}")
        return METRICS[spec]
    if callable(spec):
        name = getattr(spec, "metric_name", None) or getattr(spec, "__name__", "custom")
        higher = getattr(spec, "higher_is_better", True)
        if not isinstance(higher, (bool, np.bool_)):
            raise ValueError(f"metric {name}: higher_is_better must be True or False, not {higher!r}")
        return Metric(name, lambda outputs, labels: spec(_first(outputs), labels), higher_is_better=bool(higher))
    raise ValueError(f"metric must be a name, a Metric or a function, not {type(spec).__name__}")


def row_higher_is_better(row: Mapping[str, Any]) -> bool:
    """A stored row's direction: its `higher_is_better` column, else the built-in metric of
    that name (rows written before the column existed), else higher-is-better."""
    value = plain(row.get("higher_is_better"))
    if value is not None:
        return bool(value)
    known = METRICS.get(str(row.get("metric")))
    return known.higher_is_better if known is not None else True
