"""What the sensitivity search (harness/sensitivity/) needs from a framework: its candidate layers, a quantized model with a given
set of them kept float (built by the framework's own quantizer, with calibration done once),
that model's outputs on the tuning data, and the per-layer SQNR its debugging tool reports.

Models run on the host through the runner's own backends (harness/runner/backend_*.py), so a
candidate computes exactly what the artifact will compute on a CPU target.
"""
from __future__ import annotations

import importlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from harness.quantize.base import BuildContext, Recipe
from harness.quantize.layer_names import Layer, by_name
from harness.runner import measure

TUNING_SPLIT = "calibration"


@dataclass(frozen=True)
class Tuning:
    """The data the sensitivity and the search are scored on: the calibration split, never the
    evaluation split that reports the row's accuracy."""

    split: str
    inputs: Mapping[str, np.ndarray]
    labels: Optional[np.ndarray]

    @property
    def samples(self) -> int:
        return len(next(iter(self.inputs.values())))

    def head(self, n: int) -> dict[str, np.ndarray]:
        return {k: v[:n] for k, v in self.inputs.items()}


def tuning_data(ctx: BuildContext) -> Tuning:
    return Tuning(TUNING_SPLIT, ctx.dataset.calib_inputs, getattr(ctx.dataset, "calib_labels", None))


def pooled_sqnr_db(signal: float, noise: float) -> Optional[float]:
    """10 log10(signal energy / noise energy); None without signal, inf without noise."""
    if signal <= 0.0:
        return None
    return math.inf if noise <= 0.0 else 10.0 * math.log10(signal / noise)


def host_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def host_outputs(framework: str, model_path: Path, manifest: Mapping[str, Any], inputs: Mapping[str, np.ndarray],
                 batch_size: Optional[int] = None) -> dict[str, np.ndarray]:
    """Run a model file through the runner's backend for `framework` on this host's CPU, in
    batches (a static batch dimension is honoured; the last batch is padded as the runner does)."""
    backend_cls = importlib.import_module(f"harness.runner.backend_{framework}").Backend
    backend = backend_cls(str(model_path), dict(manifest), host_threads(), {})
    static = backend.input_specs[0][1][0] if backend.input_specs and backend.input_specs[0][1] else None
    batch = static if isinstance(static, int) else (batch_size or 16)
    fetch = getattr(backend, "fetch", lambda outputs: outputs)
    return measure.evaluation_pass(lambda feed: fetch(backend.run(backend.prepare(feed))), dict(inputs), batch,
                                   backend.output_names)


class Probe:
    """One framework's view of a model for the search. Subclasses set `framework`, `sqnr_tool`,
    `layers` and implement build / outputs / layer_sqnr."""

    framework = ""
    sqnr_tool = ""

    def __init__(self, ctx: BuildContext, recipe: Recipe, tuning: Tuning) -> None:
        self.ctx, self.recipe, self.tuning = ctx, recipe, tuning
        self.layers: list[Layer] = []
        self.workdir = Path(tempfile.mkdtemp(prefix=f"quantbench-sensitivity-{os.getpid()}-"))
        self._count = 0

    def by_name(self) -> dict[str, Layer]:
        return by_name(self.layers)

    def float_layers(self, names) -> list[Layer]:
        known = self.by_name()
        return [known[n] for n in names]

    def new_path(self, suffix: str) -> Path:
        self._count += 1
        return self.workdir / f"candidate-{self._count}{suffix}"

    # -- to implement ----------------------------------------------------------------------
    def build(self, float_layers: frozenset[str]) -> Any:
        """A quantized model with these layers (user-facing names) kept float, every other
        candidate layer int8, built by the framework's quantizer."""
        raise NotImplementedError

    def outputs(self, candidate: Any) -> dict[str, np.ndarray]:
        """The candidate's outputs on the tuning inputs."""
        raise NotImplementedError

    def fp32_outputs(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def layer_sqnr(self, all_int8: Any, samples: int) -> dict[str, float]:
        """SQNR (dB) of each layer's output against float in the all-int8 model, from the
        framework's debugging tool, on the first `samples` tuning samples."""
        raise NotImplementedError

    def discard(self, candidate: Any) -> None:
        if isinstance(candidate, Path):
            candidate.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
