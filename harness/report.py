"""Rows and the comparison table: one tidy row per case, columns as in the design notes."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

import pandas as pd

from harness import columns
from harness.budget import loss as budget_loss, text as budget_verdict  # noqa: F401 (the one budget verdict)
from harness.history.candidate import untrusted_baseline
from harness.metrics import direction_text, row_higher_is_better
from harness.rounds import speedup_text
from harness.values import formatted, number
from harness.vocabulary import FRAMEWORKS, MODES

# The columns, in order, and the empty row: the one registry (harness/columns.py), by section.
IDENTITY, OUTCOME, LATENCY, ACCURACY, SIZE_MEMORY, POWER, COMPARISON, PROVENANCE, FLEET = (
    columns.core(name) for name in ("identity", "outcome", "latency", "accuracy", "size_memory", "power", "comparison", "provenance", "fleet"))
COLUMNS: list[str] = columns.COLUMNS
EMPTY = columns.EMPTY
new_row = columns.new_row


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    top, bottom = number(numerator), number(denominator)
    return None if top is None or bottom is None or bottom == 0 else top / bottom


def versus_baseline(row: Mapping[str, Any], baseline: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """speedup, size_ratio and accuracy_delta against the fp32 row of the same framework,
    target, model and batch size (none when that row is not ok). accuracy_delta is the plain
    difference (this - fp32) whatever the metric's direction; judging it is harness/budget.py's job."""
    if baseline is None or baseline.get("status") != "ok":
        return {}
    values = {"speedup": ratio(baseline.get("latency_p50_ms"), row.get("latency_p50_ms")),
              "size_ratio": ratio(row.get("size_bytes"), baseline.get("size_bytes"))}
    if row.get("accuracy") is not None and baseline.get("accuracy") is not None:
        values["accuracy_delta"] = float(row["accuracy"]) - float(baseline["accuracy"])
    return values


def compare_to_baseline(row: dict[str, Any], baseline: Optional[Mapping[str, Any]]) -> None:
    """A stored row's comparison columns, filled in (`versus_baseline`)."""
    row.update(versus_baseline(row, baseline))


def budget_lines(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(case_id, 'over budget: ...') for every ok row over (or unable to check) its budget."""
    return [(r["case_id"], budget_verdict(r)) for r in _order(df).to_dict("records") if budget_verdict(r)] \
        if len(df) else []


def frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    for column in COLUMNS:
        if column not in df.columns:
            df[column] = None
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[COLUMNS + extra]


def _order(df: pd.DataFrame) -> pd.DataFrame:
    fw = {f: i for i, f in enumerate(FRAMEWORKS)}
    md = {m: i for i, m in enumerate(MODES)}
    keyed = df.assign(_fw=df["framework"].map(fw).fillna(99), _md=df["mode"].map(md).fillna(99))
    return keyed.sort_values(["model", "target", "batch_size", "_fw", "_md", "recipe"]).drop(columns=["_fw", "_md"])


def _interval(low: Any, high: Any) -> str:
    low, high = number(low), number(high)
    return "-" if low is None or high is None else f"{low:.3f}-{high:.3f}"


def comparison_table(df: pd.DataFrame, reason_width: int = 70, max_drop=None, suite_limits=None) -> str:
    """One line per case: p50, speedup vs fp32, size ratio, accuracy, delta vs fp32, status.
    A run across several targets gets one column group per target instead (report_devices,
    whose `+` marks what recommend() ships within `max_drop`: points or harness.limits.Limits,
    None: its default; `suite_limits`: suite -> its declared Limits);
    a pool's rows say which board ran them."""
    if df.empty:
        return "(no cases)"
    if df["target"].nunique() > 1:
        from harness.report_devices import device_table

        return device_table(df, suite_limits=suite_limits) if max_drop is None else \
            device_table(df, max_drop=max_drop, suite_limits=suite_limits)
    pooled = "pool" in df.columns and bool(df["pool"].notna().any())  # older runs have no pool column
    lines = []
    for _, r in _order(df).iterrows():
        delta = r["accuracy_delta"]
        reason = str(r["reason"] or "")
        verdict = budget_verdict(r)
        if verdict:
            reason = verdict
        flags = "".join(flag for flag, on in (("~", r.get("noisy") is True), ("!", r.get("valid") is False)) if on)
        lines.append({
            "model": r["model"], "target": r["target"], **({"board": r["board"] or "-"} if pooled else {}),
            "framework": r["framework"], "mode": r["mode"],
            "recipe": "-" if pd.isna(r["recipe"]) else str(r["recipe"])[:48], "batch": r["batch_size"], "status": r["status"],
            "p50_ms": formatted(r["latency_p50_ms"], ".4f") + flags,
            "speedup": speedup_text(number(r["speedup"]), number(r.get("speedup_ci_low")), number(r.get("speedup_ci_high")),
                                    r.get("rounds_disagree") is True, number(r.get("speedup_ci_level")))
            + ("!" if untrusted_baseline(r) else ""),
            "size": formatted(r["size_ratio"], ".2f"),
            "accuracy": formatted(r["accuracy"], ".4f"),
            "ci95": _interval(r.get("accuracy_ci_low"), r.get("accuracy_ci_high")),
            "n": formatted(r.get("eval_samples"), ".0f"),
            "delta_pts": formatted(None if delta is None or pd.isna(delta) else 100 * delta, "+.2f"),
            "reason": reason[:reason_width] + ("..." if len(reason) > reason_width else ""),
        })
    table = pd.DataFrame(lines).to_string(index=False)
    metrics = {}
    for r in df.to_dict("records"):
        if isinstance(r.get("metric"), str):
            metrics.setdefault(r["metric"], direction_text(row_higher_is_better(r)))
    legend = ("p50 flags: ~ noisy (IQR/median >= 0.10), ! minimums not met. "
              + ("speedup !: its fp32 baseline ran throttled or missed its minimums. "
                 if any(untrusted_baseline(r) for r in df.to_dict("records")) else "")
              + "size: artifact bytes / fp32. "
              "ci95: the accuracy's 95% interval over its n evaluation samples. "
              + ("speedup [low-high @level]: interval over paired rounds (--qb-rounds) of the median ratio, exact "
                 "order statistics at their true confidence (3 rounds: 75%, 5: 93.8%, 6 or more: at least 95%), "
                 "? the rounds disagree. "
                 if "speedup_ci_low" in df.columns and df["speedup_ci_low"].notna().any() else "") +
              "delta_pts: 100 x (accuracy - fp32 accuracy)"
              + (f"; accuracy is {', '.join(f'{m} ({d})' for m, d in metrics.items())}." if metrics else "."))
    return table + "\n" + legend
