"""What a session keeps per model across its cases: the bound dataset, the build contexts
(one per model, kept-float choice, search budget and kept precision), and the evaluation
inputs file shipped to the runner (one per model and evaluation subset).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from harness import profiles
from harness.artifacts import ArtifactCache
from harness.data import Dataset, bind_inputs, resolve_data
from harness.progress import Progress
from harness.quantize import BuildContext
from harness.quantize.base import ExportFormat
from harness.suite import Case


class ModelState:
    def __init__(self, cache: ArtifactCache, models_dir: Path, progress: Progress, profile: str,
                 eval_samples: Optional[int], inputs_dir: Callable[[], Path]) -> None:
        self.cache = cache
        self.models_dir = Path(models_dir)
        self.progress = progress
        self.profile = profile
        self.eval_samples = eval_samples  # --eval-samples; default: the suites'
        self.inputs_dir = inputs_dir  # where the run keeps the evaluation inputs it ships
        self._contexts: dict[str, BuildContext] = {}
        self._datasets: dict[str, Dataset] = {}
        self._inputs: dict[tuple, Path] = {}  # (model, evaluation samples) -> inputs file

    def dataset(self, case: Case) -> Dataset:
        name = case.model.name
        if name not in self._datasets:
            dataset = resolve_data(case.model.data)
            if case.model.inputs is not None:  # a model file with its own input names and shapes
                dataset = bind_inputs(dataset, case.model.inputs(), f"model {name} ({case.model.description})")
            self._datasets[name] = dataset
        return self._datasets[name]

    def context(self, case: Case, settings: Mapping[str, Any]) -> BuildContext:
        """The build context of the case's model; `settings`: the target's (its export format)."""
        budget = case.budget if case.searches_float_layers else None  # what keep_float="auto" searches within
        key = f"{case.model.name}|{','.join(case.keep_float)}|{budget}|{case.kept_precision}"
        if key not in self._contexts:
            self._contexts[key] = BuildContext(case.model, self.dataset(case), self.cache,
                                               self.models_dir, self.progress, case.keep_float,
                                               export=ExportFormat.from_settings(settings),
                                               mixed_budget=budget, kept_precision=case.kept_precision)
        return self._contexts[key]

    def eval_count(self, case: Case) -> Optional[int]:
        """How many evaluation samples this run scores for the case (None: all): --eval-samples,
        else the suite's figure for the run's profile."""
        count = self.eval_samples or case.eval_samples.get(self.profile)
        return count if count is not None and count < self.dataset(case).n_eval else None

    def evaluation(self, case: Case):
        """(inputs, labels) the case is scored on: the profile's seeded subset, or everything."""
        return self.dataset(case).eval_subset(self.eval_count(case), profiles.EVAL_SEED)

    def inputs_file(self, case: Case) -> Path:
        count = self.eval_count(case)
        key = (case.model.name, count)
        if key not in self._inputs:
            dataset = self.dataset(case)
            inputs, _ = self.evaluation(case)
            subset = f"-{count}of{dataset.n_eval}" if count else ""
            path = self.inputs_dir() / f"{case.model.name}-{dataset.fingerprint()}{subset}.npz"
            if not path.is_file():  # another worker of the run may have written it (same bytes)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
                np.savez(tmp, **{k: np.ascontiguousarray(v) for k, v in inputs.items()})
                os.replace(tmp, path)  # atomic: a worker shipping it never reads half a file
            self._inputs[key] = path
        return self._inputs[key]
