"""The regression key says how a case ran, not only what it is: a quick run (200 evaluation
samples, one round) is not judged against a nightly baseline (500 samples, three rounds)
(issue 22, defect 6)."""
from __future__ import annotations

import pandas as pd

from harness.history.gates import Gates
from harness.history.regress import Baseline, compare, latest_per_key

CASE = "digits-cnn-onnxruntime-static-int8-qdq-b1"


def _row(run_id: str, profile: str, eval_samples, accuracy: float, p50: float = 0.020, threads: int = 1) -> dict:
    return {"case_id": CASE, "run_id": run_id, "model": "digits-cnn", "framework": "onnxruntime",
            "mode": "static-int8", "recipe": "qdq", "target": "local", "batch_size": 1, "threads": threads,
            "profile": profile, "eval_samples": eval_samples, "status": "ok", "latency_p50_ms": p50,
            "accuracy": accuracy, "higher_is_better": True, "iqr_over_median": 0.01}


def test_a_quick_run_is_not_judged_against_a_nightly_baseline():
    nightly = _row("night-1", "nightly", 500, 0.968)
    quick = _row("quick-1", "quick", 200, 0.955)  # 1.3 points lower: sampling noise of 200 vs 500 digits
    baseline = Baseline("latest", "latest", pd.DataFrame([nightly]))
    assert baseline.row_for(quick) is None
    assert baseline.why_no_row(quick) == ("the baseline ran it with profile=nightly, eval_samples=500, "
                                          "this run with profile=quick, eval_samples=200")
    verdicts = compare(pd.DataFrame([quick]), baseline, Gates(), lambda case: None, lambda row: None)
    assert verdicts.empty  # before: an accuracy regression of -1.30 points against the 0.5-point gate
    # the same profile and subset is still compared
    again = _row("night-2", "nightly", 500, 0.955)
    assert baseline.row_for(again)["run_id"] == "night-1"
    judged = compare(pd.DataFrame([again]), baseline, Gates(), lambda case: None, lambda row: None)
    assert judged.set_index("quantity").loc["accuracy", "verdict"] == "regression"


def test_the_latest_baseline_keeps_the_newest_row_of_each_profile_and_subset():
    history = pd.DataFrame([_row("quick-0", "quick", 200, 0.950), _row("night-1", "nightly", 500, 0.968),
                            _row("quick-1", "quick", 200, 0.955), _row("night-2", "nightly", 500, 0.966)])
    baseline = Baseline("latest", "latest", latest_per_key(history))
    assert sorted(baseline.rows["run_id"]) == ["night-2", "quick-1"]
    assert baseline.row_for(_row("quick-2", "quick", 200, 0.95))["run_id"] == "quick-1"
    assert baseline.row_for(_row("night-3", "nightly", 500, 0.95))["run_id"] == "night-2"
    # --eval-samples in the same profile is another subset; a case not scored (0) has none
    assert baseline.row_for(_row("quick-2", "quick", 300, 0.95)) is None
    assert baseline.why_no_row(_row("quick-2", "quick", 300, 0.95)) == \
        "the baseline ran it with eval_samples=200, this run with eval_samples=300"
    assert baseline.row_for(_row("quick-2", "quick", 0, 0.95)) is None
    assert baseline.why_no_row(_row("quick-2", "quick", 0, 0.95)) == \
        "the baseline ran it with eval_samples=200, this run with eval_samples=none"
    # threads still count, alone or with the rest
    assert baseline.why_no_row(_row("quick-2", "quick", 200, 0.95, threads=2)) == \
        "the baseline ran it with threads=1, this run with threads=2"
