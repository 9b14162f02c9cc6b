"""The race of the finalists: which of the best candidates is faster, by paired, interleaved
measurement rather than by p50s timed in separate processes minutes apart.

A machine runs a fresh process at one of a few speed levels (the same artifact at 15 or 21 us
from one process to the next), so two rows' p50s can disagree with the truth in sign. After the
cases of a (target, model, batch) ran, the eligible candidates whose p50 (p99 when that is the
objective) is within MARGIN of the best one's (at most MAX_FINALISTS) race: each round runs every finalist once in a fresh runner
process, in order in even rounds and in reverse order in odd ones (ABBA, as harness/rounds.py
pairs a case with its fp32 baseline), on the same artifacts. Each round records each finalist's
figure of the objective (`statistic`: its p50, or its p99 when the answer minimises p99; the
race is for latency objectives only: a size is exact and needs none, and energy is not raced,
see harness/history/margins.py). After each round:

    leader     the finalist with the lowest median (over rounds) of its figure relative to the
               round's geometric mean
    ratio      per round, another finalist's figure / the leader's; its median over the rounds and
               the exact order-statistic interval of that median (harness.intervals.median_interval,
               at its true level)
    separated  the interval, at a level of at least MIN_LEVEL (6 rounds or more), lies above 1 + TIE:
               the leader is faster in so many rounds that chance is ruled out, and by more than
               the few percent two processes of one artifact differ by at the same speed level
               (two copies of one artifact almost never pass that)
    same       the interval lies within TIE of 1 at that level: a tie, measured

The race stops when every other finalist is separated from the leader (the leader wins), when
every one is either separated or the same (a tie), at MAX_ROUNDS, or when another round would
pass the cap in seconds (a tie: "within N%", N from the interval). This module is the race's
record and its verdict (no running: harness/race_run.py); the record is stored in the run
(`finalists.json`, and as the `race` column of each finalist's row), so the end-of-run answer,
`quantbench recommend` and the dashboard recompute the same verdict from the same rounds.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from harness.intervals import MedianInterval, median_interval
from harness.rounds import level_text, log_median

# The record's format (finalists.json and the `race` column carry it as "format"):
#   1: target, model, batch_size, run_id, finalists (case ids), p50_ms (per round, per finalist),
#      cap_s, seconds, stopped
#   2: p50_ms renamed per_round_ms, and `statistic` (p50 or p99: what per_round_ms holds); a
#      format-1 record reads as statistic p50
FORMAT = 2
FILE = "finalists.json"
MARGIN = 0.5  # candidates with a p50 within 1.5x the best's race (processes differ by that much here)
MAX_FINALISTS = 3
MIN_LEVEL = 0.95  # a difference (or a sameness) is declared only at this confidence or more
TIE = 0.03  # two finalists whose ratio's interval lies within 3% of 1 are the same speed
MAX_ROUNDS = 40
# Seconds of racing per (target, model, batch), per profile. Quick: 20, so the quick main job stays
# within its 2 minutes warm (a model whose finalists are neither separated nor the same takes the whole
# cap: two such models took 60 s of a 133.5 s warm job at 30 s); nightly: 120.
CAPS = {"quick": 20.0, "nightly": 120.0}
DEFAULT_CAP = 20.0
# objective -> the percentile of a round's latencies the race compares (harness/limits.py OBJECTIVES);
# the objectives not here are not raced
STATISTICS = {"p50": 50.0, "p99": 99.0}


def figure(latencies_ms: Sequence[float], statistic: str) -> float:
    """A round's figure of one finalist: the percentile `statistic` names of its timed latencies, as
    harness.stats.latency_stats computes the row's (numpy's linear interpolation)."""
    return float(np.percentile(np.asarray(latencies_ms, dtype=float), STATISTICS[statistic]))


def cap_for(profile: str, cap_s: Optional[float] = None) -> float:
    """The race's cap in seconds: --qb-race-cap, else the profile's."""
    return float(cap_s) if cap_s is not None else CAPS.get(profile, DEFAULT_CAP)


@dataclass(frozen=True)
class Versus:
    """Another finalist against the leader: ratio = its p50 / the leader's (> 1: the leader is faster)."""

    case_id: str
    ratio: float  # median over the rounds (log scale)
    interval: Optional[MedianInterval]

    @property
    def separated(self) -> bool:
        return self.interval is not None and self.interval.level >= MIN_LEVEL and self.interval.low > 1.0 + TIE

    @property
    def same(self) -> bool:
        i = self.interval
        return i is not None and i.level >= MIN_LEVEL and i.low >= 1.0 / (1.0 + TIE) and i.high <= 1.0 + TIE

    @property
    def within(self) -> float:
        """How far apart the two may be on this evidence (relative): the interval's far end."""
        if self.interval is None:
            return math.inf
        return max(self.interval.high, 1.0 / self.interval.low) - 1.0

    def bracket(self) -> str:
        i = self.interval
        return "" if i is None else f"[{i.low:.2f}-{i.high:.2f} @{level_text(i.level)}, "


@dataclass(frozen=True)
class Verdict:
    leader: str
    others: tuple[Versus, ...]  # nearest first
    rounds: int

    @property
    def winner(self) -> Optional[str]:
        """The leader when every other finalist is separated from it, else None (a tie)."""
        return self.leader if self.others and all(o.separated for o in self.others) else None

    @property
    def tied(self) -> tuple[Versus, ...]:
        """The finalists not separated from the leader."""
        return tuple(o for o in self.others if not o.separated)

    @property
    def settled(self) -> bool:
        """Nothing more to learn: every other finalist is separated from the leader or the same as it."""
        return bool(self.others) and all(o.separated or o.same for o in self.others)


