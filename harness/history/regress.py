"""Baselines and regression gates.

A case is compared with the row of the same (model, framework, mode, recipe, target,
batch), run the same way (SETTINGS, below), in the baseline. Latency regresses only when the
change is both statistically real and large, as in airspeed velocity: a two-sided
Mann-Whitney U test on the two runs' raw latencies (or, with fewer than `min_samples`
latencies on a side, 99% confidence intervals of the mean that do not overlap) AND a p50
change above the threshold. Consecutive latencies are not independent, so the p-value alone overstates
certainty; the relative threshold is what keeps the gate from firing on tiny shifts.
Accuracy is judged by its absolute drop in points (in the metric's direction); size, peak
memory by relative change. Noise widens the latency gate instead of switching it off: when
either side is noisy (IQR/median >= gates.noise), latency must move by more than threshold +
gates.noise_k x the larger IQR/median; a change beyond the plain threshold but inside that margin
is recorded as `noisy`, not judged either way.

Energy is judged on its own evidence (harness.history.verdicts.judge_energy): above idle, against
the spread of its own per-window readings, and not from a single window (`not judged`).

The key includes how the case was run, not only what it is: `threads`, the `profile` (quick,
nightly: rounds, timing minimums) and the evaluation subset (`eval_samples`: a quick run
scores 200 digits, a nightly one 500; accuracy differs by sampling noise of the order of the
accuracy gate, and peak memory holds the evaluation set). A run with other settings is not
compared with this baseline, and the summary says which settings the baseline rows differ in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from harness.history.gates import Gates
from harness.history.verdicts import (IMPROVEMENT, NOISY, REGRESSION, SAME, UNJUDGED, Quantity,  # noqa: F401 (theirs)
                                      judge_energy, verdict as _verdict)
from harness.metrics import row_higher_is_better
from harness.values import number, plain

SETTINGS = ("threads", "profile", "eval_samples")  # how the case ran: a baseline must match them too
KEY = ("model", "framework", "mode", "recipe", "target", "batch_size") + SETTINGS
VERDICT_COLUMNS = ["case_id", "baseline_run_id", "quantity", "old", "new", "change", "p_value", "method", "verdict", "detail"]


QUANTITIES: tuple[Quantity, ...] = (
    Quantity("latency_p50_ms", "latency", True, True, True, "ms"),
    Quantity("accuracy", "accuracy_points", False, False, False, "pts"),
    Quantity("size_bytes", "size", True, True, False, "B"),
    Quantity("peak_rss_mb", "memory", True, True, False, "MB"),
    Quantity("gpu_mem_mb", "memory", True, True, False, "MB"),
)


def case_key(row: Mapping[str, Any]) -> tuple:
    """The identity a case keeps across runs (recipe None for n/a rows)."""
    out = []
    for column in KEY:
        value = plain(row.get(column))  # NaN (pandas' missing) -> None
        if value is not None and column in ("batch_size", "threads", "eval_samples"):
            value = int(value)
        if column == "eval_samples" and not value:
            value = None  # not scored (0 or missing): no evaluation subset
        out.append(value)
    return tuple(out)



# -- baselines -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Baseline:
    """The rows a run is compared with: one ok row per case key."""

    ref: str  # what was asked for: latest, a run id or a tag
    how: str  # 'latest', 'run' or 'tag'
    rows: pd.DataFrame  # history rows (harness.history.db.HistoryDB.results), one per key

    def describe(self) -> str:
        runs = sorted(set(self.rows["run_id"])) if len(self.rows) else []
        where = runs[0] if len(runs) == 1 else f"{len(runs)} runs" if runs else "no runs"
        if self.how == "run":
            return f"run {self.ref}"
        if self.how == "tag":
            return f"the latest runs tagged {self.ref!r} ({where})"
        return f"the latest earlier result of each case ({where})"

    def row_for(self, row: Mapping[str, Any]) -> Optional[dict[str, Any]]:
        if not len(self.rows):
            return None
        if not hasattr(self, "_index"):
            object.__setattr__(self, "_index", {case_key(r): r for r in self.rows.to_dict("records")})
        return self._index.get(case_key(row))  # type: ignore[attr-defined]

    def why_no_row(self, row: Mapping[str, Any]) -> str:
        """Why `row` has no baseline row: the baseline measured it with other settings (threads,
        profile, evaluation subset), or not at all."""
        want = case_key(row)
        settings = [KEY.index(c) for c in SETTINGS]
        identity = [i for i in range(len(KEY)) if i not in settings]
        same_case = [k for k in (case_key(r) for r in self.rows.to_dict("records"))
                     if [k[i] for i in identity] == [want[i] for i in identity]] if len(self.rows) else []
        if not same_case:
            return "not in the baseline"
        gaps = [[i for i in settings if k[i] != want[i]] for k in same_case]
        fewest = min(len(g) for g in gaps)  # the nearest rows: they differ in the fewest settings
        nearest = [k for k, g in zip(same_case, gaps) if len(g) == fewest]
        differ = [i for i in settings if any(k[i] != want[i] for k in nearest)]
        show = lambda v: "none" if v is None else str(v)  # noqa: E731
        theirs = ", ".join(f"{KEY[i]}={','.join(sorted({show(k[i]) for k in nearest}))}" for i in differ)
        mine = ", ".join(f"{KEY[i]}={show(want[i])}" for i in differ)
        return f"the baseline ran it with {theirs}, this run with {mine}"


def latest_per_key(df: pd.DataFrame) -> pd.DataFrame:
    """The newest row of each case key (df is ordered oldest run first)."""
    if df.empty:
        return df
    keys = [case_key(r) for r in df[list(KEY)].to_dict("records")]
    keep = ~pd.Series(keys, index=df.index).duplicated(keep="last")
    return df[keep.values]


def _run_order(df: pd.DataFrame) -> pd.Series:
    """Rows without `run_started_at` (one run read back by harness.store.Run, or rows handed in
    oldest run first): the order of each row's run, by where that run first appears. Every row of
    one run shares it, so every recipe of a (framework, mode) stays a candidate; row position alone
    kept only the last recipe of each."""
    if "run_id" not in df:
        return pd.Series(0, index=df.index)
    first = {run: i for i, run in reversed(list(enumerate(df["run_id"].astype(str))))}
    return df["run_id"].astype(str).map(first)


def current_rows(df: pd.DataFrame) -> pd.DataFrame:
    """What a target looks like now: for each (target, model, batch, framework, mode), the rows
    of the newest run that measured it (all its recipes). A recipe renamed or dropped since then
    does not linger as a stale row of its own."""
    if df.empty:
        return df
    group = ["target", "model", "batch_size", "framework", "mode"]
    order = df["run_started_at"].astype("datetime64[ns]") if "run_started_at" in df else _run_order(df)
    newest = df.assign(_t=order).groupby(group, dropna=False)["_t"].transform("max")
    current = df[(order == newest).values]
    return latest_per_key(current)


def select_baseline(db, ref: str, target: str, exclude_run_id: Optional[str] = None) -> Baseline:
    """`latest`: each case's newest earlier ok result on this target; a run id: that run;
    otherwise a tag: each case's newest ok result among runs with that tag on this target."""
    from harness.history.db import HistoryError, display_url

    if ref == "latest":
        rows = db.results(target=target, status="ok")
        rows = rows[rows["run_id"] != exclude_run_id]
        return Baseline(ref, "latest", latest_per_key(rows))
    if len(db.runs(run_id=ref)):
        rows = db.results(run_id=ref, status="ok")
        return Baseline(ref, "run", rows)
    if len(db.runs(tag=ref)):
        rows = db.results(tag=ref, target=target, status="ok")
        rows = rows[rows["run_id"] != exclude_run_id]
        return Baseline(ref, "tag", latest_per_key(rows))
    recent = db.runs(target=target, limit=5)
    tags = sorted({t for ts in db.runs(target=target)["tags"] for t in ts.split(",") if t})
    raise HistoryError(
        f"--qb-baseline {ref!r}: no run id or tag {ref!r} in {display_url(db.url)} (target {target}). "
        f"Recent runs on {target}: {', '.join(recent['run_id']) or 'none'}; tags: {', '.join(tags) or 'none'}. "
        f"Use --qb-baseline=latest, one of those, or run once with --qb-tag {ref} first.")


