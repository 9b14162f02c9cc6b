"""Suites: a declaration of one model x frameworks x modes x batch sizes.

    suite = Suite(model=digits_cnn, frameworks=("onnxruntime",), modes=("fp32", "static-int8"),
                  budgets={"static-int8": 1.0})
    test_case = suite.pytest_cases()

Declaration errors are raised at import, i.e. at pytest collection, naming the suite
file and the bad field.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Optional, Sequence

from harness.models.spec import ModelSpec
from harness.history.gates import Gates
from harness.limits import Limits
from harness.profiles import ALL_PROFILES, PROFILES, QUICK
from harness.quantize import Recipe, recipes_for, unavailable_reason
from harness.vocabulary import BASELINE_MODE, FRAMEWORKS, KEEP_FLOAT_AUTO, KEPT_PRECISIONS, MODES


class SuiteError(ValueError):
    """A suite declaration is wrong; the message names the file and the field."""


@dataclass(frozen=True)
class Timing:
    """How long the runner measures. Command-line flags override these per run."""

    warmup_runs: int = 10  # untimed calls after the first inference
    warmup_s: float = 0.2  # ... and at least this long
    min_runs: int = 100  # the timed loop runs at least this many calls
    min_duration_s: float = 1.0  # ... and at least this long
    max_duration_s: float = 10.0  # ... but stops here even if the minimums are not met (valid=False)
    # Fresh runner processes per case, each paired with a fresh fp32 baseline process (harness/rounds.py);
    # None: the run profile's (quick 1, nightly 3). --rounds overrides.
    rounds: Optional[int] = None

    def validate(self) -> Optional[str]:
        if min(self.warmup_runs, self.min_runs) < 0 or self.min_runs < 1:
            return "min_runs must be >= 1 and warmup_runs >= 0"
        if self.rounds is not None and (not isinstance(self.rounds, int) or self.rounds < 1):
            return f"rounds must be a positive integer (or None for the run profile's), not {self.rounds!r}"
        if not 0 <= self.min_duration_s <= self.max_duration_s:
            return "need 0 <= min_duration_s <= max_duration_s"
        return None


@dataclass(frozen=True)
class Case:
    """One (model, framework, mode, recipe, batch) inside a suite (and the target it runs on,
    when a run has several)."""

    suite: str
    model: ModelSpec
    framework: str
    mode: str
    recipe: Optional[Recipe]  # None when no recipe exists (then na_reason says why)
    batch_size: int
    budget: Optional[float] = None  # max accuracy loss vs fp32, in points
    na_reason: str = ""  # set: the case is n/a (no recipe, or its artifact cannot take this batch)
    timing: "Timing" = field(default_factory=lambda: Timing())  # the suite's measurement settings
    keep_float: tuple[str, ...] = ()  # the suite's layers for `mixed` (default: the model's; ("auto",): search)
    gates: Gates = field(default_factory=Gates)  # the suite's regression thresholds vs a baseline run
    profiles: tuple[str, ...] = ALL_PROFILES  # the run profiles that include this case (suite and recipe agree)
    eval_samples: Mapping[str, int] = field(default_factory=dict)  # profile -> evaluation samples scored (else all)
    fail_over_budget: bool = False  # over its accuracy budget fails the case's test (default: shown, not failed)
    target: str = ""  # the --target entry (target or pool) it runs on, when the run names several
    kept_precision: str = "float32"  # `mixed`: what the float layers are kept in (float16: case ids end in -fp16)
    limits: Limits = field(default_factory=Limits)  # the suite's limits for the answer (flags override them)

    @property
    def searches_float_layers(self) -> bool:
        """`mixed` with keep_float="auto": the float layers are found by the sensitivity search."""
        return self.mode == "mixed" and self.keep_float == (KEEP_FLOAT_AUTO,)

    @property
    def case_id(self) -> str:
        slug = f"-{self.recipe.slug}" if self.recipe and self.recipe.slug != self.mode else ""
        auto = f"-{KEEP_FLOAT_AUTO}" if self.searches_float_layers else ""
        auto += "-fp16" if self.mode == "mixed" and self.kept_precision == "float16" else ""
        where = f"@{self.target}" if self.target else ""  # unique per target in a run across devices
        return f"{self.model.name}-{self.framework}-{self.mode}{slug}{auto}-b{self.batch_size}{where}"


def _declaring_file() -> str:
    """The first caller outside this module and the dataclass-generated __init__ ('<string>')."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename in (__file__, "<string>"):
        frame = frame.f_back
    return frame.f_code.co_filename if frame is not None else "<unknown>"


