"""Running the race of the finalists (harness/race.py) at the end of a run, before the answer.

`run_races(session, limits, cap_s)`: per (target, model, batch) of the session's rows, the
candidates recommend() ranks first (the same candidate rule and limits as the answer: the
session's command-line limits over each suite's declared ones), the eligible ones within
race.MARGIN of the best figure of the objective (p50, or p99; at most race.MAX_FINALISTS) race in
fresh runner processes on the board that measured them, with the same artifacts and timing,
round after round, until the verdict is settled, MAX_ROUNDS, or the cap. Each round compares
that figure (race.figure). An objective the race cannot measure (size: exact, nothing to race;
energy: not raced, see harness/history/margins.py) has no race. Each race is written to
results/<run>/finalists.json and as the `race` column of its finalists' rows.

A run across several boards or xdist workers (a fleet) has no race yet: its answer says its
p50s come from separate processes.
"""
from __future__ import annotations

import time
from typing import Any, Optional

import pandas as pd

from harness import race as race_
from harness.pipeline import CaseFailure
from harness.race import Race


def finalists(rec) -> list[str]:
    """The case ids that race for `rec` (a Recommendation): its eligible candidates within MARGIN
    of the best figure of the objective (p50 or p99), best first, at most MAX_FINALISTS; [] when
    the objective is not raced (size, energy) or fewer than two qualify."""
    if rec.choice is None or rec.limits.goal not in race_.STATISTICS:
        return []
    column = rec.limits.column
    eligible = sorted((c for c in rec.candidates if c.eligible), key=lambda c: float(c.row[column]))
    best = float(eligible[0].row[column])
    near = [c.row["case_id"] for c in eligible if float(c.row[column]) <= best * (1.0 + race_.MARGIN)]
    return near[:race_.MAX_FINALISTS] if len(near) >= 2 else []


def run_race(session, key: tuple[str, str, int], case_ids: list[str], cap_s: float, statistic: str = "p50") -> Race:
    """Interleaved rounds of the finalists (each in a fresh runner process, ABBA order), comparing
    each round's `statistic` (p50 or p99) of their latencies, until the verdict is settled,
    MAX_ROUNDS, or another round would pass `cap_s` seconds."""
    entrants = [session.measured_cases[c] for c in case_ids]
    rounds: list[tuple[float, ...]] = []
    start = time.perf_counter()
    stopped = "rounds"
    while len(rounds) < race_.MAX_ROUNDS:
        verdict = race_.verdict(case_ids, rounds)
        if verdict is not None and verdict.winner is not None:
            stopped = "separated"
            break
        if verdict is not None and verdict.settled:
            stopped = "same"
            break
        elapsed = time.perf_counter() - start
        if rounds and elapsed + elapsed / len(rounds) > cap_s:
            stopped = "cap"
            break
        r = len(rounds)
        order = list(range(len(entrants))) if r % 2 == 0 else list(reversed(range(len(entrants))))
        figures = [0.0] * len(entrants)
        try:
            for i in order:
                case, artifact = entrants[i]
                session.progress(f"race of {key[1]}: round {r + 1}, {case.case_id}")
                folder = session.store.dir / "work" / "race" / case.case_id / f"round-{r}"
                ran = session._run_job(case, artifact, session.options.timing(case.timing), folder, evaluate=False)
                figures[i] = race_.figure(ran.result["latencies_ms"], statistic)
        except CaseFailure as exc:
            stopped = f"failed: {exc}"[:300]
            break
        rounds.append(tuple(figures))
    return Race(key[0], key[1], int(key[2]), session.run_id, tuple(case_ids), tuple(rounds), cap_s,
                round(time.perf_counter() - start, 3), stopped, statistic)


def run_races(session, limits: Any = None, cap_s: Optional[float] = None) -> list[Race]:
    """Race the finalists of every (target, model, batch) this session measured; store each race.
    `limits`: the command line's (Limits, or an accuracy budget in points; None: the session's
    own, `session.options.limits`), over each suite's declared ones, as the answer applies them."""
    from harness.history.recommend import as_limits, recommend
    from harness.limits import Limits
    from harness.store import Run

    if session.fleet or not session.rows:
        return []
    cap = race_.cap_for(session.options.profile, cap_s)
    if cap <= 0:  # --qb-race-cap 0: no race, as --qb-no-race
        return []
    flags = as_limits(session.options.limits if limits is None else limits)
    declared = {suite: Limits.from_dict(values) for suite, values in Run(session.store.dir).declared_limits.items()}
    races = []
    for rec in recommend(pd.DataFrame(session.rows), flags, suite_limits=declared):
        case_ids = [c for c in finalists(rec) if c in session.measured_cases]
        if len(case_ids) < 2:
            continue
        session.progress.start(f"race: {rec.model} on {rec.target}")
        try:
            race = run_race(session, (rec.target, rec.model, rec.batch_size), case_ids, cap, rec.limits.goal)
        finally:
            session.progress.finish()
        session.store.log(f"race of {rec.model} on {rec.target}: {race.to_json()}")
        for case_id in case_ids:
            session.annotate(case_id, race=race.to_json())
        races.append(race)
    if races:
        race_.write(session.store.dir, races)
    return races
