"""Rounds: with --qb-rounds N every case runs in N fresh runner processes, each beside a fresh
process of its fp32 baseline (ABBA order), the evaluation pass runs once, and the row reports
the speedup as the median of the paired ratios with an exact order-statistic interval and its
true confidence level, flagged when the rounds disagree; latencies.parquet says which round
each latency came from."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness import Suite, Timing
from harness.rounds import DISAGREE, paired_speedup, round_columns, speedup_text
from harness import settings
from harness.session import BenchSession, SessionOptions
from targets import TargetConfig
from tests import onnx_models

CACHE = settings.cache_dir()
FP32, DYNAMIC = "logreg-onnxruntime-fp32-b1", "logreg-onnxruntime-dynamic-int8-dyn-b1"


def test_paired_speedup_is_the_median_of_round_ratios_with_an_interval():
    baseline, case = [2.0, 2.2, 1.8, 2.1], [1.0, 1.0, 1.0, 1.0]
    got = paired_speedup(baseline, case)
    assert got["speedup"] == pytest.approx(math.sqrt(2.0 * 2.1))  # log-scale median of an even count
    # four rounds cannot reach 95%: the interval is the rounds' [min, max] and says it is 87.5%
    assert (got["speedup_ci_low"], got["speedup_ci_high"], got["speedup_ci_level"]) == (1.8, 2.2, 0.875)
    assert got["speedup_rounds"] == "2 2.2 1.8 2.1" and got["baseline_round_p50_ms"] == "2 2.2 1.8 2.1"
    assert got["rounds_disagree"] is False  # 0.4 wide around 2.05: under 20%
    assert paired_speedup(baseline, case) == got  # the same rounds, the same interval
    three = paired_speedup([1.5, 1.6, 1.7], [1.0] * 3)
    assert (three["speedup_ci_low"], three["speedup_ci_high"], three["speedup_ci_level"]) == (1.5, 1.7, 0.75)
    steady = paired_speedup([1.50, 1.51, 1.49, 1.50, 1.50], [1.0] * 5)
    assert (steady["speedup_ci_low"], steady["speedup_ci_high"], steady["speedup_ci_level"]) == (1.49, 1.51, 0.9375)
    assert steady["rounds_disagree"] is False
    six = paired_speedup([1.1, 1.2, 1.3, 1.4, 1.5, 1.6], [1.0] * 6)
    assert six["speedup_ci_level"] == pytest.approx(0.96875) and six["speedup_ci_low"] == 1.1
    # nine rounds reach 95% without the extremes: the 2nd and 8th ratios, at 96.1%
    nine = paired_speedup([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8], [1.0] * 9)
    assert (nine["speedup_ci_low"], nine["speedup_ci_high"]) == (1.1, 1.7)
    assert nine["speedup_ci_level"] == pytest.approx(1 - 2 * 10 / 512)
    flipping = paired_speedup([1.0, 1.8, 1.0, 1.8], [1.0] * 4)  # a machine jumping between two speed levels
    assert flipping["rounds_disagree"] is True
    # one process on a slow level does not move the figure (a mean of five would move 10%), the interval shows it
    outlier = paired_speedup([0.95, 0.94, 1.56, 0.96, 0.95], [1.0] * 5)
    assert outlier["speedup"] == pytest.approx(0.95) and outlier["speedup_ci_high"] == pytest.approx(1.56)
    single = paired_speedup([2.0], [1.0])
    assert single["speedup"] == 2.0 and single["speedup_ci_low"] is None and single["speedup_ci_level"] is None
    assert single["rounds_disagree"] is False
    with pytest.raises(ValueError):
        paired_speedup([1.0, 2.0], [1.0])


@pytest.mark.parametrize("n", [3, 5, 8])
def test_the_row_interval_covers_the_true_speedup_at_its_stated_level(n):
    """2,000 simulated experiments of n paired rounds: baseline and case p50s lognormal around
    2.0 and 1.25 ms (a true speedup of 1.6x, the median of the ratios); the row's interval
    holds 1.6 as often as its stated level says, within 2.5 points."""
    rng = np.random.default_rng(100 + n)
    hits, levels = 0, set()
    for _ in range(2000):
        base = 2.0 * np.exp(rng.normal(0, 0.08, n))
        case = 1.25 * np.exp(rng.normal(0, 0.08, n))
        row = paired_speedup(base.tolist(), case.tolist())
        hits += row["speedup_ci_low"] <= 1.6 <= row["speedup_ci_high"]
        levels.add(row["speedup_ci_level"])
    (level,) = levels
    assert abs(hits / 2000 - level) <= 0.025, (n, hits / 2000, level)
    assert level == {3: 0.75, 5: 0.9375, 8: 1 - 2 / 256}[n]


def test_interval_shrinks_with_more_agreeing_rounds():
    rng = np.random.default_rng(3)
    few = paired_speedup(1.6 * np.exp(rng.normal(0, 0.05, 4)), [1.0] * 4)
    many = paired_speedup(1.6 * np.exp(rng.normal(0, 0.05, 40)), [1.0] * 40)
    assert many["speedup_ci_high"] - many["speedup_ci_low"] < few["speedup_ci_high"] - few["speedup_ci_low"]
    assert many["speedup_ci_level"] >= 0.95 > few["speedup_ci_level"]


def test_round_columns_and_the_table_text():
    assert round_columns([1.0, 1.05, 0.98]) == {"rounds": 3, "round_p50_ms": "1 1.05 0.98", "rounds_disagree": False}
    assert round_columns([1.0, 1.3])["rounds_disagree"] is True
    assert speedup_text(1.554, 1.5, 1.61, False) == "1.55x [1.50-1.61]"  # a row from before the level was stored
    assert speedup_text(1.554, 1.5, 1.61, False, 0.75) == "1.55x [1.50-1.61 @75%]"
    assert speedup_text(1.554, 1.5, 1.61, False, 0.96875) == "1.55x [1.50-1.61 @96.9%]"
    assert speedup_text(1.554, 1.2, 1.9, True, 0.9375) == "1.55x [1.20-1.90 @93.8%]?"
    assert speedup_text(None, None, None, None) == "-"
    assert speedup_text(2.0, None, None, False) == "2.00x"


@pytest.mark.parametrize("figures", [[1.0, 1.1, 1.21], [1.0, 1.25], [2.0, 2.2, 1.8, 2.1], [0.9, 1.0, 1.12],
                                     [1.0, 1.8, 1.0, 1.8], [1.0, 1.1, 1.1, 1.1, 1.1, 1.1, 1.1, 1.1, 1.5]])
def test_rounds_disagree_means_the_same_on_every_row(figures):
    """One meaning: the interval of the median of the row's per-round figures (p50s on an fp32
    row, ratios on a paired row) is wider than DISAGREE x that median. It meant max/min - 1 on
    fp32 rows and interval width / speedup on paired ones, so the same three rounds
    (1.0, 1.1, 1.21) disagreed as p50s and agreed as ratios."""
    fp32 = round_columns(figures)["rounds_disagree"]
    paired = paired_speedup(figures, [1.0] * len(figures))
    assert fp32 is paired["rounds_disagree"]
    width = (paired["speedup_ci_high"] - paired["speedup_ci_low"]) / paired["speedup"]
    assert fp32 is (width > DISAGREE)
    if len(figures) == 9:  # nine rounds pin the median without the one slow process: no flag
        assert fp32 is False and max(figures) / min(figures) - 1 > DISAGREE


@pytest.fixture(scope="module")
def logreg(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logreg")
    return onnx_models.logreg_spec(folder)


@pytest.fixture(scope="module")
def three_rounds(logreg, tmp_path_factory):
    results = tmp_path_factory.mktemp("rounds")
    options = SessionOptions(results_dir=results, cache_dir=CACHE, threads=1, run_id="rounds", rounds=3)
    suite = Suite(model=logreg, modes=("fp32", "dynamic-int8"), name="rounds",
                  timing=Timing(warmup_runs=2, min_runs=20, min_duration_s=0.1, max_duration_s=2.0))
    session = BenchSession(TargetConfig(name="local", kind="local"), options)
    try:
        rows = {case.case_id: session.run_case(case) for case in suite.cases()}
    finally:
        session.close()
    return rows, session.store.dir


def test_each_round_is_a_fresh_process_beside_a_fresh_baseline(three_rounds):
    rows, run_dir = three_rounds
    row = rows[DYNAMIC]
    assert row["status"] == "ok", row["reason"]
    work = run_dir / "work" / DYNAMIC
    case_runs = [work / "result.json", work / "round-1" / "result.json", work / "round-2" / "result.json"]
    base_runs = [work / f"baseline-round-{r}" / "result.json" for r in range(3)]
    pids = {pd.read_json(p, typ="series")["pid"] for p in case_runs + base_runs}
    assert len(pids) == 6  # six runner processes
    finished = lambda p: p.stat().st_mtime_ns  # noqa: E731 - processes run one after another
    # ABBA: baseline first in rounds 0 and 2, the case first in round 1
    assert finished(base_runs[0]) < finished(case_runs[0]) < finished(case_runs[1]) < finished(base_runs[1]) \
        < finished(base_runs[2]) < finished(case_runs[2])
    # the evaluation pass ran once (round 0); later rounds and the baseline's rounds only time
    assert pd.read_json(case_runs[0], typ="series")["n_eval"] > 0
    for later in case_runs[1:] + base_runs:
        assert pd.read_json(later, typ="series")["evaluation_skipped"] == "not requested (evaluate = false)"


def test_the_row_reports_the_paired_speedup_with_its_interval(three_rounds):
    rows, run_dir = three_rounds
    row, fp32 = rows[DYNAMIC], rows[FP32]
    case_p50s = [float(v) for v in row["round_p50_ms"].split()]
    base_p50s = [float(v) for v in row["baseline_round_p50_ms"].split()]
    assert row["rounds"] == fp32["rounds"] == 3 and len(case_p50s) == len(base_p50s) == 3
    ratios = [b / c for b, c in zip(base_p50s, case_p50s)]
    assert row["speedup"] == pytest.approx(float(np.median(ratios)), rel=1e-3)  # three rounds: the middle ratio
    # three rounds: the interval is the smallest and largest ratio, and it says it holds the median 75% of the time
    assert row["speedup_ci_low"] == pytest.approx(min(ratios), rel=1e-3)
    assert row["speedup_ci_high"] == pytest.approx(max(ratios), rel=1e-3)
    assert row["speedup_ci_level"] == 0.75
    assert row["rounds_disagree"] is ((row["speedup_ci_high"] - row["speedup_ci_low"]) / row["speedup"] > DISAGREE)
    assert row["baseline_case"] == FP32 and fp32.get("speedup") is None and "speedup_ci_low" not in fp32
    # latencies: every round's, in order, each tagged with its round
    lat = pd.read_parquet(run_dir / "latencies.parquet")
    mine = lat[lat["case_id"] == DYNAMIC]
    assert len(mine) == row["n_runs"] == sum(int(n) for n in row["round_n_runs"].split())
    assert mine.groupby("round")["latency_ms"].median().round(9).tolist() == pytest.approx(case_p50s, rel=1e-4)
    assert row["accuracy"] is not None and row["eval_samples"] > 0  # scored once, from round 0


def test_rounds_from_the_command_line(logreg, run_suite, tmp_path):
    suite = tmp_path / "test_logreg_rounds.py"
    suite.write_text(
        "from harness import Suite\nfrom harness.models import onnx_model\n"
        f"model = onnx_model('logreg', {str(logreg.onnx_file)!r}, data={str(logreg.data)!r})\n"
        "test_case = Suite(model=model, modes=('fp32', 'dynamic-int8'), name='cli-rounds').pytest_cases()\n")
    bad = run_suite(suite, extra=("--qb-rounds", "0"))
    assert bad.returncode != 0 and "--qb-rounds must be at least 1" in bad.output
    run = run_suite(suite, extra=("--qb-rounds", "2", "--qb-threads", "1", "--qb-results-db=off"))
    assert run.returncode == 0, run.output[-3000:]
    row = run.row(DYNAMIC)
    ratios = [float(r) for r in row["speedup_rounds"].split()]
    assert row["rounds"] == 2 and row["speedup_ci_level"] == 0.5  # two rounds: [min, max] holds the median half the time
    assert row["speedup_ci_low"] == pytest.approx(min(ratios), rel=1e-3)
    assert row["speedup_ci_high"] == pytest.approx(max(ratios), rel=1e-3)
    assert f"{row['speedup']:.2f}x [{row['speedup_ci_low']:.2f}-{row['speedup_ci_high']:.2f} @50%]" in run.output
    assert "interval over paired rounds" in run.output
