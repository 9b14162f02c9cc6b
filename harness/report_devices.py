"""The comparison table of a run across devices: one line per (model, framework, mode, recipe,
batch), one column group per target (p50, speedup, accuracy), so the best mode on each device
and the best device for each mode read at a glance.

Marks after a p50: `*` the fastest target for that line; `+` the fastest mode that
`quantbench recommend` would ship on that target (per model and batch): the same candidate
rule (`history.candidate.candidate`: ok, accuracy scored and within the accuracy budget of its fp32,
timing trusted: not throttled, minimums met), so the mark never contradicts the answer
printed beside the table. Reasons of error, n/a and over-budget cases follow the table, one
line each.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Union

import pandas as pd

from harness.history.candidate import DEFAULT_MAX_DROP, as_limits, candidate, group_limits, rank
from harness.limits import Limits
from harness.rounds import speedup_text
from harness.values import formatted, number
from harness.vocabulary import FRAMEWORKS, MODES

LINE = ["model", "framework", "mode", "recipe", "batch_size"]


def _label(row: dict[str, Any]) -> str:
    return f"{row['target']} (pool)" if isinstance(row.get("pool"), str) and row["pool"] else str(row["target"])


def best_per_target(df: pd.DataFrame, max_drop: Union[Limits, float] = DEFAULT_MAX_DROP,
                    suite_limits: Optional[Mapping[str, Limits]] = None) -> dict[tuple, str]:
    """(target, model, batch) -> case_id of its best row that recommend() could ship
    (history.candidate.candidate under the limits applied to its suite, ranked as recommend()
    ranks: the objective, then p50, then the label)."""
    flags = as_limits(max_drop)
    best: dict[tuple, tuple] = {}
    for r in df.to_dict("records"):
        limits = group_limits([r.get("suite")], flags, suite_limits or {})
        c = candidate(r, limits)
        if c.eligible:
            key = (r["target"], r["model"], int(r["batch_size"]))
            order = (*rank(c, limits), r["case_id"])
            if key not in best or order < best[key]:
                best[key] = order
    return {key: order[-1] for key, order in best.items()}


def device_table(df: pd.DataFrame, reason_width: int = 90, max_drop: Union[Limits, float] = DEFAULT_MAX_DROP,
                 suite_limits: Optional[Mapping[str, Limits]] = None) -> str:
    targets = list(dict.fromkeys(df.sort_values("target")["target"]))
    labels = {r["target"]: _label(r) for r in df.to_dict("records")}
    best = best_per_target(df, max_drop, suite_limits)
    fw = {f: i for i, f in enumerate(FRAMEWORKS)}
    md = {m: i for i, m in enumerate(MODES)}
    frame = df.assign(recipe=df["recipe"].fillna("-"))
    groups = sorted(frame.groupby(LINE, dropna=False, sort=False),
                    key=lambda kv: (kv[0][0], kv[0][4], fw.get(kv[0][1], 99), md.get(kv[0][2], 99), str(kv[0][3])))
    lines, notes = [], []
    for (model, framework, mode, recipe, batch), group in groups:
        by_target = {r["target"]: r for r in group.to_dict("records")}
        p50s = {t: number(r.get("latency_p50_ms")) for t, r in by_target.items() if r.get("status") == "ok"}
        fastest = min((p for p in p50s.values() if p is not None), default=None)
        line: dict[tuple, str] = {("", "model"): model, ("", "framework"): framework, ("", "mode"): mode,
                                  ("", "recipe"): str(recipe)[:40], ("", "batch"): str(int(batch))}
        for target in targets:
            r = by_target.get(target)
            head = labels.get(target, target)
            if r is None:
                cells = ("", "", "")
            elif r.get("status") != "ok":
                cells = (str(r.get("status")), "-", "-")
                notes.append(f"{r['case_id']}: {r.get('status')}: {r.get('reason') or ''}")
            else:
                flags = "".join(f for f, on in (("~", r.get("noisy") is True), ("!", r.get("valid") is False)) if on)
                star = "*" if len(p50s) > 1 and fastest is not None and p50s.get(target) == fastest else ""
                plus = "+" if best.get((target, model, int(batch))) == r["case_id"] else ""
                cells = (formatted(r.get("latency_p50_ms"), ".4f") + flags + star + plus,
                         speedup_text(number(r.get("speedup")), number(r.get("speedup_ci_low")),
                                      number(r.get("speedup_ci_high")), r.get("rounds_disagree") is True,
                                      number(r.get("speedup_ci_level"))),
                         formatted(r.get("accuracy"), ".4f"))
                if r.get("within_budget") is False:
                    notes.append(f"{r['case_id']}: over its accuracy budget ({formatted(100 * (number(r.get('accuracy_delta')) or math.nan), '+.2f')} pts vs fp32)")
            line.update({(head, "p50_ms"): cells[0], (head, "speedup"): cells[1], (head, "accuracy"): cells[2]})
        lines.append(line)
    table = pd.DataFrame(lines)
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    text = table.to_string(index=False)
    legend = ("per target: p50 in ms (* fastest target for the line, + what `quantbench recommend` ships on the "
              f"target: the fastest mode with its accuracy scored, within {as_limits(max_drop).accuracy_drop:g} points of its "
              "fp32 (and the run's limits, by its objective), not throttled, "
              "minimums met; ~ noisy, ! minimums not met), speedup vs that target's own fp32 (with rounds: [interval @its true confidence], "
              "? rounds disagree), accuracy.")
    shown = [n if len(n) <= reason_width else n[: reason_width - 3] + "..." for n in notes]
    return "\n".join([text, legend] + (["not measured or over budget:"] + [f"  {n}" for n in shown] if shown else []))
