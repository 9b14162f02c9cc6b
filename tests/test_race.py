"""The race of the finalists (harness/race.py, harness/race_run.py): interleaved rounds in fresh
runner processes that stop on a clear difference, end in a tie on two copies of one artifact, and
are stored where `recommend()` reads them back."""
from __future__ import annotations

import numpy as np
import pytest

from harness import race as race_
from harness.history.recommend import recommend
from harness.models import onnx_model
from harness.race import Race, verdict
from harness.race_run import run_race
from harness.session import BenchSession, SessionOptions
from harness.store import load_run
from harness.suite import Suite, Timing
from targets import TargetConfig
from tests import onnx_models
from harness import settings

CACHE = settings.cache_dir()

TIMING = Timing(warmup_runs=2, min_runs=20, min_duration_s=0.1, max_duration_s=1.0)


def test_two_copies_of_one_speed_almost_never_make_a_winner():
    """The stopping rule on two finalists of the same speed, a process landing on one of two speed
    levels (1.0 or 1.4) at random, as this machine does: over 2,000 simulated races that look after
    every round up to 20 rounds, a winner is declared in under 1% of them."""
    rng = np.random.default_rng(0)
    wins = 0
    for _ in range(2000):
        rounds = []
        for _ in range(20):
            rounds.append(tuple(rng.choice([1.0, 1.4]) * rng.normal(1.0, 0.01) for _ in range(2)))
            v = verdict(("a", "b"), rounds)
            if v.winner is not None:
                wins += 1
                break
    assert wins / 2000 < 0.01, wins


def test_a_clear_difference_is_declared_at_the_rounds_its_level_needs():
    """One finalist 30% faster in every round: separated once the interval's level reaches
    MIN_LEVEL (not before), and the verdict names it with its interval and rounds."""
    rounds = []
    for n in range(1, 10):
        rounds.append((1.0, 1.3 + 0.01 * n))
        v = verdict(("fast", "slow"), rounds)
        level = v.others[0].interval.level if v.others[0].interval else 0.0
        assert (v.winner == "fast") is (level >= race_.MIN_LEVEL), (n, level)
    race = Race("local", "m", 1, "r", ("fast", "slow"), tuple(rounds[:6]), 30.0, 9.0, "separated")
    assert race_.describe(race, {"fast": "A", "slow": "B"}) == "ship A: 1.33x faster than B [1.31-1.36 @96.9%, 6 interleaved rounds]"
    assert Race.from_json(race.to_json()) == race and Race.from_json(float("nan")) is None


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """A real session on the local target: two onnx models measured, `tiny` (a logistic regression)
    under two names (two copies of one artifact) and `wide` (a 1024-wide, 4-layer MLP: some thousand
    times the multiply-adds of tiny)."""
    folder = tmp_path_factory.mktemp("race-models")
    _, _, x_calib, x_eval, y_eval = onnx_models.digits_flat()
    onnx_models.write_npz(folder / "data.npz", x_eval, y_eval, x_calib)
    onnx_models.logistic_regression(folder / "tiny.onnx")
    onnx_models.wide_mlp(folder / "wide.onnx")
    options = SessionOptions(results_dir=tmp_path_factory.mktemp("race-results"), cache_dir=CACHE, threads=1,
                             run_id="race", rounds=1)
    bench = BenchSession(TargetConfig(name="local", kind="local"), options)
    ids = {}
    for name, file, modes in (("tiny", "tiny.onnx", ("fp32", "dynamic-int8")), ("tiny-copy", "tiny.onnx", ("fp32",)),
                              ("wide", "wide.onnx", ("fp32",))):
        suite = Suite(model=onnx_model(name, folder / file, data=folder / "data.npz"), modes=modes, name=name,
                      timing=TIMING, budgets={m: 100.0 for m in modes if m != "fp32"})
        for case in suite.cases():
            row = bench.run_case(case)
            assert row["status"] == "ok", row["reason"]
            ids[name if case.mode == "fp32" else f"{name}-{case.mode}"] = case.case_id
    yield bench, ids
    bench.close()


def test_the_race_stops_on_a_clear_difference(session):
    bench, ids = session
    race = run_race(bench, ("local", "tiny-vs-wide", 1), [ids["wide"], ids["tiny"]], cap_s=60.0)
    v = race.verdict()
    assert race.stopped == "separated" and v.winner == ids["tiny"], race
    # derived from the rounds themselves: tiny ran faster than wide in every round the race took,
    # and it stopped as soon as its interval reached the level (MIN_LEVEL) it needs
    assert all(row[1] < row[0] for row in race.per_round_ms), race.per_round_ms
    assert v.others[0].interval.level >= race_.MIN_LEVEL
    assert verdict(race.finalists, race.per_round_ms[:-1]).winner is None
    # each round ran every finalist in a fresh runner process, in ABBA order
    work = bench.store.dir / "work" / "race"
    assert sorted(p.name for p in (work / ids["tiny"]).iterdir()) == sorted(f"round-{r}" for r in range(len(race.per_round_ms)))


