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

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Optional, TypeVar, Union

import numpy as np

from harness import intervals
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
    # The 95% interval of the score (harness/intervals.py): "wilson" (a fraction of passing samples,
    # per_sample gives 0/1), "bootstrap" (of per_sample's mean, else by re-scoring resampled sets), "none".
    interval: str = "bootstrap"
    per_sample: Optional[Callable[..., np.ndarray]] = None  # same arguments as fn; one value per sample, mean = score

    def score(self, outputs: Outputs, labels: Optional[np.ndarray], reference: Optional[Outputs] = None) -> float:
        value = self.score_or_none(outputs, labels, reference)
        if value is None:
            raise ValueError(f"metric {self.name} does not apply to these outputs (e.g. top5 with 5 classes or fewer)")
        return value

    def score_or_none(self, outputs: Outputs, labels: Optional[np.ndarray], reference: Optional[Outputs] = None) -> Optional[float]:
        """The score, or None where the metric does not apply (a companion then gets no column)."""
        if self.needs_reference:
            if reference is None:
                raise ValueError(f"metric {self.name} needs the fp32 reference outputs, and none were measured")
            value = self.fn(outputs, labels, reference)
        else:
            value = self.fn(outputs, labels)
        return None if value is None else float(value)

    def confidence_interval(self, outputs: Outputs, labels: Optional[np.ndarray],
                            reference: Optional[Outputs] = None) -> Optional[tuple[float, float]]:
        """The score's 95% interval over the evaluation samples, or None where there is none."""
        args = (reference,) if self.needs_reference else ()
        if self.interval == "none":
            return None
        if self.per_sample is not None:
            values = np.asarray(self.per_sample(outputs, labels, *args), dtype=np.float64)
            if self.interval == "wilson":
                return intervals.wilson(float(values.sum()), len(values))
            return intervals.bootstrap_mean(values)
        n = len(_first(outputs))

        def take(arrays: Optional[Outputs], idx: np.ndarray):
            return None if arrays is None else {k: np.asarray(v)[idx] for k, v in arrays.items()}

        return intervals.bootstrap_rescore(
            lambda idx: self.score_or_none(take(outputs, idx), None if labels is None else np.asarray(labels)[idx],
                                           take(reference, idx)), n)

    def with_companions(self, *companions: "Metric") -> "Metric":
        return replace(self, companions=tuple(companions))

    @property
    def direction(self) -> str:
        return direction_text(self.higher_is_better)

    def companion_scores(self, outputs: Outputs, labels: Optional[np.ndarray], reference: Optional[Outputs] = None) -> dict[str, float]:
        """The companions' scores by name: extra columns of the row beside `accuracy`."""
        scores = {m.name: m.score_or_none(outputs, labels, reference) for m in self.companions}
        return {name: value for name, value in scores.items() if value is not None}


def direction_text(higher_is_better: bool) -> str:
    return "higher is better" if higher_is_better else "lower is better"


def accuracy_loss(value: Any, baseline: Any, higher_is_better: bool = True) -> Optional[float]:
    """Points (100 x the metric's unit) lost going from `baseline` to `value` in the metric's
    direction: positive is worse, negative is better; None when either side is missing."""
    a, b = number(value), number(baseline)
    if a is None or b is None:
        return None
    return 100.0 * ((b - a) if higher_is_better else (a - b))


def metric(fn: Optional[F] = None, *, name: Optional[str] = None, higher_is_better: bool = True,
           all_outputs: bool = False):
    """Declare a plain metric function's direction (and optionally its column name):
    `@metric(higher_is_better=False)`. With `all_outputs=True` the function receives every
    output by name (a dict of arrays) instead of the first output alone. The function is
    returned unchanged, with attributes set that `resolve_metric` reads."""
    def mark(f: F) -> F:
        f.higher_is_better = bool(higher_is_better)  # type: ignore[attr-defined]
        f.metric_name = name or getattr(f, "__name__", "custom")  # type: ignore[attr-defined]
        f.all_outputs = bool(all_outputs)  # type: ignore[attr-defined]
        return f
    return mark(fn) if fn is not None else mark


def _first(outputs: Outputs) -> np.ndarray:
    return next(iter(outputs.values()))


