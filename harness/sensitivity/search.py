"""Per-layer sensitivity, and the search for the smallest set of float layers within a budget.

Framework-neutral: a Probe (probe.py) builds a quantized model with a given set of layers
kept float, using the framework's own quantizer, and runs it on the tuning data; everything
here is the same for onnxruntime, LiteRT and torch.

Per layer (on the tuning split, never the evaluation split):
  - `sqnr_db`: SQNR of the layer's output against float in the all-int8 model, as the
    framework's debugging tool computes it (`sqnr_tool` says which);
  - `alone_metric` / `alone_loss_pts`: the suite's metric with only this layer int8 (every
    other candidate layer float), and its loss against fp32 in points, in the metric's direction;
  - `alone_output_sqnr_db`: SQNR of the model's output in that model against fp32 outputs.
Layers are ranked by `alone_loss_pts` (worst first), ties by `alone_output_sqnr_db` (lowest first).

The search ("full evaluations": a model built with the framework's quantizer, scored on the
tuning split): all int8 first (meets the budget: zero float layers, done); all candidates
float (misses it: no set can meet it, the best found is reported); then a binary search over
the top-k of the ranking; then a greedy pass that returns each kept layer, least sensitive
first, to int8 when the budget still holds. At most 2 + ceil(log2(L)) + greedy_tries
evaluations. The budget is met on the tuning split with `margin` of it held back, since the
row's accuracy is measured again on the evaluation split on the target.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from harness.metrics import Metric, accuracy_loss
from harness.quantize.layer_names import Layer
from harness.quantize.probe import pooled_sqnr_db

SEARCH_VERSION = "1"  # bump when the method changes: it is part of every cached result's key


@dataclass(frozen=True)
class SearchConfig:
    """How the search trades evaluations against the size of the float set."""

    margin: float = 0.1  # fraction of the budget held back on the tuning split for the evaluation split
    greedy_tries: int = 4  # at most this many kept layers are tried back in int8 after the binary search
    sqnr_samples: int = 32  # tuning samples the debugging tools compare layer outputs on

    def params(self) -> dict[str, Any]:
        return asdict(self)


def artifact_key(budget_pts: Optional[float]) -> dict[str, Any]:
    """What decides the float layers keep_float="auto" finds, in the `mixed` artifact's cache
    key: the budget and the search settings (the layers themselves follow from them)."""
    return {"budget_pts": budget_pts, "search": {**SearchConfig().params(), "version": SEARCH_VERSION}}


@dataclass
class LayerSensitivity:
    name: str  # user-facing (torch module path where there is one)
    native: list[str]  # the framework's names (ONNX nodes, TFLite weight tensors / op locations, module paths)
    op: str
    sqnr_db: Optional[float]  # layer output vs float in the all-int8 model (debugging tool)
    alone_metric: float  # metric with only this layer int8
    alone_loss_pts: float  # loss vs fp32 in points (positive = worse)
    alone_output_sqnr_db: Optional[float]  # model output with only this layer int8, vs fp32
    rank: int = 0  # 1 = most sensitive


@dataclass
class Step:
    """One full evaluation of the search."""

    what: str  # "all int8", "all float", "top-k", "greedy"
    k: int  # number of float layers
    float_layers: list[str]
    metric: float
    loss_pts: float
    meets: bool
    seconds: float


@dataclass
class SensitivityTable:
    """The per-layer figures of one (model, framework, recipe) on the tuning split."""

    model: str
    framework: str
    recipe: str
    metric: str
    higher_is_better: bool
    split: str  # which data: "calibration" (never "evaluation")
    samples: int
    fp32_metric: float  # the fp32 model's score on the tuning split
    all_int8_metric: float  # every candidate layer int8
    sqnr_tool: str
    layers: list[LayerSensitivity]
    seconds: float
    evaluations: int  # per-layer builds and scorings

    def ranked(self) -> list[LayerSensitivity]:
        return sorted(self.layers, key=lambda layer: layer.rank)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SensitivityTable":
        return cls(**{**data, "layers": [LayerSensitivity(**layer) for layer in data["layers"]]})


@dataclass
class SearchResult:
    budget_pts: float
    target_pts: float  # the loss the search allows on the tuning split (budget minus margin)
    kept: list[str]  # the float layers, by user-facing name, most sensitive first
    met: bool  # the kept set meets target_pts on the tuning split
    status: str  # one line for the row
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def evaluations(self) -> int:
        return len(self.steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchResult":
        return cls(**{**data, "steps": [Step(**step) for step in data["steps"]]})


def sqnr_db(reference: np.ndarray, actual: np.ndarray) -> Optional[float]:
    """SQNR over every element of two arrays (onnxruntime's compute_signal_to_quantization_noice_ratio)."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    noise = float(np.sum((np.asarray(actual, dtype=np.float64).ravel() - ref) ** 2))
    return pooled_sqnr_db(float(np.sum(ref ** 2)), noise)


def _first(outputs: dict[str, np.ndarray]) -> np.ndarray:
    return next(iter(outputs.values()))


class Scorer:
    """The suite's metric on the tuning split against the fp32 model's outputs there."""

    def __init__(self, metric: Metric, labels: Optional[np.ndarray], fp32_outputs: dict[str, np.ndarray]) -> None:
        self.metric, self.labels, self.reference = metric, labels, fp32_outputs
        self.fp32 = self.score(fp32_outputs)

    def score(self, outputs: dict[str, np.ndarray]) -> float:
        return self.metric.score(outputs, self.labels, self.reference)

    def loss(self, value: float) -> float:
        return float(accuracy_loss(value, self.fp32, self.metric.higher_is_better))

    def output_sqnr(self, outputs: dict[str, np.ndarray]) -> Optional[float]:
        return sqnr_db(_first(self.reference), _first(outputs))


def measure_layers(probe, scorer: Scorer, config: SearchConfig, progress: Callable[[str], None],
                   identity: dict[str, Any]) -> SensitivityTable:
    """Every candidate layer alone in int8, scored; the debugging tool's SQNR of each layer's
    output in the all-int8 model; the ranking."""
    started = time.perf_counter()
    layers: Sequence[Layer] = probe.layers
    everything = frozenset(layer.name for layer in layers)
    progress(f"sensitivity: all {len(layers)} layers int8, {probe.sqnr_tool}")
    all_int8 = probe.build(frozenset())
    all_int8_metric = scorer.score(probe.outputs(all_int8))
    sqnr = probe.layer_sqnr(all_int8, config.sqnr_samples)
    probe.discard(all_int8)
    found = []
    for i, layer in enumerate(layers, 1):
        candidate = probe.build(everything - {layer.name})
        outputs = probe.outputs(candidate)
        probe.discard(candidate)
        value = scorer.score(outputs)
        found.append(LayerSensitivity(layer.name, list(layer.native), layer.op, sqnr.get(layer.name), value,
                                      scorer.loss(value), scorer.output_sqnr(outputs)))
        progress(f"sensitivity {i}/{len(layers)}: {layer.name} alone in int8: {scorer.metric.name} {value:.4f} "
                 f"(loss {found[-1].alone_loss_pts:+.2f} pts)")
    order = sorted(found, key=lambda s: (-s.alone_loss_pts, math.inf if s.alone_output_sqnr_db is None
                                         else s.alone_output_sqnr_db))
    for rank, entry in enumerate(order, 1):
        entry.rank = rank
    return SensitivityTable(**identity, metric=scorer.metric.name, higher_is_better=scorer.metric.higher_is_better,
                            fp32_metric=scorer.fp32, all_int8_metric=all_int8_metric, sqnr_tool=probe.sqnr_tool,
                            layers=found, seconds=round(time.perf_counter() - started, 2), evaluations=len(layers) + 1)


def max_evaluations(layers: int, config: SearchConfig) -> int:
    return 2 + math.ceil(math.log2(max(layers, 1))) + config.greedy_tries


def search(probe, table: SensitivityTable, scorer: Scorer, budget_pts: float, config: SearchConfig,
           progress: Callable[[str], None]) -> SearchResult:
    """The smallest float set found within the budget (see the module docstring)."""
    started = time.perf_counter()
    ranking = [layer.name for layer in table.ranked()]
    target = budget_pts * (1.0 - config.margin)
    bound = max_evaluations(len(ranking), config)
    steps: list[Step] = []
    seen: dict[frozenset, Step] = {}

    def evaluate(what: str, names: Sequence[str]) -> Step:
        if frozenset(names) in seen:  # e.g. the greedy pass reaching the all-int8 set: measured already
            return seen[frozenset(names)]
        began = time.perf_counter()
        candidate = probe.build(frozenset(names))
        value = scorer.score(probe.outputs(candidate))
        probe.discard(candidate)
        loss = scorer.loss(value)
        step = Step(what, len(names), list(names), value, loss, loss <= target + 1e-9, round(time.perf_counter() - began, 2))
        steps.append(step)
        seen[frozenset(names)] = step
        progress(f"search {len(steps)}/<={bound}: {what}, {len(names)} of {len(ranking)} layers float: "
                 f"{scorer.metric.name} {value:.4f}, loss {loss:+.2f} pts "
                 f"{'within' if step.meets else 'over'} {target:.2f} -> {'keep' if step.meets else 'no'}")
        return step

    def result(kept: Sequence[str], met: bool, status: str) -> SearchResult:
        return SearchResult(budget_pts, target, list(kept), met, status, steps,
                            round(time.perf_counter() - started, 2), config.params())

    none = evaluate("all int8", [])
    if none.meets:
        return result([], True, f"static int8 already meets the budget ({none.loss_pts:+.2f} pts on the {table.split} "
                                f"split, target {target:.2f}): no layer kept float")
    every = evaluate("all float", ranking)
    if not every.meets:
        best = max(steps, key=lambda s: -s.loss_pts)
        return result(best.float_layers, False,
                      f"no set of float layers meets the budget: with all {len(ranking)} candidate layers float the "
                      f"loss is {every.loss_pts:+.2f} pts on the {table.split} split (target {target:.2f}); best found "
                      f"kept: {best.k} layers float, {best.loss_pts:+.2f} pts")
    low, high = 0, len(ranking)  # top-low fails, top-high meets
    while high - low > 1:
        mid = (low + high) // 2
        if evaluate("top-k", ranking[:mid]).meets:
            high = mid
        else:
            low = mid
    kept = list(ranking[:high])
    for name in list(reversed(kept))[:config.greedy_tries]:
        if len(kept) == 0:
            break
        trial = [n for n in kept if n != name]
        if evaluate(f"greedy: {name} back to int8", trial).meets:
            kept = trial
    final = seen[frozenset(kept)]
    return result(kept, True, f"{len(kept)} of {len(ranking)} layers float: {scorer.metric.name} {final.metric:.4f} "
                              f"({final.loss_pts:+.2f} pts) on the {table.split} split, target {target:.2f} of the "
                              f"{budget_pts:g}-point budget; {len(steps)} full evaluations")
