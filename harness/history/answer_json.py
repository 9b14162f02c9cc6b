"""The answer for machines: `quantbench recommend --json` and `quantbench report --json`.

One JSON document (FORMAT, below, is its version) that CI reads instead of the answer's wording:

    {"format": 2, "kind": "quantbench.recommendation", "source": {...}, "limits": {<the flags>},
     "recommendations": [{"target", "model", "batch_size", "answer": "onnxruntime/static-int8",
                          "limits": {<applied: the suite's defaults under the flags>},
                          "choice": <case> | null, "runner_up": <case> | null,
                          "no_mode_meets": null | {"limits": "...", "closest": <case> | null},
                          "excluded": [{<case identity>, "reason": "...", "broke": ["max_p99_ms"]}],
                          "race": null | {"verdict": "winner"|"tie", "leader", "versus": [...], "rounds",
                                          "statistic": "p50"|"p99", "per_round_ms", ...},
                          "headline": "..."}],
     "fleet": [{"model", "batch_size", "devices", "answer", "kind"}]}

A <case> is its identity (case_id, framework, mode, recipe, run_id) and its evidence: p50/p99,
speedup with its interval and that interval's true confidence level, rounds, accuracy with its
interval and its delta vs fp32, size, peak memory, energy, the flags (noisy, throttled,
valid) and the fp32 baseline its speedup divides by (the row's columns baseline_case,
baseline_recipe, baseline_throttled, baseline_valid, baseline_timing_note: what the candidate
rule reads to trust that side). A figure the row does not have is null, never 0.

Versions (FORMAT): 1, the first (issue 22); 2: each case's evidence gains the row's baseline_case,
baseline_recipe, baseline_throttled, baseline_valid and baseline_timing_note, and a
race says its `statistic` (p50 or p99) and gives its rounds as `per_round_ms` (was `p50_ms`).
"""
from __future__ import annotations

from typing import Any, Optional

from harness.history.candidate import Candidate
from harness.history.recommend import Recommendation, recipe_slug
from harness.limits import Limits
from harness.values import number, plain

FORMAT = 2  # 1: the first version (issue 22); 2: evidence.baseline_*, race.statistic + per_round_ms
KIND = "quantbench.recommendation"

_FIGURES = ("latency_p50_ms", "latency_p99_ms", "iqr_over_median", "n_runs", "speedup", "speedup_ci_low",
            "speedup_ci_high", "speedup_ci_level", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "accuracy_delta",
            "size_bytes", "size_ratio", "peak_rss_mb", "energy_mj_per_inf")


def _flag(value: Any) -> Optional[bool]:
    value = plain(value)
    return None if value is None else bool(value)


def identity(row: dict[str, Any]) -> dict[str, Any]:
    return {"case_id": row.get("case_id"), "framework": row.get("framework"), "mode": row.get("mode"),
            "recipe": plain(row.get("recipe")), "recipe_slug": recipe_slug(row) or None, "run_id": plain(row.get("run_id"))}


def case(c: Optional[Candidate], noise: float) -> Optional[dict[str, Any]]:
    """A candidate's identity and evidence (None for None)."""
    if c is None:
        return None
    row = c.row
    evidence: dict[str, Any] = {name: number(row.get(name)) for name in _FIGURES}
    for name in ("n_runs", "size_bytes"):
        evidence[name] = None if evidence[name] is None else int(evidence[name])
    rounds = number(row.get("rounds"))  # runner processes (each paired with an fp32 one); none recorded: one
    rounds = rounds if rounds is not None else number(row.get("speedup_rounds"))
    evidence["rounds"] = int(rounds) if rounds is not None else 1
    iqr = evidence["iqr_over_median"]
    evidence["flags"] = {"noisy": None if iqr is None else iqr >= noise, "throttled": _flag(row.get("throttled")),
                         "valid": _flag(row.get("valid")), "rounds_disagree": _flag(row.get("rounds_disagree"))}
    evidence.update(baseline(row))
    return {**identity(row), "eligible": c.eligible, "why": c.why, "evidence": evidence}


def baseline(row: dict[str, Any]) -> dict[str, Any]:
    """The fp32 side of the row's speedup, as the candidate rule reads it (candidate.untrusted_baseline):
    its case id and recipe, whether it ran throttled or stopped at its time cap (valid), and the note
    saying why it cannot be trusted; null where the row has none (an fp32 row, a failed baseline)."""
    text = lambda name: None if plain(row.get(name)) in (None, "") else str(plain(row.get(name)))  # noqa: E731
    return {"baseline_case": text("baseline_case"), "baseline_recipe": text("baseline_recipe"),
            "baseline_throttled": _flag(row.get("baseline_throttled")), "baseline_valid": _flag(row.get("baseline_valid")),
            "baseline_timing_note": text("baseline_timing_note")}


def recommendation(rec: Recommendation) -> dict[str, Any]:
    others = [c for c in rec.candidates if c.eligible and c is not rec.choice]
    closest = rec.closest if rec.choice is None else None
    return {
        "target": rec.target, "model": rec.model, "batch_size": rec.batch_size,
        "answer": rec.answer,
        "objective": rec.limits.goal,
        "limits": rec.limits.as_dict(resolved=True),
        "choice": case(rec.choice, rec.noise),
        "runner_up": case(others[0] if others else None, rec.noise),
        "no_mode_meets": None if rec.choice is not None else {
            "limits": rec.limits.describe(), "closest": case(closest, rec.noise)},
        "excluded": [{**identity(c.row), "status": c.row.get("status"), "reason": c.why, "broke": list(c.broke),
                      "untrusted_timing": c.untrusted} for c in rec.candidates if not c.eligible],
        "race": race(rec),
        "headline": rec.headline(),
    }


def race(rec: Recommendation) -> Optional[dict[str, Any]]:
    """The race of the finalists that decided the choice (harness/race.py), or None: its verdict
    ('winner' or 'tie'), the leader, each other finalist's median paired ratio (its p50 / the
    leader's) with the interval and its true level, and the per-round p50s."""
    if rec.race is None:
        return None
    v = rec.race.verdict()
    return {"verdict": "winner" if v.winner else "tie", "leader": v.leader, "tied": [o.case_id for o in v.tied],
            "versus": [{"case_id": o.case_id, "ratio": o.ratio, "ci_low": o.interval.low if o.interval else None,
                        "ci_high": o.interval.high if o.interval else None,
                        "ci_level": o.interval.level if o.interval else None, "separated": o.separated} for o in v.others],
            "rounds": v.rounds, "finalists": list(rec.race.finalists), "statistic": rec.race.statistic,
            "per_round_ms": [list(r) for r in rec.race.per_round_ms],
            "stopped": rec.race.stopped, "seconds": rec.race.seconds, "cap_s": rec.race.cap_s, "run_id": rec.race.run_id}


def document(recs: list[Recommendation], fleet: list = (), flags: Limits = Limits(),
             source: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The whole answer: every (target, model, batch)'s recommendation, the fleet's, and the
    command-line limits (`flags`) each recommendation's own `limits` applied over its suite's."""
    return {
        "format": FORMAT,
        "kind": KIND,
        "source": source or {},
        "limits": flags.as_dict(),
        "recommendations": [recommendation(rec) for rec in recs],
        "fleet": [{"model": f.model, "batch_size": f.batch_size, "devices": list(f.devices), "answer": f.answer,
                   "kind": f.kind, "headline": f.headline()} for f in fleet],
    }