@dataclass(frozen=True)
class Suite:
    model: ModelSpec  # what to benchmark (harness.models.* or onnx_model()/torch_model())
    frameworks: tuple[str, ...] = ("onnxruntime",)  # subset of harness.vocabulary.FRAMEWORKS
    modes: tuple[str, ...] = (BASELINE_MODE,)  # subset of harness.vocabulary.MODES; fp32 is always added
    budgets: Mapping[str, float] = field(default_factory=dict)  # mode -> max accuracy loss vs fp32, in points
    batch_sizes: tuple[int, ...] = (1,)  # one case per batch size
    # Layers `mixed` keeps in float (default: the model's sensitive layers), or "auto": the
    # sensitivity search finds the smallest set within budgets["mixed"] (case ids end in -auto).
    keep_float: tuple[str, ...] = ()
    # The precision `mixed` keeps those layers in: "float32", or "float16" (weights in float16 where
    # the framework can, ai-edge-quantizer's float_casting; n/a elsewhere, with the reason).
    kept_precision: str = "float32"
    timing: Timing = field(default_factory=Timing)  # measurement settings
    gates: Gates = field(default_factory=Gates)  # regression thresholds vs a --baseline run (flags override)
    profiles: tuple[str, ...] = ALL_PROFILES  # run profiles that include this suite; ("nightly",) keeps it out of the quick default
    # recipe executions (e.g. "executorch") this suite runs only in the nightly profile: for this
    # model their builds cost more than the quick job affords
    nightly_executions: tuple[str, ...] = ()
    # framework -> modes of it this suite runs only in the nightly profile, for the same reason
    nightly_modes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # profile -> how many evaluation samples a case scores there: a seeded random subset, the same
    # in every run (harness.profiles.EVAL_SEED); a profile not named scores the whole evaluation set
    eval_samples: Mapping[str, int] = field(default_factory=dict)
    fail_over_budget: bool = False  # True: a case over its accuracy budget fails its test (as --fail-over-budget)
    # The deployment's limits for the answer (`which mode to ship`): p99, peak memory, size, energy, the
    # accuracy budget and the objective (harness.limits.Limits); --qb-max-p99-ms etc. override them field by field
    limits: Limits = field(default_factory=Limits)
    name: str = ""  # the `suite` column; default: the module's file name without test_
    source: str = field(default="", compare=False)  # the declaring file (filled in automatically)

    def __post_init__(self) -> None:
        source = self.source or _declaring_file()
        object.__setattr__(self, "source", source)
        if not self.name:
            object.__setattr__(self, "name", Path(source).stem.removeprefix("test_"))
        for attr in ("frameworks", "modes", "batch_sizes", "keep_float", "profiles", "nightly_executions"):
            value = getattr(self, attr)
            if isinstance(value, (str, int)):
                value = (value,)
            object.__setattr__(self, attr, tuple(value))
        self._validate()

    def _fail(self, field_name: str, message: str) -> None:
        raise SuiteError(f"{self.source}: suite field `{field_name}`: {message}")

    def _validate(self) -> None:
        if not isinstance(self.model, ModelSpec):
            self._fail("model", f"expected a harness.models.ModelSpec, got {type(self.model).__name__}")
        if not self.model.sources:
            self._fail("model", f"model {self.model.name!r} has no source: a torch factory, an ONNX file, a Keras "
                                "model or a .tflite file")
        if self.model.onnx_file is not None and not Path(self.model.onnx_file).is_file():
            self._fail("model", f"ONNX file {self.model.onnx_file} does not exist")
        if isinstance(self.model.data, (str, Path)) and not Path(self.model.data).expanduser().is_file():
            self._fail("model.data", f"data file {self.model.data} does not exist")
        for fw in self.frameworks:
            if fw not in FRAMEWORKS:
                self._fail("frameworks", f"unknown framework {fw!r} (known: {', '.join(FRAMEWORKS)})")
        if not self.frameworks:
            self._fail("frameworks", "is empty")
        for mode in self.modes:
            if mode not in MODES:
                self._fail("modes", f"unknown mode {mode!r} (known: {', '.join(MODES)})")
        for mode, points in self.budgets.items():
            if mode not in MODES:
                self._fail("budgets", f"unknown mode {mode!r} (known: {', '.join(MODES)})")
            if mode not in self.modes:
                self._fail("budgets", f"budget for {mode!r}, which is not in modes {self.modes}")
            if not isinstance(points, (int, float)) or points < 0:
                self._fail("budgets", f"budget for {mode!r} must be a non-negative number of points, not {points!r}")
        if self.kept_precision not in KEPT_PRECISIONS:
            self._fail("kept_precision", f"{self.kept_precision!r} is not one of {', '.join(KEPT_PRECISIONS)}")
        if KEEP_FLOAT_AUTO in self.keep_float:
            if self.keep_float != (KEEP_FLOAT_AUTO,):
                self._fail("keep_float", f"{KEEP_FLOAT_AUTO!r} stands alone (the search picks the layers), not beside "
                                         f"names {[n for n in self.keep_float if n != KEEP_FLOAT_AUTO]}; declare a second "
                                         "Suite for the named layers to compare both in one run")
            if "mixed" not in self.modes:
                self._fail("keep_float", f"{KEEP_FLOAT_AUTO!r} searches the float layers of mode 'mixed', which is not in modes {self.modes}")
            if self.budgets.get("mixed") is None:
                self._fail("budgets", f"keep_float={KEEP_FLOAT_AUTO!r} searches for the smallest set of float layers within the "
                                      "mixed budget; give budgets={'mixed': <points>}")
        for batch in self.batch_sizes:
            if not isinstance(batch, int) or batch < 1:
                self._fail("batch_sizes", f"batch sizes must be positive integers, not {batch!r}")
        if not isinstance(self.fail_over_budget, bool):
            self._fail("fail_over_budget", f"must be True or False, not {self.fail_over_budget!r}")
        if not isinstance(self.limits, Limits) or self.limits.validate():
            self._fail("limits", self.limits.validate() if isinstance(self.limits, Limits) else
                       f"expected harness.Limits, got {type(self.limits).__name__}")
        if not isinstance(self.gates, Gates) or self.gates.validate():
            self._fail("gates", self.gates.validate() if isinstance(self.gates, Gates) else "expected harness.history.gates.Gates")
        problem = self.timing.validate()
        if problem:
            self._fail("timing", problem)
        for fw, modes in self.nightly_modes.items():
            if fw not in self.frameworks or isinstance(modes, str) or not set(modes) <= set(self.modes):
                self._fail("nightly_modes", f"{fw!r}: {modes!r} is not a tuple of this suite's modes {self.modes} of one "
                                            f"of its frameworks {self.frameworks}")
        for name in self.profiles:
            if name not in PROFILES:
                self._fail("profiles", f"unknown profile {name!r} (known: {', '.join(PROFILES)})")
        if not self.profiles:
            self._fail("profiles", "is empty")
        for name, count in self.eval_samples.items():
            if name not in PROFILES:
                self._fail("eval_samples", f"unknown profile {name!r} (known: {', '.join(PROFILES)})")
            if not isinstance(count, int) or isinstance(count, bool) or count < 2:
                self._fail("eval_samples", f"the {name} profile's sample count must be a whole number >= 2, not {count!r}")

    def cases(self) -> list[Case]:
        """Every case, fp32 first within each framework (it is the baseline of the rest)."""
        modes = [BASELINE_MODE] + [m for m in self.modes if m != BASELINE_MODE]
        cases = []
        for batch in self.batch_sizes:
            for fw in self.frameworks:
                for mode in modes:
                    budget = self.budgets.get(mode)
                    every = recipes_for(fw, mode)
                    # A recipe that starts from a source (tflite: keras, torch, a .tflite file) the
                    # model does not have is left out; with none left, one n/a case says why.
                    recipes = [r for r in every if not r.source or r.source in self.model.sources]
                    common = dict(budget=budget, timing=self.timing, keep_float=self.keep_float, gates=self.gates,
                                  kept_precision=self.kept_precision, limits=self.limits,
                                  eval_samples=self.eval_samples, fail_over_budget=self.fail_over_budget)
                    if not recipes:
                        reason = unavailable_reason(fw, mode) if not every else (
                            f"{fw} {mode} starts from {' or '.join(sorted({r.source for r in every}))}, and model "
                            f"{self.model.name} is {' + '.join(self.model.sources)}")
                        cases.append(Case(self.name, self.model, fw, mode, None, batch, na_reason=reason,
                                          profiles=self.profiles, **common))
                    for recipe in recipes:
                        nightly = recipe.execution in self.nightly_executions or mode in self.nightly_modes.get(fw, ())
                        profiles = tuple(p for p in self.profiles if p in recipe.profiles and (p != QUICK or not nightly))
                        if profiles:  # a package compiled for another batch: n/a here, with the reason
                            cases.append(Case(self.name, self.model, fw, mode, recipe, batch, profiles=profiles,
                                              na_reason=recipe.batch_reason(batch) or "", **common))
        return cases

    def pytest_cases(self):
        """A pytest test function with one test per case (and per target, when --target names
        several): harness.pytest_plugin parametrizes `case` from `test_case.suite`."""
        ids = [c.case_id for c in self.cases()]
        if len(set(ids)) != len(ids):
            self._fail("frameworks/modes", "two cases share an id; give the recipes distinct slugs")

        def test_case(case: Case, quantbench) -> None:
            quantbench.check(case)

        test_case.suite = self
        return test_case

    def pytest_params(self, targets: Sequence[str] = ()) -> list:
        """One pytest.param per case, per target when there are several (grouped by target), with
        the case id as its id. A case outside the quick default carries the `nightly` marker
        (`-m nightly` selects them); the plugin deselects every case its --profile does not include."""
        import pytest

        cases = [replace(c, target=t) for t in targets for c in self.cases()] if len(targets) > 1 else self.cases()
        return [pytest.param(c, id=c.case_id, marks=() if QUICK in c.profiles else (pytest.mark.nightly,)) for c in cases]
