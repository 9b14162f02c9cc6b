"""Measuring in rounds: a case in several fresh runner processes, each paired with a fresh run of
its fp32 baseline right beside it, and the speedup as a statistic over the rounds.

A machine drifts between speed levels from one process to the next (shared cores, frequency,
memory placement); a speedup taken from one fp32 process and one candidate process can be off
by that much. pyperf runs every benchmark in several worker processes; asv interleaves the
rounds of different benchmarks so drift spreads over all of them. Here each round r runs the
baseline and the case back to back, alternating which goes first (ABBA), so each round's ratio
compares two processes measured within seconds of each other, and drift between rounds cancels
in the ratio instead of entering it. The median, not the mean: a process now and then lands on
a slow level for its whole life (digits at 16 vs 25 us on this machine, about 1 process in 30),
which would move a mean of five ratios by 10%; the median ignores it, and the interval shows it.

    speedup       median over rounds of baseline p50 / case p50 (on the log scale, so an even
                  count takes the geometric midpoint of the middle two)
    interval      exact order-statistic (binomial) interval of that median
                  (harness.intervals.median_interval): the narrowest symmetric pair of ranked
                  ratios whose confidence reaches CONFIDENCE (95%), or with too few rounds for
                  that, the rounds' [min, max] at its true level: 2 rounds 50%, 3 rounds 75%,
                  4 87.5%, 5 93.8%, 6 96.9%. The level is a row column (`speedup_ci_level`) and
                  is printed with the interval ('1.55x [1.50-1.61 @75%]'); a percentile bootstrap
                  of a median over so few rounds returns the same extremes and calls them 95%.
    disagree      one meaning on every row (`rounds_disagree`): the interval of the median of
                  the row's per-round figures is wider than DISAGREE x that median (the ratios on
                  a row paired with its baseline, the p50s on an fp32 row); up to 8 rounds the
                  interval is the rounds' [min, max], so "their spread exceeds 20% of their
                  median": more rounds (or a quieter machine) are needed before acting on it

`run_rounds` is the loop itself: round r runs the case in a fresh runner process (the evaluation
pass in the first round only) and, when paired, the fp32 baseline right before it in even rounds
and right after it in odd ones (ABBA).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from harness.intervals import median_interval

CONFIDENCE = 0.95  # the level the interval aims for; with few rounds it states the level it has
DISAGREE = 0.20  # relative width of the median's interval (about +-10%) beyond which rounds disagree


def geometric_mean(values: Sequence[float]) -> float:
    return float(math.exp(np.mean(np.log(np.asarray(values, dtype=float)))))


def log_median(values: Sequence[float]) -> float:
    """The median of positive ratios taken on the log scale (scale-free for an even count)."""
    return float(math.exp(np.median(np.log(np.asarray(values, dtype=float)))))


def rounds_disagree(values: Sequence[float]) -> bool:
    """Whether the rounds disagree: the interval of the median of the per-round figures (positive:
    ratios or p50s) is wider than DISAGREE x their (log-scale) median. False for a single round."""
    interval = median_interval(values, CONFIDENCE)
    if interval is None:
        return False
    return bool((interval.high - interval.low) / log_median(values) > DISAGREE)


def paired_speedup(baseline_p50s: Sequence[float], case_p50s: Sequence[float]) -> dict[str, object]:
    """Row columns for a case measured in paired rounds against its fp32 baseline."""
    if len(baseline_p50s) != len(case_p50s) or not case_p50s:
        raise ValueError("paired rounds need one baseline p50 per case p50")
    ratios = [b / c for b, c in zip(baseline_p50s, case_p50s)]
    interval = median_interval(ratios, CONFIDENCE)
    return {
        "speedup": log_median(ratios),
        "speedup_ci_low": interval.low if interval else None,
        "speedup_ci_high": interval.high if interval else None,
        "speedup_ci_level": interval.level if interval else None,
        "speedup_rounds": " ".join(f"{r:.4g}" for r in ratios),
        "baseline_round_p50_ms": " ".join(f"{p:.6g}" for p in baseline_p50s),
        "rounds_disagree": rounds_disagree(ratios),
    }


def round_columns(p50s: Sequence[float]) -> dict[str, object]:
    """Row columns of a case's own rounds: their p50s, and whether they disagree (rounds_disagree
    over the p50s), for rows without a paired baseline (fp32 itself)."""
    return {"rounds": len(p50s), "round_p50_ms": " ".join(f"{p:.6g}" for p in p50s),
            "rounds_disagree": rounds_disagree(p50s) if min(p50s) > 0 else len(p50s) > 1}


def level_text(level: float) -> str:
    """'75%', '93.8%', '96.9%': an interval's stated confidence."""
    return f"{100 * level:.3g}%"


