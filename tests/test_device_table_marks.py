"""The device table's `+` (fastest mode within budget on a target) goes through recommend's
candidate rule, so it names what `quantbench recommend` ships beside it (issue 22, defect 8):
a row without a budget verdict, with its accuracy unscored, or whose timing ran throttled or
stopped at its time cap is not marked."""
from __future__ import annotations

import re

import pandas as pd

from harness import report
from harness.history.recommend import recommend
from harness.report_devices import best_per_target, device_table


def _row(target: str, mode: str, recipe, p50: float, accuracy=0.97, delta=0.0, **extra) -> dict:
    slug = f"-{recipe}" if recipe else ""
    row = {"run_id": "fleet", "case_id": f"digits-cnn-onnxruntime-{mode}{slug}-b1@{target}", "model": "digits-cnn",
           "framework": "onnxruntime", "mode": mode, "recipe": recipe, "target": target, "batch_size": 1, "threads": 1,
           "status": "ok", "reason": None, "latency_p50_ms": p50, "metric": "top1", "higher_is_better": True,
           "accuracy": accuracy, "accuracy_delta": None if mode == "fp32" else delta, "iqr_over_median": 0.02,
           "speedup": None if mode == "fp32" else 1.0 / p50, "throttled": False, "valid": True,
           "within_budget": None if mode == "fp32" else True, "n_runs": 100, "duration_s": 1.0}
    row.update(extra)
    return row


def _fleet() -> pd.DataFrame:
    rows = []
    for target in ("pi5", "jetson"):
        rows += [
            _row(target, "fp32", None, 1.00),
            # the answer: scored, within budget, trusted
            _row(target, "dynamic-int8", "dyn", 0.60, delta=-0.002),
            # faster, but nothing `recommend` would ship:
            _row(target, "static-int8", "qdq", 0.30, accuracy=None, delta=None, within_budget=None,
                 reason="accuracy not scored: the case's time budget ran out"),  # unscored
            _row(target, "qat-int8", "qdq", 0.35, throttled=True, throttle_reasons="under-voltage"),  # throttled
            _row(target, "fp16", "cast", 0.40, valid=False),  # hit its time cap before its minimums
            _row(target, "static-int8", "qop", 0.45, delta=-0.05, within_budget=None),  # no budget verdict: 5 points down
        ]
    return report.frame(rows)


def test_the_plus_marks_what_recommend_ships():
    df = _fleet()
    best = best_per_target(df)
    chosen = {(rec.target, rec.model, rec.batch_size): rec.choice.row["case_id"] for rec in recommend(df)}
    assert best == chosen
    assert set(best.values()) == {"digits-cnn-onnxruntime-dynamic-int8-dyn-b1@pi5",
                                  "digits-cnn-onnxruntime-dynamic-int8-dyn-b1@jetson"}
    table = device_table(df)
    plus = [line for line in table.splitlines() if re.search(r"\d[*~!]*\+", line)]
    assert len(plus) == 1 and " dynamic-int8 " in plus[0] and plus[0].count("+") == 2  # the line, on both targets
    # a tighter budget moves the mark with the answer
    strict = best_per_target(df, max_drop=0.1)
    assert set(strict.values()) == {rec.choice.row["case_id"] for rec in recommend(df, 0.1)} == \
        {"digits-cnn-onnxruntime-fp32-b1@pi5", "digits-cnn-onnxruntime-fp32-b1@jetson"}


def test_the_run_summary_passes_its_accuracy_budget_to_the_mark():
    """The end-of-run table gets --max-accuracy-drop (finish.py), as the answer printed under it does."""
    df = _fleet()
    marked = lambda text: [line.split()[2] for line in text.splitlines() if re.search(r"\d[*~!]*\+", line)]  # noqa: E731
    assert marked(report.comparison_table(df)) == ["dynamic-int8"]
    assert marked(report.comparison_table(df, max_drop=0.1)) == ["fp32"]