# -- statistics --------------------------------------------------------------------------------
def mann_whitney_p(old: np.ndarray, new: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value (normal approximation with tie correction)."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(old, new, alternative="two-sided", method="asymptotic").pvalue)


def mean_ci(confidence: float, latencies: Optional[np.ndarray] = None,
            row: Optional[Mapping[str, Any]] = None) -> Optional[tuple[float, float]]:
    """Student-t interval of the mean latency, from raw latencies or the row's mean/std/n."""
    from scipy.stats import t

    if latencies is not None and len(latencies) >= 2:
        n, mean, std = len(latencies), float(np.mean(latencies)), float(np.std(latencies, ddof=1))
    elif row is not None:
        n, mean, std = number(row.get("n_runs")), number(row.get("latency_mean_ms")), number(row.get("latency_std_ms"))
        if n is None or mean is None or std is None or n < 2:
            return None
        n = int(n)
    else:
        return None
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def _noise(row: Mapping[str, Any], latencies: Optional[np.ndarray]) -> Optional[float]:
    value = number(row.get("iqr_over_median"))
    if value is None and latencies is not None and len(latencies):
        p25, p50, p75 = np.percentile(latencies, [25, 50, 75])
        value = float((p75 - p25) / p50) if p50 > 0 else None
    return value


def judge_case(new: Mapping[str, Any], old: Mapping[str, Any], gates: Gates,
               new_latencies: Optional[np.ndarray] = None, old_latencies: Optional[np.ndarray] = None,
               higher_is_better: Optional[bool] = None) -> list[dict[str, Any]]:
    """One verdict per quantity measured on both sides. Accuracy is judged in the metric's
    direction (default: the new row's `higher_is_better`, see harness.metrics)."""
    if higher_is_better is None:
        higher_is_better = row_higher_is_better(new)
    out = []
    noise = {side: _noise(row, lat) for side, row, lat in (("old", old, old_latencies), ("new", new, new_latencies))}
    noisy = {side: v for side, v in noise.items() if v is not None and v >= gates.noise}
    for q in QUANTITIES:
        a, b = number(old.get(q.column)), number(new.get(q.column))
        if a is None or b is None:
            continue
        if q.column == "accuracy" and not higher_is_better:
            q = Quantity(q.column, q.gate, q.relative, True, q.timing, q.unit)
        threshold = float(getattr(gates, q.gate))
        verdict, change = _verdict(q, a, b, threshold)
        record = {"case_id": new.get("case_id"), "baseline_run_id": old.get("run_id"), "quantity": q.column,
                  "old": a, "new": b, "change": change, "p_value": None, "method": "threshold", "verdict": verdict,
                  "detail": f"threshold {threshold:g}{'' if q.relative else ' points'}"}
        if q.timing and noisy:
            # Noise widens the margin; it does not switch the gate off.
            widened = threshold + gates.noise_k * max(noisy.values())
            why = ", ".join(f"{side} IQR/median {v:.3f}" for side, v in noisy.items())
            record["detail"] = f"threshold {threshold:g} widened to {widened:.3g} by noise ({why} >= {gates.noise:g})"
            if verdict != SAME:
                wide_verdict, _ = _verdict(q, a, b, widened)
                if wide_verdict == SAME:
                    record.update(verdict=NOISY, detail=f"within the noise: {record['detail']}")
        if q.column == "latency_p50_ms" and record["verdict"] in (REGRESSION, IMPROVEMENT):
            margin = record["detail"] if noisy else f"threshold {gates.latency:.0%}"
            record.update(_significance(new, old, new_latencies, old_latencies, gates, margin))
            if not record.pop("significant"):
                record["verdict"] = SAME
        out.append(record)
    energy = judge_energy(new, old, gates)
    return out + ([energy] if energy else [])


def _significance(new, old, new_lat, old_lat, gates: Gates, margin: str) -> dict[str, Any]:
    """Is the latency change statistically real? `margin` describes the threshold it also passed."""
    enough = all(lat is not None and len(lat) >= gates.min_samples for lat in (new_lat, old_lat))
    if enough:
        p = mann_whitney_p(np.asarray(old_lat), np.asarray(new_lat))
        return {"p_value": p, "method": "mann-whitney", "significant": p < gates.alpha,
                "detail": f"Mann-Whitney U p={format_p(p)} ({'<' if p < gates.alpha else '>='} alpha {gates.alpha:g}), "
                          f"{margin}"}
    confidence = 1.0 - gates.alpha
    ci_old, ci_new = mean_ci(confidence, old_lat, old), mean_ci(confidence, new_lat, new)
    label = f"ci{round(100 * confidence):d}"
    if ci_old is None or ci_new is None:
        return {"method": label, "significant": False,
                "detail": f"too few latencies for a {confidence:.0%} confidence interval: not judged"}
    apart = ci_new[0] > ci_old[1] or ci_old[0] > ci_new[1]
    return {"method": label, "significant": apart,
            "detail": f"{confidence:.0%} CIs of the mean [{ci_old[0]:.4g}, {ci_old[1]:.4g}] vs [{ci_new[0]:.4g}, "
                      f"{ci_new[1]:.4g}] ms {'do not overlap' if apart else 'overlap'}, {margin}"}


def compare(new_rows: pd.DataFrame, baseline: Baseline, gates: Callable[[Mapping[str, Any]], Gates] | Gates,
            new_latencies: Callable[[str], Optional[np.ndarray]], old_latencies: Callable[[Mapping[str, Any]], Optional[np.ndarray]]) -> pd.DataFrame:
    """Verdicts (VERDICT_COLUMNS) for every ok row of a run that has a baseline row."""
    records: list[dict[str, Any]] = []
    for row in new_rows.to_dict("records"):
        if row.get("status") != "ok":
            continue
        old = baseline.row_for(row)
        if old is None:
            continue
        g = gates(row) if callable(gates) else gates
        records.extend(judge_case(row, old, g, new_latencies(row["case_id"]), old_latencies(old)))
    return pd.DataFrame(records, columns=VERDICT_COLUMNS)


# -- the table pytest prints ---------------------------------------------------------------------
def _fmt(q: str, value: Optional[float]) -> str:
    value = number(value)
    if value is None:
        return "-"
    if q == "size_bytes":
        return f"{value:,.0f} B"
    if q == "accuracy":
        return f"{value:.4f}"
    if q.endswith("_ms"):
        return f"{value:.4g} ms"
    if q.endswith("_mb"):
        return f"{value:.1f} MB"
    if q.startswith("energy_"):
        return f"{value:.4g} mJ"
    return f"{value:.4g}"


def format_change(quantity: str, change: Optional[float]) -> str:
    change = number(change)
    if change is None:
        return "-"
    return f"{change:+.2f} pts" if quantity == "accuracy" else f"{100 * change:+.1f}%"


def format_p(p: Optional[float]) -> str:
    p = number(p)
    if p is None:
        return "-"
    return "<1e-300" if p == 0 else f"{p:.2g}"  # 0.0: below what a double can hold


def verdict_table(verdicts: pd.DataFrame, show: Sequence[str] = (REGRESSION, IMPROVEMENT)) -> str:
    """Regressions and improvements: case, quantity, old, new, change, p-value, method, verdict."""
    picked = verdicts[verdicts["verdict"].isin(show)]
    if picked.empty:
        return ""
    order = {v: i for i, v in enumerate(show)}
    picked = picked.assign(_o=picked["verdict"].map(order)).sort_values(["_o", "case_id", "quantity"])
    lines = [{
        "verdict": r["verdict"], "case": r["case_id"], "quantity": r["quantity"],
        "old": _fmt(r["quantity"], r["old"]), "new": _fmt(r["quantity"], r["new"]),
        "change": format_change(r["quantity"], r["change"]),
        "p_value": format_p(r["p_value"]),
        "method": r["method"], "baseline": r["baseline_run_id"],
    } for _, r in picked.iterrows()]
    return pd.DataFrame(lines).to_string(index=False)


def failure_message(case_id: str, verdicts: pd.DataFrame, baseline: Baseline) -> Optional[str]:
    """Why a case's test fails, or None when nothing regressed."""
    bad = verdicts[verdicts["verdict"] == REGRESSION]
    if bad.empty:
        return None
    parts = [f"{r['quantity']} {_fmt(r['quantity'], r['old'])} -> {_fmt(r['quantity'], r['new'])} "
             f"({format_change(r['quantity'], r['change'])}; {r['detail']})" for _, r in bad.iterrows()]
    run = bad.iloc[0]["baseline_run_id"]
    return (f"{case_id}: regressed against {baseline.describe()} [baseline run {run}]: " + "; ".join(parts)
            + ". If the change is intended, rerun with --qb-baseline=<this run id> next time or raise the threshold "
              "(--latency-threshold, --accuracy-threshold, ... or Suite(gates=Gates(...))).")
