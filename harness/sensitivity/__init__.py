"""Automatic mixed precision: each layer's sensitivity, and the smallest set of float layers
that meets the `mixed` budget, found per framework (Suite(keep_float="auto")).

    table = sensitivity_table(ctx, recipe)                 # per-layer figures, cached
    found = choose_float_layers(ctx, recipe, budget_pts)   # table + search, cached
    choose_before_build(ctx, recipe)                       # the pipeline step: hands ctx the layers

Everything runs on the host, scored on the calibration split (never the evaluation split);
the search runs before the build and hands the chosen set to the BuildContext, the framework's
ordinary `mixed` build keeps it float, and that artifact is measured on the target like any
other. Imports run one way: this package uses harness.quantize (the probes live beside each
framework's recipes: harness/quantize/*_probe.py), never the other way round. Results are cached under a content key (model
weights, data, recipe, metric, budget, search settings, library versions) in
`<cache>/sensitivity/`, so a re-run costs nothing.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from harness.artifacts import JsonCache
from harness.metrics import resolve_metric
from harness.quantize.base import BuildContext, FloatLayers, Recipe
from harness.quantize.probe import Probe, Tuning, tuning_data
from harness.sensitivity.search import (SEARCH_VERSION, Scorer, SearchConfig, SearchResult, SensitivityTable,
                                        artifact_key, max_evaluations, measure_layers, search)

from harness.vocabulary import KEEP_FLOAT_AUTO as AUTO


def is_auto(keep_float) -> bool:
    """keep_float="auto" (a Suite turns a string into a one-element tuple)."""
    return tuple(keep_float or ()) == (AUTO,)


def _probe(ctx: BuildContext, recipe: Recipe, tuning: Tuning) -> Probe:
    """The probe of a `mixed` recipe: onnxruntime, torch PT2E, or LiteRT by the recipe's source
    (the Keras model through TF's QuantizationDebugger; litert-torch's conversion, a .tflite file
    and a SavedModel's conversion through ai-edge-quantizer)."""

    # The float32-only reasons are the recipes' own: the search runs before the build, and a
    # float16 request is then n/a for the same reason the build would give.
    if recipe.framework == "onnxruntime":
        from harness.quantize import onnxruntime, onnxruntime_probe

        ctx.only_float32_kept(onnxruntime.MIXED_FLOAT32_ONLY)
        return onnxruntime_probe.OnnxruntimeProbe(ctx, recipe, tuning)
    if recipe.framework == "torch":
        from harness.quantize import torch, torch_probe

        ctx.only_float32_kept(torch.PT2E_FLOAT32_ONLY)
        return torch_probe.TorchProbe(ctx, recipe, tuning)
    if recipe.framework == "tflite":
        from harness.quantize import tflite_file, tflite_keras, tflite_probe, tflite_torch

        if recipe.source == "keras":
            if ctx.spec.saved_model is not None:  # its mixed is ai-edge-quantizer's (tflite_keras._mixed_saved_model)
                return tflite_probe.AeqProbe(ctx, recipe, tuning, tflite_keras.saved_model_source(ctx))
            ctx.only_float32_kept(tflite_keras.DEBUGGER_FLOAT32_ONLY)
            return tflite_probe.KerasProbe(ctx, recipe, tuning)
        sources = {tflite_torch.TORCH.source: tflite_torch.TORCH, tflite_file.FILE.source: tflite_file.FILE}
        if recipe.source in sources:
            return tflite_probe.AeqProbe(ctx, recipe, tuning, sources[recipe.source])
    raise ValueError(f"no sensitivity search for {recipe.framework} recipe {recipe.name!r} (source {recipe.source!r})")


@dataclass
class Found:
    """What the `mixed` build and the row need: the table, the search, and whether this call computed them."""

    table: SensitivityTable
    result: Optional[SearchResult]
    computed: bool

    def notes(self) -> dict[str, Any]:
        return {"kept_float_search": {"status": self.result.status if self.result else None,
                                      "met": self.result.met if self.result else None,
                                      "tuning_split": self.table.split, "tuning_samples": self.table.samples,
                                      "search": self.result.to_dict() if self.result else None,
                                      "sensitivity": self.table.to_dict()}}


def _tuning_fingerprint(tuning: Tuning) -> str:
    h = hashlib.sha256(tuning.split.encode())
    for name in sorted(tuning.inputs):
        h.update(name.encode() + np.ascontiguousarray(tuning.inputs[name]).tobytes())
    if tuning.labels is not None:
        h.update(np.ascontiguousarray(tuning.labels).tobytes())
    return h.hexdigest()[:16]


def _cache(ctx: BuildContext) -> JsonCache:
    return JsonCache(Path(ctx.cache.root).parent / "sensitivity")


class _Session:
    """One model x recipe: the probe, built only when something must be computed."""

    def __init__(self, ctx: BuildContext, recipe: Recipe, config: SearchConfig,
                 progress: Optional[Callable[[str], None]]) -> None:
        self.ctx, self.recipe, self.config = ctx, recipe, config
        self.progress = progress or ctx.progress
        self.tuning = tuning_data(ctx)
        self.metric = resolve_metric(ctx.spec.metric)
        self._probe: Optional[Probe] = None
        self._scorer: Optional[Scorer] = None
        # The artifact's key parts without what only a `mixed` artifact's key holds (its layer
        # names, the budget and search settings): one table serves every budget and caller.
        parts = ctx.key_parts(recipe, float_choice=False)
        self.table_key = {**parts, "what": "sensitivity-table", "version": SEARCH_VERSION, "metric": self.metric.name,
                          "higher_is_better": self.metric.higher_is_better, "tuning": _tuning_fingerprint(self.tuning),
                          "sqnr_samples": config.sqnr_samples}

    def probe(self) -> Probe:
        if self._probe is None:
            self.progress(f"sensitivity: preparing {self.recipe.framework} ({self.recipe.name})")
            self._probe = _probe(self.ctx, self.recipe, self.tuning)
        return self._probe

    def scorer(self) -> Scorer:
        if self._scorer is None:
            reference = self.probe().fp32_outputs()
            try:
                self._scorer = Scorer(self.metric, self.tuning.labels, reference)
            except ValueError as exc:
                if self.tuning.labels is None:
                    raise ValueError(
                        f"keep_float='auto' scores {self.metric.name} on the {self.tuning.split} split of "
                        f"{self.ctx.dataset.name!r}, which has no labels there ({exc}); give y_calib in the .npz "
                        "(or calib_labels in the Dataset)") from exc
                raise
        return self._scorer

    def table(self) -> tuple[SensitivityTable, bool]:
        def compute() -> dict:
            started = time.perf_counter()
            identity = {"model": self.ctx.spec.name, "framework": self.recipe.framework, "recipe": self.recipe.name,
                        "split": self.tuning.split, "samples": self.tuning.samples}
            table = measure_layers(self.probe(), self.scorer(), self.config, self.progress, identity)
            table.seconds = round(time.perf_counter() - started, 2)  # wall time, the probe's setup included
            return {"table": table.to_dict()}

        value, computed = _cache(self.ctx).get_or_compute(self.table_key, compute)
        return SensitivityTable.from_dict(value["table"]), computed

    def search(self, table: SensitivityTable, budget_pts: float) -> tuple[SearchResult, bool]:
        key = {**self.table_key, "what": "float-layer-search", "budget_pts": float(budget_pts),
               "margin": self.config.margin, "greedy_tries": self.config.greedy_tries}

        def compute() -> dict:
            started = time.perf_counter()
            self.progress(f"search: at most {max_evaluations(len(table.layers), self.config)} full evaluations "
                          f"of {len(table.layers)} layers")
            result = search(self.probe(), table, self.scorer(), budget_pts, self.config, self.progress)
            result.seconds = round(time.perf_counter() - started, 2)  # wall time, the probe's setup included
            return {"search": result.to_dict()}

        value, computed = _cache(self.ctx).get_or_compute(key, compute)
        return SearchResult.from_dict(value["search"]), computed

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()


def sensitivity_table(ctx: BuildContext, recipe: Recipe, config: SearchConfig = SearchConfig(),
                      progress: Optional[Callable[[str], None]] = None) -> Found:
    """The per-layer figures of `recipe`'s framework for this model (cached)."""
    session = _Session(ctx, recipe, config, progress)
    try:
        table, computed = session.table()
        return Found(table, None, computed)
    finally:
        session.close()


def choose_float_layers(ctx: BuildContext, recipe: Recipe, budget_pts: float, config: SearchConfig = SearchConfig(),
                        progress: Optional[Callable[[str], None]] = None) -> Found:
    """The per-layer figures and the smallest float set found within `budget_pts` (cached)."""
    started = time.perf_counter()
    session = _Session(ctx, recipe, config, progress)
    try:
        table, computed_table = session.table()
        result, computed_search = session.search(table, budget_pts)
    finally:
        session.close()
    if computed_table or computed_search:
        session.progress(f"search done in {(time.perf_counter() - started) / 60:.1f} min: {result.status}")
    return Found(table, result, computed_table or computed_search)


def choose_before_build(ctx: BuildContext, recipe: Recipe) -> None:
    """The pipeline step before a build ("choose float layers"): for a `mixed` recipe with
    keep_float="auto", the search (or its cached outcome) hands `ctx` the layers to keep float,
    the manifest notes and what decided them (the artifact's key). Any other recipe, and a
    recipe already handed its layers, needs nothing."""
    if recipe.mode != "mixed" or not ctx.searches_float_layers or ctx.has_float_layers(recipe):
        return
    if ctx.mixed_budget is None:
        raise ValueError("keep_float='auto' needs the mixed budget to search within (budgets={'mixed': points})")
    found = choose_float_layers(ctx, recipe, ctx.mixed_budget)
    ctx.hand_float_layers(recipe, FloatLayers(
        tuple(found.result.kept),
        {"keep_float_source": "auto", "recipe": f"{recipe.name} + keep_float search", **found.notes()},
        artifact_key(ctx.mixed_budget)))


__all__ = ["AUTO", "Found", "SearchConfig", "SearchResult", "SensitivityTable", "choose_before_build",
           "choose_float_layers", "is_auto", "sensitivity_table"]