def verdict(finalists: Sequence[str], per_round_ms: Sequence[Sequence[float]]) -> Optional[Verdict]:
    """The leader and every other finalist against it, from per-round figures (p50s or p99s: a row
    per round, a column per finalist); None without a round or with fewer than two finalists."""
    if len(finalists) < 2 or not per_round_ms:
        return None
    logs = np.log(np.asarray(per_round_ms, dtype=float))
    relative = logs - logs.mean(axis=1, keepdims=True)  # each round against its own geometric mean
    lead = int(np.argmin(np.median(relative, axis=0)))
    others = []
    for j, case_id in enumerate(finalists):
        if j == lead:
            continue
        ratios = [row[j] / row[lead] for row in per_round_ms]
        others.append(Versus(case_id, log_median(ratios), median_interval(ratios, MIN_LEVEL)))
    others.sort(key=lambda o: o.ratio)
    return Verdict(finalists[lead], tuple(others), len(per_round_ms))


@dataclass(frozen=True)
class Race:
    """What one race measured: the finalists (case ids, in round 0's order), each round's figure of
    each (`statistic`: p50 or p99, in ms), the cap, how long it took and why it stopped."""

    target: str
    model: str
    batch_size: int
    run_id: str
    finalists: tuple[str, ...]
    per_round_ms: tuple[tuple[float, ...], ...]
    cap_s: float
    seconds: float
    stopped: str  # separated | same | cap | rounds | failed: <why>
    statistic: str = "p50"  # what per_round_ms holds: each round's p50 or p99 (STATISTICS)

    @property
    def key(self) -> tuple[str, str, int]:
        return self.target, self.model, int(self.batch_size)

    def verdict(self) -> Optional[Verdict]:
        return verdict(self.finalists, self.per_round_ms)

    def among(self, case_ids: Sequence[str]) -> "Race":
        """The same rounds, only the finalists in `case_ids` (those eligible under the limits in force)."""
        keep = [i for i, c in enumerate(self.finalists) if c in set(case_ids)]
        return Race(self.target, self.model, self.batch_size, self.run_id, tuple(self.finalists[i] for i in keep),
                    tuple(tuple(row[i] for i in keep) for row in self.per_round_ms), self.cap_s, self.seconds, self.stopped,
                    self.statistic)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["finalists"], out["per_round_ms"] = list(self.finalists), [list(r) for r in self.per_round_ms]
        return {"format": FORMAT, **out}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Race":
        if int(data.get("format") or 0) > FORMAT:
            raise ValueError(f"a race record of format {data['format']}, newer than this quantbench reads ({FORMAT}); "
                             "upgrade quantbench")
        rounds = data["per_round_ms"] if "per_round_ms" in data else data["p50_ms"]  # format 1: p50s
        return cls(str(data["target"]), str(data["model"]), int(data["batch_size"]), str(data["run_id"]),
                   tuple(data["finalists"]), tuple(tuple(float(v) for v in r) for r in rounds),
                   float(data["cap_s"]), float(data["seconds"]), str(data["stopped"]), str(data.get("statistic") or "p50"))

    @classmethod
    def from_json(cls, text: Any) -> Optional["Race"]:
        """A row's `race` cell: the record, or None (empty, NaN, not a record)."""
        if not isinstance(text, str) or not text.strip().startswith("{"):
            return None
        return cls.from_dict(json.loads(text))


def describe(race: Race, names: dict[str, str]) -> str:
    """'ship X: 1.32x faster than Y [1.20-1.45 @93.8%, 6 interleaved rounds]' or 'a tie: X or Y, within
    4% [0.98-1.04 @96.9%, 12 interleaved rounds, stopped at the 25 s cap]' (`names`: case id -> label);
    a race of p99s says so: 'ship X: p99 1.32x lower than Y [...]', 'a tie: X or Y, p99 within 4% [...]'."""
    v = race.verdict()
    if v is None:
        return ""
    name = lambda c: names.get(c, c)  # noqa: E731
    capped = f", stopped at the {race.cap_s:g} s cap" if race.stopped == "cap" else (
        f", stopped: {race.stopped}" if race.stopped.startswith("failed") else "")
    rounds = f"{v.rounds} interleaved round{'s' if v.rounds != 1 else ''}{capped}]"
    if v.winner is not None:
        near = v.others[0]
        how = f"{near.ratio:.2f}x faster than" if race.statistic == "p50" else f"{race.statistic} {near.ratio:.2f}x lower than"
        return f"ship {name(v.leader)}: {how} {name(near.case_id)} {near.bracket() or '['}{rounds}"
    tied = v.tied
    widest = max(tied, key=lambda o: o.within)
    within = "an unknown margin" if not math.isfinite(widest.within) else f"{math.ceil(100 * widest.within - 1e-9):.0f}%"
    on = "" if race.statistic == "p50" else f" {race.statistic}"
    return (f"a tie: {' or '.join(name(c) for c in (v.leader, *(o.case_id for o in tied)))},{on} within {within} "
            f"{widest.bracket() or '['}{rounds}")


def write(run_dir: Path, races: Sequence[Race]) -> Path:
    """results/<run>/finalists.json: every race of the run."""
    path = Path(run_dir) / FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "races": [r.to_dict() for r in races]}, indent=1))
    tmp.replace(path)
    return path


def read(run_dir: Path) -> list[Race]:
    """The races stored in a run directory ([] without a finalists.json)."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    if int(data.get("format") or 0) > FORMAT:
        raise ValueError(f"{path} has format {data['format']}, newer than this quantbench reads ({FORMAT})")
    return [Race.from_dict(r) for r in data.get("races") or []]
