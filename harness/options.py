"""A run's settings from the command line (`SessionOptions`); None means the suite's own value."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from harness import profiles, settings
from harness.limits import Limits
from harness.suite import Timing


@dataclass(frozen=True)
class SessionOptions:
    """Per-run settings from the command line; None means the suite's own value."""

    results_dir: Path = field(default_factory=settings.results_dir)  # run directories are created under here
    cache_dir: Path = field(default_factory=settings.cache_dir)  # artifacts and trained models, shared across runs
    threads: Optional[int] = None  # default: the target's physical core count
    min_runs: Optional[int] = None
    min_duration_s: Optional[float] = None
    max_duration_s: Optional[float] = None
    warmup_runs: Optional[int] = None
    run_id: Optional[str] = None
    profile: str = profiles.QUICK  # how much of the matrix: the suites' evaluation subsets, the case budget
    rounds: Optional[int] = None  # runner processes per case, paired with fp32 ones (default: suite, then profile)
    case_budget_s: Optional[float] = None  # default: the profile's (harness/profiles.py)
    eval_samples: Optional[int] = None  # every case scores a seeded subset of this many samples (default: the suites')
    limits: Limits = field(default_factory=Limits)  # the command line's limits for the answer (over each suite's)

    def budget_s(self, case_timeout_s: float) -> float:
        """Seconds a case may take in the runner: the profile's budget (or --case-budget), and
        never more than the target's case timeout, past which the runner is killed anyway."""
        budget = self.case_budget_s if self.case_budget_s is not None else profiles.resolve(self.profile).case_budget_s
        return min(case_timeout_s, budget) if budget is not None else case_timeout_s

    def timing(self, suite_timing: Timing) -> Timing:
        # a suite that declares no timing gets the profile's; then the command line's values
        if replace(suite_timing, rounds=None) == Timing():
            suite_timing = replace(suite_timing, **dict(profiles.resolve(self.profile).timing))
        overrides = {
            k: v for k, v in (("min_runs", self.min_runs), ("min_duration_s", self.min_duration_s),
                              ("max_duration_s", self.max_duration_s), ("warmup_runs", self.warmup_runs))
            if v is not None
        }
        timing = replace(suite_timing, **overrides)
        if timing.min_duration_s > timing.max_duration_s:
            timing = replace(timing, max_duration_s=timing.min_duration_s)
        # rounds: --rounds, else the suite's, else the run profile's
        return replace(timing, rounds=self.rounds or timing.rounds or profiles.resolve(self.profile).rounds)
