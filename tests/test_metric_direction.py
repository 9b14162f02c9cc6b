"""A metric's direction, end to end: a lower-is-better metric declared on a plain function
(the Brier score of the digits CNN's softmax) on a real run of real quantized artifacts, then
through the budget, the table, the history gate, `recommend` and the dashboard.

The budget is 0 points, so every quantized row whose score moved at all is over or within its
budget depending only on the direction; which rows moved, and which way, is read from the run."""
from __future__ import annotations

import re

import numpy as np
import pytest

from harness.history.db import HistoryDB
from harness.history.gates import Gates
from harness.history.recommend import recommend
from harness.history.regress import IMPROVEMENT, REGRESSION, judge_case
from harness.metrics import Metric, accuracy_loss, metric, resolve_metric, row_higher_is_better

SUITE = '''
from dataclasses import replace

import numpy as np

from harness import Suite
from harness.metrics import metric
from harness.models import digits_cnn


@metric(higher_is_better=False)
def brier_score(logits, labels):
    """Mean squared distance between the softmax and the one-hot label: 0 is perfect."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = z / z.sum(axis=1, keepdims=True)
    return float(np.mean(np.sum((p - np.eye(p.shape[1])[labels]) ** 2, axis=1)))


suite = Suite(model=replace(digits_cnn, metric=brier_score), frameworks=("onnxruntime",),
              modes=("fp32", "fp16", "dynamic-int8", "static-int8"),
              budgets={"fp16": 0.0, "dynamic-int8": 0.0, "static-int8": 0.0}, name="brier")
test_case = suite.pytest_cases()
'''
EPS = 1e-9  # points: the budget check's own tolerance


def test_a_plain_function_declares_its_direction():
    @metric(higher_is_better=False)
    def word_error_rate(predicted, labels):
        return 0.0

    resolved = resolve_metric(word_error_rate)
    assert (resolved.name, resolved.higher_is_better, resolved.direction) == ("word_error_rate", False, "lower is better")
    assert word_error_rate(None, None) == 0.0  # still the plain function

    named = resolve_metric(metric(lambda out, labels: 1.0, name="perplexity", higher_is_better=False))
    assert (named.name, named.higher_is_better) == ("perplexity", False)
    assert resolve_metric(lambda out, labels: 1.0).higher_is_better is True  # undeclared: higher is better
    assert resolve_metric(Metric("mse", lambda o, l: 0.0, higher_is_better=False)).higher_is_better is False

    def bad(out, labels):
        return 0.0
    bad.higher_is_better = "no"
    with pytest.raises(ValueError, match="higher_is_better must be True or False"):
        resolve_metric(bad)

    assert accuracy_loss(0.90, 0.92) == pytest.approx(2.0)  # top-1 fell 2 points: a loss
    assert accuracy_loss(0.12, 0.10, higher_is_better=False) == pytest.approx(2.0)  # an error rose 2 points: a loss
    assert accuracy_loss(0.08, 0.10, higher_is_better=False) == pytest.approx(-2.0)
    assert accuracy_loss(None, 0.1) is None
    # rows written before the column existed: the built-in metric of that name decides
    assert row_higher_is_better({"metric": "top1"}) and row_higher_is_better({"metric": "mine", "higher_is_better": False}) is False


@pytest.fixture(scope="module")
def brier_run(tmp_path_factory):
    from tests.conftest import FAST_TIMING, SuiteRun
    import os
    import subprocess
    import sys

    work = tmp_path_factory.mktemp("brier")
    (work / "test_brier.py").write_text(SUITE)
    results = work / "results"
    cmd = [sys.executable, "-m", "pytest", str(work / "test_brier.py"), "-p", "harness.pytest_plugin", "-p",
           "no:cacheprovider", "-q", f"--qb-results-dir={results}", "--qb-run-id=brier", f"--rootdir={work}", *FAST_TIMING]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    run = SuiteRun(proc.returncode, proc.stdout + proc.stderr, results / "brier")
    rows = {r["case_id"]: r for r in run.results.to_dict("records")}
    fp32 = rows["digits-cnn-onnxruntime-fp32-b1"]
    assert fp32["status"] == "ok", run.output[-3000:]
    quantized = {cid: r for cid, r in rows.items() if r["mode"] != "fp32" and r["status"] == "ok"}
    assert quantized, run.output[-3000:]
    # The test's premise, checked on this run: some quantized artifact's score differs from fp32's
    # (a continuous score of int8/fp16 logits; equal to the last bit would say nothing about direction).
    moved = {cid: 100 * (r["accuracy"] - fp32["accuracy"]) for cid, r in quantized.items()}
    assert any(abs(points) > EPS for points in moved.values()), moved
    return run, rows, fp32, quantized, results