def speedup_text(speedup: Optional[float], low: Optional[float], high: Optional[float], disagree: Optional[bool],
                 level: Optional[float] = None) -> str:
    """'1.55x', or with rounds '1.55x [1.50-1.61 @75%]' (the interval's true level; rows written
    before it was stored have none) and a trailing '?' when the rounds disagree."""
    if speedup is None or (isinstance(speedup, float) and math.isnan(speedup)):
        return "-"
    text = f"{speedup:.2f}x"
    if low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
        at = f" @{level_text(level)}" if level is not None and not math.isnan(level) else ""
        text += f" [{low:.2f}-{high:.2f}{at}]"
    return text + ("?" if disagree is True else "")


@dataclass
class Rounds:
    """What the rounds of one case measured: the first round's runner outcome (its result and
    the evaluation outputs), every round's result, and the paired baseline's p50 and result per
    round (whether the baseline ran throttled or hit its time cap is the speedup's business too)."""

    first: Any = None
    results: list = field(default_factory=list)
    baseline_p50s: list = field(default_factory=list)
    baseline_results: list = field(default_factory=list)  # the paired baseline's runner result per round

    @property
    def case_p50s(self) -> list[float]:
        return [float(np.median(done["latencies_ms"])) for done in self.results]


def run_rounds(case, artifact, timing, paired, run_job: Callable[..., Any], work_dir: Callable[..., Path],
               progress: Callable[[str], None], device: str) -> Rounds:
    """Run the case `timing.rounds` times in fresh runner processes, each paired with a fresh
    run of its fp32 baseline (`paired`: (baseline case, its artifact), or None) in ABBA order.
    `run_job(case, artifact, timing, work_dir, evaluate)` runs one process and returns its
    outcome; `work_dir(case, r, baseline=False)` is where round r of the case (or of the
    baseline beside it) works."""
    rounds = max(1, timing.rounds or 1)
    done = Rounds()

    def baseline_round(r: int) -> None:  # one fresh process of the fp32 baseline, timing only
        base, base_artifact = paired
        progress(f"round {r + 1}/{rounds}: fp32 baseline beside it")
        ran = run_job(base, base_artifact, timing, work_dir(case, r, baseline=True), evaluate=False)
        done.baseline_p50s.append(float(np.median(ran.result["latencies_ms"])))
        done.baseline_results.append(ran.result)

    for r in range(rounds):
        # ABBA: the fp32 baseline runs right before the case in even rounds, right after it in odd ones
        if paired and r % 2 == 0:
            baseline_round(r)
        where = f"round {r + 1}/{rounds}, " if rounds > 1 else ""
        progress(f"measuring on {device} ({where}up to {timing.max_duration_s:g} s)")
        # the evaluation pass runs once per artifact and batch: in the first round only
        ran = run_job(case, artifact, timing, work_dir(case, r), evaluate=r == 0)
        done.first = done.first or ran
        done.results.append(ran.result)
        if paired and r % 2 == 1:
            baseline_round(r)
    return done

