"""Rows and the comparison table: one tidy row per case, columns as in the design notes."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

import pandas as pd

from harness.budget import loss as budget_loss, text as budget_verdict  # noqa: F401 (the one budget verdict)
from harness.metrics import direction_text, row_higher_is_better
from harness.rounds import speedup_text
from harness.values import formatted, number
from harness.vocabulary import FRAMEWORKS, MODES

IDENTITY = ["run_id", "case_id", "started_at", "suite", "model", "framework", "mode", "recipe", "target",
            "target_kind", "profile", "device", "batch_size", "threads"]
# target is what --target named (a target or a pool); board is the target that ran the case
FLEET = ["pool", "board", "worker", "lease_wait_s"]
OUTCOME = ["status", "reason"]
LATENCY = ["init_ms", "first_ms", "latency_mean_ms", "latency_std_ms", "latency_min_ms", "latency_p50_ms",
           "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms", "n_runs", "duration_s",
           "iqr_over_median", "noisy", "valid", "throughput_ips"]
# eval_samples: how many evaluation samples were scored (a profile may score a seeded subset; 0 when
# the case's time budget left no time for the evaluation pass); accuracy_ci_low/high: its 95% interval.
ACCURACY = ["metric", "higher_is_better", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "eval_samples",
            "accuracy_delta", "accuracy_budget", "within_budget"]
SIZE_MEMORY = ["size_bytes", "size_ratio", "peak_rss_mb", "gpu_mem_mb"]
POWER = ["power_source", "idle_power_w", "power_mean_w", "energy_mj_per_inf", "throttled", "temp_before_c", "temp_after_c"]
COMPARISON = ["speedup"]
PROVENANCE = ["runtime", "runtime_version", "python_version", "host", "artifact_key", "artifact_sha256"]

COLUMNS: list[str] = IDENTITY + OUTCOME + LATENCY + ACCURACY + SIZE_MEMORY + POWER + COMPARISON + PROVENANCE + FLEET

# The row of a case that never produced numbers still carries every column.
EMPTY = {c: None for c in COLUMNS}


def new_row(**identity: Any) -> dict[str, Any]:
    row = dict(EMPTY)
    row.update(identity)
    return row


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    top, bottom = number(numerator), number(denominator)
    return None if top is None or bottom is None or bottom == 0 else top / bottom


def compare_to_baseline(row: dict[str, Any], baseline: Optional[Mapping[str, Any]]) -> None:
    """Fill speedup, size_ratio and accuracy_delta against the fp32 row of the same
    framework, target, model and batch size. accuracy_delta is the plain difference
    (this - fp32) whatever the metric's direction; judging it is `budget_loss`'s job."""
    if baseline is None or baseline.get("status") != "ok":
        return
    row["speedup"] = ratio(baseline.get("latency_p50_ms"), row.get("latency_p50_ms"))
    row["size_ratio"] = ratio(row.get("size_bytes"), baseline.get("size_bytes"))
    if row.get("accuracy") is not None and baseline.get("accuracy") is not None:
        row["accuracy_delta"] = float(row["accuracy"]) - float(baseline["accuracy"])


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


def comparison_table(df: pd.DataFrame, reason_width: int = 70) -> str:
    """One line per case: p50, speedup vs fp32, size ratio, accuracy, delta vs fp32, status.
    A run across several targets gets one column group per target instead (report_devices);
    a pool's rows say which board ran them."""
    if df.empty:
        return "(no cases)"
    if df["target"].nunique() > 1:
        from harness.report_devices import device_table

        return device_table(df)
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
                                    r.get("rounds_disagree") is True),
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
    legend = ("p50 flags: ~ noisy (IQR/median >= 0.10), ! minimums not met. size: artifact bytes / fp32. "
              "ci95: the accuracy's 95% interval over its n evaluation samples. "
              + ("speedup [low-high]: 95% interval over paired rounds (--rounds), ? the rounds disagree. "
                 if "speedup_ci_low" in df.columns and df["speedup_ci_low"].notna().any() else "") +
              "delta_pts: 100 x (accuracy - fp32 accuracy)"
              + (f"; accuracy is {', '.join(f'{m} ({d})' for m, d in metrics.items())}." if metrics else "."))
    return table + "\n" + legend