def test_the_budget_follows_the_direction(brier_run):
    run, rows, fp32, quantized, _ = brier_run
    assert fp32["metric"] == "brier_score" and fp32["higher_is_better"] is False
    assert 0 < fp32["accuracy"] < 0.2  # a trained CNN: a small Brier score
    over = []
    for cid, row in quantized.items():
        rise = 100 * (row["accuracy"] - fp32["accuracy"])  # a rise is a loss
        assert row["accuracy_delta"] == pytest.approx(row["accuracy"] - fp32["accuracy"])  # the plain difference
        assert bool(row["within_budget"]) == (rise <= EPS), (cid, rise)
        if rise > EPS:
            over.append(cid)
            assert f"over budget: {rise:+.2f} pts (lower is better), a loss of {rise:.2f} > 0" in run.output, cid
    assert "accuracy is brier_score (lower is better)" in run.output  # the table's legend says which way


def test_the_history_gate_judges_in_the_metric_direction(brier_run):
    _, _, _, quantized, _ = brier_run
    row = next(iter(quantized.values()))
    better_before = {**row, "accuracy": row["accuracy"] - 0.006, "run_id": "test-made"}  # the baseline scored 0.6 pts lower
    verdict = {v["quantity"]: v for v in judge_case(row, better_before, Gates(noise=10.0))}["accuracy"]
    assert verdict["verdict"] == REGRESSION and verdict["change"] == pytest.approx(0.6)
    worse_before = {**row, "accuracy": row["accuracy"] + 0.006, "run_id": "test-made"}
    verdict = {v["quantity"]: v for v in judge_case(row, worse_before, Gates(noise=10.0))}["accuracy"]
    assert verdict["verdict"] == IMPROVEMENT and verdict["change"] == pytest.approx(-0.6)


def test_recommend_and_the_dashboard_exclude_what_got_worse(brier_run, tmp_path):
    from harness.history.dashboard import build

    _, _, fp32, quantized, results = brier_run
    db = HistoryDB(f"sqlite:///{results / 'history.sqlite'}")
    [rec] = recommend(db.results(target="local"), 0.0)
    by_case = {c.row["case_id"]: c for c in rec.candidates}
    for cid, row in quantized.items():
        rise = 100 * (row["accuracy"] - fp32["accuracy"])
        over = "over the budget of 0" in by_case[cid].why
        assert over == (rise > EPS), (cid, rise, by_case[cid].why)
        if rise <= EPS:
            assert "lower is better" in by_case[cid].why, by_case[cid].why
    assert rec.choice is not None and 100 * (rec.choice.row["accuracy"] - fp32["accuracy"]) <= EPS

    index = build(db, tmp_path / "site", max_drop=0.0)
    page = (index.parent / "target-local.html").read_text()
    assert "accuracy (brier_score, lower is better)" in page
    assert re.findall(r'data-recommended="([^"]+)"', page) == [rec.answer]
    assert (index.parent / "img" / "local" / "pareto-digits-cnn-b1.png").read_bytes()[:4] == b"\x89PNG"


def test_the_over_budget_verdict_reads_the_same_in_both_directions():
    from harness.report import budget_verdict

    top1 = {"status": "ok", "metric": "top1", "higher_is_better": True, "accuracy_delta": -0.048,
            "accuracy_budget": 1.0, "within_budget": False}
    assert budget_verdict(top1) == "over budget: -4.80 pts, a loss of 4.80 > 1"
    wer = {**top1, "metric": "wer", "higher_is_better": False, "accuracy_delta": 0.048}
    assert budget_verdict(wer) == "over budget: +4.80 pts (lower is better), a loss of 4.80 > 1"
    assert budget_verdict({**top1, "within_budget": True}) == ""