def test_two_copies_of_one_artifact_are_a_tie(session):
    bench, ids = session
    tiny, copy = bench.measured_cases[ids["tiny"]][1], bench.measured_cases[ids["tiny-copy"]][1]
    assert tiny.manifest["sha256"] == copy.manifest["sha256"]  # the same model file, twice
    race = run_race(bench, ("local", "tiny-twice", 1), [ids["tiny"], ids["tiny-copy"]], cap_s=8.0)
    v = race.verdict()
    assert v.winner is None and race.stopped in ("cap", "same"), race
    text = race_.describe(race, {ids["tiny"]: "tiny", ids["tiny-copy"]: "tiny copy"})
    assert text.startswith(("a tie: tiny or tiny copy, within ", "a tie: tiny copy or tiny, within ")), text
    assert f"{len(race.per_round_ms)} interleaved rounds" in text


def test_stored_races_are_what_recommend_answers_with(session, monkeypatch):
    """run_races races the eligible candidates of each model (every one here: MARGIN made wide, so
    the premise does not hang on how far apart this machine times fp32 and dynamic-int8), stores the
    race in finalists.json and in its finalists' rows; recommend() on the run's rows read back (as the
    end of a run and `quantbench recommend` read them) answers with it."""
    from harness.race_run import run_races

    monkeypatch.setattr(race_, "MARGIN", 1000.0)
    bench, ids = session
    races = run_races(bench, limits=100.0, cap_s=8.0)
    assert [r.model for r in races] == ["tiny"]  # the only model with two candidates
    assert sorted(races[0].finalists) == sorted([ids["tiny"], ids["tiny-dynamic-int8"]])
    assert race_.read(bench.store.dir) == races
    bench.store.finish(bench.command, bench.started_at, bench.placements, bench.options, bench.boards.facts())
    df = load_run(bench.store.dir)
    recs = {rec.model: rec for rec in recommend(df, 100.0)}
    rec, race = recs["tiny"], races[0]
    assert rec.race == race and rec.choice.row["case_id"] == race.verdict().leader
    assert rec.headline().startswith("tiny on local: " + ("ship " if race.verdict().winner else "a tie: ")), rec.headline()
    assert "interleaved round" in rec.headline() and "race of the finalists" in "\n".join(rec.evidence())
    for case_id in race.finalists:
        assert Race.from_json(df[df["case_id"] == case_id]["race"].iloc[0]) == race
    from harness.history.answer_json import recommendation

    doc = recommendation(rec)  # quantbench recommend --json: the race beside the choice
    assert doc["race"]["leader"] == rec.choice.row["case_id"] and doc["race"]["rounds"] == len(race.per_round_ms)
    assert doc["race"]["verdict"] == ("winner" if race.verdict().winner else "tie")
    # the same rows without the race column: p50s of separate processes, and the answer says so
    plain = recommend(df.drop(columns=["race"]), 100.0)
    [bare] = [r for r in plain if r.model == "tiny"]
    assert bare.race is None and "p50s from separate processes, not raced" in bare.headline()


def test_under_the_p99_objective_the_finalists_race_their_p99s(session, monkeypatch):
    """--qb-objective p99: the race compares each round's p99 (the percentile of that round's own latencies,
    as the row's latency_p99_ms is computed), is stored as a p99 race, and decides the answer under p99
    only: the same rows answered under p50 are not decided by it."""
    from harness.limits import Limits
    from harness.race_run import run_races

    monkeypatch.setattr(race_, "MARGIN", 1000.0)
    bench, ids = session
    seen: dict[str, list[list[float]]] = {}
    real = bench._run_job

    def recorded(case, artifact, timing, folder, evaluate=True):
        ran = real(case, artifact, timing, folder, evaluate=evaluate)
        seen.setdefault(case.case_id, []).append(list(ran.result["latencies_ms"]))
        return ran

    monkeypatch.setattr(bench, "_run_job", recorded)
    races = run_races(bench, limits=Limits(max_accuracy_drop=100.0, objective="p99"), cap_s=8.0)
    [race] = [r for r in races if r.model == "tiny"]
    assert race.statistic == "p99" and sorted(race.finalists) == sorted([ids["tiny"], ids["tiny-dynamic-int8"]])
    for i, case_id in enumerate(race.finalists):  # each round's figure is that round's p99
        assert [row[i] for row in race.per_round_ms] == pytest.approx([np.percentile(lat, 99) for lat in seen[case_id]])
    bench.store.finish(bench.command, bench.started_at, bench.placements, bench.options, bench.boards.facts())
    df = load_run(bench.store.dir)
    [rec] = [r for r in recommend(df, Limits(max_accuracy_drop=100.0, objective="p99")) if r.model == "tiny"]
    assert rec.race == race and rec.choice.row["case_id"] == race.verdict().leader
    head = rec.headline()
    assert head.startswith("tiny on local: ") and (": p99 " in head if race.verdict().winner else ", p99 within " in head), head
    assert "p99 per round" in "\n".join(rec.evidence())
    [p50] = [r for r in recommend(df, 100.0) if r.model == "tiny"]
    assert p50.race is None and "p50s from separate processes, not raced" in p50.headline()
