"""Baselines and gates on real runs of the digits onnxruntime suite, and on copies of them
whose latencies (or columns) a test changed on purpose (history_support.derive_run, labelled
in the run's manifest and rows)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from harness.history.db import HistoryDB, HistoryError
from harness.store import read_run_dir
from harness.history.gates import Gates
from harness.history.regress import (IMPROVEMENT, NOISY, REGRESSION, SAME, UNJUDGED, Baseline, compare, failure_message,
                                     judge_case, select_baseline, verdict_table)
from harness.history.stepdetect import detect_steps, segments
from tests.history_support import derive_run, real_runs

FP32 = "digits-cnn-onnxruntime-fp32-b1"
QDQ = "digits-cnn-onnxruntime-static-int8-qdq-b1"
# The real runs share 2 cores with other work, so their IQR/median may pass 0.10; tests that
# are not about the noise flag switch it off (QUIET), the noise test uses the default.
QUIET = Gates(noise=10.0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return real_runs(tmp_path_factory)


def _case(run_dir, case_id):
    record = json.loads((run_dir / "cases" / f"{case_id}.json").read_text())
    return record["row"], np.asarray(record["latencies_ms"])


def _judge(old_dir, new_dir, case_id, gates=QUIET):
    old, old_lat = _case(old_dir, case_id)
    new, new_lat = _case(new_dir, case_id)
    return {v["quantity"]: v for v in judge_case(new, old, gates, new_lat, old_lat)}


def test_a_run_made_slower_regresses_on_latency_only(runs, tmp_path):
    slower = derive_run(runs[0], tmp_path, "slower", scale=1.5)
    verdicts = _judge(runs[0], slower, QDQ)
    lat = verdicts["latency_p50_ms"]
    assert lat["verdict"] == REGRESSION and lat["method"] == "mann-whitney"
    assert lat["p_value"] < 1e-6 and lat["change"] == pytest.approx(0.5, rel=1e-9)
    for other in ("accuracy", "size_bytes", "peak_rss_mb"):
        assert verdicts[other]["verdict"] == SAME
    # energy has a verdict only where this machine measured it (RAPL as root on bare metal), and
    # from one window per side (these runs have one round) it is not judged
    measured = _case(runs[0], QDQ)[0].get("energy_mj_per_inf") is not None
    energy = [q for q in verdicts if q.startswith("energy")]
    assert bool(energy) == measured
    if measured:
        assert verdicts[energy[0]]["verdict"] == UNJUDGED
    faster = _judge(slower, runs[0], QDQ)["latency_p50_ms"]
    assert faster["verdict"] == IMPROVEMENT and faster["change"] == pytest.approx(1 / 1.5 - 1)


def test_a_real_but_small_change_is_not_a_regression(runs, tmp_path):
    """5% slower is statistically real with thousands of samples, and still under the 10% threshold."""
    v = _judge(runs[0], derive_run(runs[0], tmp_path, "plus5", scale=1.05), QDQ)["latency_p50_ms"]
    assert v["verdict"] == SAME
    v = _judge(runs[0], derive_run(runs[0], tmp_path, "plus5b", scale=1.05), QDQ, QUIET.override({"latency": 0.03}))["latency_p50_ms"]
    assert v["verdict"] == REGRESSION and v["p_value"] < 0.01
    same = _judge(runs[0], derive_run(runs[0], tmp_path, "copy", scale=1.0), QDQ)["latency_p50_ms"]
    assert same["verdict"] == SAME and same["change"] == 0


def test_a_large_shift_that_is_not_significant_is_not_a_regression(runs, tmp_path):
    """Two latencies either side: no test can tell, even at +50%."""
    def two(case, lat):  # the first and third quartile of the record
        return np.percentile(lat, [25, 75], method="nearest")

    few = derive_run(runs[0], tmp_path, "few", transform=two, label="2 latencies: q1 and q3")
    few_slow = derive_run(runs[0], tmp_path, "few-slow", scale=1.5, transform=two, label="2 latencies: q1 and q3, x1.5")
    old, old_lat = _case(few, QDQ)
    new, new_lat = _case(few_slow, QDQ)
    old.pop("n_runs"), new.pop("n_runs")  # only the raw latencies are evidence here
    v = {x["quantity"]: x for x in judge_case(new, old, QUIET, new_lat, old_lat)}["latency_p50_ms"]
    assert v["method"] == "ci99" and v["verdict"] == SAME and "overlap" in v["detail"]


def test_few_samples_use_99_percent_confidence_intervals(runs, tmp_path):
    def middle(case, lat):  # 12 latencies around the median: fewer than min_samples
        order = np.argsort(lat)
        return lat[order[len(lat) // 2 - 6: len(lat) // 2 + 6]]

    base = derive_run(runs[0], tmp_path, "mid", transform=middle, label="12 latencies around the median")
    slow = derive_run(runs[0], tmp_path, "mid-slow", scale=1.3, transform=middle, label="12 around the median x1.3")
    v = _judge(base, slow, QDQ)["latency_p50_ms"]
    assert v["method"] == "ci99" and v["p_value"] is None
    assert v["verdict"] == REGRESSION and "do not overlap" in v["detail"]
    v = _judge(base, derive_run(runs[0], tmp_path, "mid-same", scale=1.0, transform=middle), QDQ)["latency_p50_ms"]
    assert v["verdict"] == SAME


def test_noise_widens_the_timing_margin_and_accuracy_is_still_judged(runs, tmp_path):
    """A noisy side widens the latency threshold by noise_k x the larger IQR/median: a change far
    outside the noise is a regression, one beyond the plain threshold but inside the margin is
    `noisy` (not judged either way). Accuracy is judged whatever the noise."""
    rng = np.random.default_rng(7)
    noisy = derive_run(runs[0], tmp_path, "noisy", scale=2.0,
                       transform=lambda case, lat: lat * rng.uniform(1.0, 1.8, len(lat)),
                       columns={QDQ: {"accuracy": 0.5}}, label="latencies x2 x uniform(1, 1.8); accuracy 0.5")
    new, _ = _case(noisy, QDQ)
    old, _ = _case(runs[0], QDQ)
    assert new["iqr_over_median"] >= 0.10
    verdicts = _judge(runs[0], noisy, QDQ, Gates())
    latency = verdicts["latency_p50_ms"]
    widened = 0.10 + max(v for v in (old["iqr_over_median"], new["iqr_over_median"]) if v >= 0.10)
    assert latency["change"] > widened  # x2 x ~1.4: far outside the noise
    assert latency["verdict"] == REGRESSION and f"widened to {widened:.3g} by noise" in latency["detail"]
    assert verdicts["accuracy"]["verdict"] == REGRESSION

    # +25% (x uniform(1, 1.5)) on a side whose IQR/median that spread raises to >= 0.2: inside the margin
    rng = np.random.default_rng(8)
    blurred = derive_run(runs[0], tmp_path, "blurred", transform=lambda case, lat: lat * rng.uniform(1.0, 1.5, len(lat)),
                         label="latencies x uniform(1, 1.5)")
    new, _ = _case(blurred, QDQ)
    latency = _judge(runs[0], blurred, QDQ, Gates())["latency_p50_ms"]
    margin = 0.10 + max(v for v in (old["iqr_over_median"], new["iqr_over_median"]) if v >= 0.10)
    assert 0.10 < latency["change"] < margin, (latency["change"], margin)
    assert latency["verdict"] == NOISY and latency["detail"].startswith("within the noise: threshold 0.1 widened to")
    # the same change with the noise flag off is judged against the plain threshold
    assert _judge(runs[0], blurred, QDQ, QUIET)["latency_p50_ms"]["verdict"] == REGRESSION


def test_accuracy_size_memory_and_energy_thresholds(runs, tmp_path):
    row, _ = _case(runs[0], QDQ)
    acc, size, rss = row["accuracy"], row["size_bytes"], row["peak_rss_mb"]
    fp32_acc = _case(runs[0], FP32)[0]["accuracy"]  # each case's own accuracy: the two need not be equal
    # energy from three windows a side that agree (no idle reading: the total is judged)
    energy = lambda mj: {"energy_mj_per_inf": mj, "energy_round_mj": f"{mj} {mj} {mj}",  # noqa: E731
                         "energy_above_idle_mj_per_inf": None}
    changed = derive_run(runs[0], tmp_path, "cols", scale=1.0, columns={
        QDQ: {"accuracy": acc - 0.006, "size_bytes": int(size * 1.2), "peak_rss_mb": rss * 0.8, **energy(2.2)},
        FP32: {"accuracy": fp32_acc - 0.004}}, label="accuracy -0.6/-0.4 pts, size x1.2, RSS x0.8, energy 2.2 mJ")
    with_energy = derive_run(runs[0], tmp_path, "energy", scale=1.0, columns={QDQ: energy(2.0)},
                             label="energy 2.0 mJ")
    v = _judge(with_energy, changed, QDQ)
    assert v["accuracy"]["verdict"] == REGRESSION and v["accuracy"]["change"] == pytest.approx(-0.6)
    assert v["size_bytes"]["verdict"] == REGRESSION and v["size_bytes"]["change"] == pytest.approx(0.2, abs=1e-4)
    assert v["peak_rss_mb"]["verdict"] == IMPROVEMENT
    assert v["energy_mj_per_inf"]["verdict"] == SAME  # +10% is not more than the 10% threshold
    assert _judge(with_energy, changed, QDQ, QUIET.override({"energy": 0.05}))["energy_mj_per_inf"]["verdict"] == REGRESSION
    assert _judge(runs[0], changed, FP32)["accuracy"]["verdict"] == SAME  # 0.4 points < 0.5
    assert _judge(runs[0], changed, FP32, QUIET.override({"accuracy_points": 0.3}))["accuracy"]["verdict"] == REGRESSION


def test_baseline_selection_and_the_table(runs, tmp_path):
    db = HistoryDB(f"sqlite:///{tmp_path / 'h.sqlite'}")
    a = db.append_run_dir(runs[0], tags=["nightly"])
    b = db.append_run_dir(runs[1])
    slow_dir = derive_run(runs[1], tmp_path, "slow-qdq", scale={QDQ: 1.6}, started_at="2099-01-01T00:00:00Z",
                          label="static-int8 latencies x1.6")
    manifest, rows, lat = read_run_dir(slow_dir)

    latest = select_baseline(db, "latest", "local", exclude_run_id="slow-qdq")
    assert set(latest.rows["run_id"]) == {b}  # each case's newest earlier result
    assert select_baseline(db, a, "local").rows["run_id"].unique().tolist() == [a]
    tagged = select_baseline(db, "nightly", "local")
    assert tagged.how == "tag" and tagged.rows["run_id"].unique().tolist() == [a]
    with pytest.raises(HistoryError, match=f"no run id or tag 'nope'.*Recent runs on local: {b}, {a}; tags: nightly"):
        select_baseline(db, "nope", "local")

    verdicts = compare(pd.DataFrame(rows), latest, QUIET, lambda case: np.asarray(lat[case]),
                       lambda row: db.latency_arrays([row["result_pk"]]).get(row["result_pk"]))
    assert set(verdicts["case_id"]) == {r["case_id"] for r in rows if r["status"] == "ok"}
    bad = verdicts[verdicts["verdict"] == REGRESSION]
    assert bad[["case_id", "quantity"]].values.tolist() == [[QDQ, "latency_p50_ms"]]
    table = verdict_table(verdicts)
    assert QDQ in table and "+60.0%" in table and "mann-whitney" in table and b in table
    message = failure_message(QDQ, verdicts[verdicts["case_id"] == QDQ], latest)
    assert message.startswith(f"{QDQ}: regressed against the latest earlier result") and "p=" in message
    assert failure_message(FP32, verdicts[verdicts["case_id"] == FP32], latest) is None

    db.append_run(manifest, rows, lat)
    db.record_comparisons("slow-qdq", verdicts)
    stored = db.comparisons(run_id="slow-qdq")
    assert len(stored) == len(verdicts) and stored[stored["verdict"] == REGRESSION]["case_id"].tolist() == [QDQ]


def _nights(lat: np.ndarray, nights: int, seed: int = 3) -> np.ndarray:
    """A history at one level: the real record's p50 with 2% night-to-night noise (seeded).
    Nights drawn from the record itself had no fixed level: on a busy machine a record can be
    bimodal (a process at two speed levels), and medians of draws from it then jump 19% from
    night to night, steps that are really in the data."""
    rng = np.random.default_rng(seed)
    return float(np.median(lat)) * np.exp(rng.normal(0.0, 0.02, nights))


def test_step_detection_finds_the_step_and_nothing_else(runs):
    _, lat = _case(runs[0], QDQ)
    series = _nights(lat, 30)
    assert detect_steps(series) == []  # nights drawn from one record: no step
    stepped = series.copy()
    stepped[18:] *= 1.3  # test-made: 30% slower from night 18
    steps = detect_steps(stepped)
    assert [(s.index, s.kind) for s in steps] == [(18, REGRESSION)]
    assert steps[0].change == pytest.approx(0.3, abs=0.05)
    back = stepped.copy()
    back[25:] /= 1.3  # and fixed from night 25
    assert [(s.index, s.kind) for s in detect_steps(back)] == [(18, REGRESSION), (25, IMPROVEMENT)]
    small = series.copy()
    small[18:] *= 1.05  # below the 10% threshold: merged away
    assert detect_steps(small) == []
    assert [(s.index, s.kind) for s in detect_steps(small, threshold=0.035)] == [(18, REGRESSION)]
    assert segments([1.0]) == [(0, 1)] and detect_steps([]) == []
    with pytest.raises(ValueError):
        segments([1.0, 0.0])


def test_suite_gates_are_validated_and_reach_every_case():
    from harness import Suite, SuiteError
    from harness.models import digits_cnn

    suite = Suite(model=digits_cnn, modes=("fp32", "static-int8"), gates=Gates(latency=0.25, accuracy_points=1.0))
    assert {c.gates for c in suite.cases()} == {Gates(latency=0.25, accuracy_points=1.0)}
    assert Gates(latency=0.25).override({"latency": 0.05, "size": None}) == Gates(latency=0.05)
    with pytest.raises(SuiteError, match="suite field `gates`: gates.latency must be a non-negative number"):
        Suite(model=digits_cnn, gates=Gates(latency=-0.1))
    with pytest.raises(SuiteError, match="gates.alpha must be in"):
        Suite(model=digits_cnn, gates=Gates(alpha=1.5))
