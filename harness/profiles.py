"""Run profiles: how much of the declared matrix a run measures.

`quick` (the default, what `./scripts/run.sh` runs) answers in minutes: every framework and
mode, on the shapes a suite keeps for it, each evaluation pass on the suite's declared seeded
subset, and a time budget per case. `nightly` (`--profile nightly`) is the full matrix: every
shape, batch and recipe, every evaluation sample, no budget but the target's case timeout.

A suite says which profiles run it (`Suite(profiles=...)`) and how many evaluation samples a
profile scores (`Suite(eval_samples={"quick": 200})`); a recipe says which profiles run it
(`Recipe(profiles=...)`: alternatives of a mode, such as a second execution format, are
nightly-only). A case runs in a profile when its suite and its recipe both name it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

QUICK = "quick"
NIGHTLY = "nightly"
ENV = "QUANTBENCH_PROFILE"  # the default profile when --profile is not given
EVAL_SEED = 0  # the seed of every evaluation subset: the same samples in every run


@dataclass(frozen=True)
class Profile:
    name: str
    help: str  # one line for --help
    # Seconds a case may take in the runner (load, warmup, timed loop, evaluation). Checked
    # before the evaluation pass, from the measured per-call latency: a case projected past
    # it keeps its latency figures and skips the evaluation, with the projection in its
    # reason. None: only the target's case timeout (case_timeout_s) bounds a case.
    case_budget_s: Optional[float]
    # Fresh runner processes per case, each beside a fresh fp32 baseline process, when neither
    # --rounds nor the suite's Timing.rounds says otherwise (harness/rounds.py). 1 = one process,
    # no interval on the speedup.
    rounds: int = 1
    # The timing (Timing field -> value) of the suites that declare none (their Timing is the
    # default one); a suite's own Timing stands, and command-line flags (--min-runs, ...) win over
    # both. The quick profile keeps a slow recipe's warmup and timed loop to a few seconds:
    # tens of calls, not a hundred.
    timing: tuple[tuple[str, float], ...] = ()


QUICK_TIMING = (("warmup_runs", 5), ("warmup_s", 0.1), ("min_runs", 20), ("min_duration_s", 0.5), ("max_duration_s", 3.0))

PROFILES: dict[str, Profile] = {
    QUICK: Profile(QUICK, "every framework and mode on each suite's quick shapes, evaluation on declared seeded "
                          "subsets, timed loops of 20+ calls over 0.5-3 s, 45 s budget per case, one round (the default; "
                          "the answer's finalists then race, up to 20 s per model: harness/race.py)",
                   case_budget_s=45.0, rounds=1, timing=QUICK_TIMING),
    NIGHTLY: Profile(NIGHTLY, "the full matrix: every shape, batch and recipe, full evaluation sets, no budget "
                              "but the target's case timeout, 3 rounds per case with a speedup interval",
                     case_budget_s=None, rounds=3),
}
ALL_PROFILES: tuple[str, ...] = tuple(PROFILES)
NIGHTLY_ONLY: tuple[str, ...] = (NIGHTLY,)  # e.g. Recipe(..., profiles=NIGHTLY_ONLY): out of the quick default


def resolve(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})")
    return PROFILES[name]