def _scores(outputs: Outputs, labels: Optional[np.ndarray], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The first output as (n, classes) scores and the labels as integers, checked against each other."""
    if labels is None:
        raise ValueError(f"{metric} needs labels (y_eval) in the dataset")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{metric} needs one integer class label per evaluation sample; y_eval is {labels.dtype} "
                         f"of shape {labels.shape}")
    scores = np.asarray(_first(outputs))
    if len(scores) != len(labels):
        raise ValueError(f"{metric}: the model gave {len(scores)} outputs for {len(labels)} labels")
    return scores.reshape(len(labels), -1), labels


def predicted_classes(outputs: Outputs, labels: Optional[np.ndarray], metric: str = "top1") -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, label) per sample: the argmax of the first output."""
    scores, labels = _scores(outputs, labels, metric)
    return np.argmax(scores, axis=1), labels


def top1_hits(outputs: Outputs, labels: np.ndarray) -> np.ndarray:
    predicted, labels = predicted_classes(outputs, labels, "top1")
    return (predicted == labels).astype(np.float64)


def top1(outputs: Outputs, labels: np.ndarray) -> float:
    return float(np.mean(top1_hits(outputs, labels)))


def top5_hits(outputs: Outputs, labels: np.ndarray) -> Optional[np.ndarray]:
    scores, labels = _scores(outputs, labels, "top5")
    if scores.shape[1] <= 5:
        return None
    best = np.argpartition(-scores, 5, axis=1)[:, :5]
    return np.any(best == labels[:, None], axis=1).astype(np.float64)


def top5(outputs: Outputs, labels: np.ndarray) -> Optional[float]:
    """Fraction of samples whose label is among the five highest scores; None (no column)
    with five classes or fewer, where it is always 1."""
    hits = top5_hits(outputs, labels)
    return None if hits is None else float(np.mean(hits))


def _macro(which: int, name: str) -> Callable[[Outputs, np.ndarray], float]:
    """Macro average over the classes present in the labels or the predictions, as scikit-learn's
    precision_recall_fscore_support(average="macro", zero_division=0) computes it, in numpy: the
    host scores every case with these companions, and scikit-learn's import and input checks
    cost more than the case's own bookkeeping (tests/test_metrics.py compares the two)."""

    def score(outputs: Outputs, labels: np.ndarray) -> float:
        predicted, labels = predicted_classes(outputs, labels, name)
        classes, index = np.unique(np.concatenate([labels, predicted]), return_inverse=True)
        truth, guess = index[:len(labels)], index[len(labels):]
        true_positives = np.bincount(truth[truth == guess], minlength=len(classes)).astype(np.float64)
        predicted_counts = np.bincount(guess, minlength=len(classes)).astype(np.float64)
        actual_counts = np.bincount(truth, minlength=len(classes)).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_class = (
                np.where(predicted_counts > 0, true_positives / predicted_counts, 0.0),  # precision
                np.where(actual_counts > 0, true_positives / actual_counts, 0.0),  # recall
                # F1 = 2 TP / (2 TP + FP + FN); a class in the union has a non-zero denominator
                2 * true_positives / (predicted_counts + actual_counts),
            )[which]
        return float(np.mean(per_class))

    score.__name__ = name
    return score


precision_macro, recall_macro, f1_macro = (_macro(i, n) for i, n in enumerate(("precision_macro", "recall_macro", "f1_macro")))


def _errors(outputs: Outputs, labels: Optional[np.ndarray], metric: str) -> np.ndarray:
    """First output minus the targets (y_eval), same number of values per sample."""
    if labels is None:
        raise ValueError(f"{metric} needs targets (y_eval) in the dataset")
    got = np.asarray(_first(outputs), dtype=np.float64)
    want = np.asarray(labels, dtype=np.float64)
    if len(got) != len(want) or got.size != want.size:
        raise ValueError(f"{metric}: outputs of shape {got.shape} cannot be compared with targets of shape {want.shape}")
    return got.reshape(len(want), -1) - want.reshape(len(want), -1)


def squared_errors(outputs: Outputs, labels: np.ndarray) -> np.ndarray:
    return np.mean(np.square(_errors(outputs, labels, "mse")), axis=1)


def absolute_errors(outputs: Outputs, labels: np.ndarray) -> np.ndarray:
    return np.mean(np.abs(_errors(outputs, labels, "mae")), axis=1)


def mse(outputs: Outputs, labels: np.ndarray) -> float:
    """Mean squared error of the first output against y_eval (lower is better)."""
    return float(np.mean(squared_errors(outputs, labels)))


def mae(outputs: Outputs, labels: np.ndarray) -> float:
    """Mean absolute error of the first output against y_eval (lower is better)."""
    return float(np.mean(absolute_errors(outputs, labels)))


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


def cosines_to_fp32(outputs: Outputs, labels: Optional[np.ndarray], reference: Outputs) -> np.ndarray:
    got, ref = _embeddings(outputs, reference)
    return np.sum(_unit(got) * _unit(ref), axis=1)


def cosine_to_fp32(outputs: Outputs, labels: Optional[np.ndarray], reference: Outputs) -> float:
    """Mean over evaluation samples of cos(output, fp32 output): 1.0 is the fp32 model itself."""
    return float(np.mean(cosines_to_fp32(outputs, labels, reference)))


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


NN_AGREEMENT = Metric("nn_agreement", nn_agreement, needs_reference=True, interval="none")  # neighbours change when samples repeat

# Classification: any one of these as `accuracy`, the others as companion columns of the row.
_CLASSIFICATION = (Metric("top1", top1, interval="wilson", per_sample=top1_hits),
                   Metric("top5", top5, interval="wilson", per_sample=top5_hits),
                   *(Metric(fn.__name__, fn) for fn in (precision_macro, recall_macro, f1_macro)))
# Regression errors: lower is better (budgets, deltas and gates read higher_is_better).
_ERRORS = (Metric("mse", mse, higher_is_better=False, per_sample=squared_errors),
           Metric("mae", mae, higher_is_better=False, per_sample=absolute_errors))


def _with_the_others(family: tuple[Metric, ...]) -> dict[str, Metric]:
    return {m.name: m.with_companions(*(o for o in family if o.name != m.name)) for m in family}


METRICS: dict[str, Metric] = {
    **_with_the_others(_CLASSIFICATION),
    **_with_the_others(_ERRORS),
    # Fidelity to fp32 (as MLPerf sets targets relative to the fp32 reference); the accuracy
    # column holds cosine_to_fp32, and the row gets an nn_agreement column beside it.
    "cosine_to_fp32": Metric("cosine_to_fp32", cosine_to_fp32, needs_reference=True, companions=(NN_AGREEMENT,),
                             per_sample=cosines_to_fp32),
    "nn_agreement": NN_AGREEMENT,
}


def resolve_metric(spec: Union[str, Metric, Callable[..., float]]) -> Metric:
    """'top1', a Metric, or a user function `f(first_output, labels) -> float`.

    A plain function receives the model's first output as one array (all evaluation
    samples stacked) and the labels; `@metric(all_outputs=True)` (or a `Metric`) gives it
    every output by name. Its
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
        if getattr(spec, "all_outputs", False):
            return Metric(name, lambda outputs, labels: spec(dict(outputs), labels), higher_is_better=bool(higher))
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
