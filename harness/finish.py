"""The end of a run, with or without pytest: `finish_run(run, options) -> RunSummary`.

From a complete run directory (harness.store.Run): the comparison table, the devices'
outages, the accuracy budgets, the run's append to the results database with the verdicts
against its baseline, which mode to ship (history/answer.py) and the rebuilt dashboard. It
prints nothing: the summary holds the lines in order, under their section titles, and the
pytest plugin (or any other caller) prints them.

    run = Run(resolve_run("latest"))
    summary = finish_run(run, FinishOptions(results_db="off"))
    print(summary.text())
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import pandas as pd

from harness import settings
from harness.history.gate import Block, HistoryGate, resolve_baseline
from harness.history.gates import Gates
from harness.limits import Limits
from harness.store import Run


@dataclass(frozen=True)
class FinishOptions:
    """How a run ends (the plugin's options; None: the default named here)."""

    results_dir: Path = field(default_factory=settings.results_dir)  # where the default database and dashboard live
    results_db: Optional[str] = None  # SQLite path, postgresql://..., 'off'; None: $QUANTBENCH_RESULTS_DB, else <results_dir>/history.sqlite
    baseline: Optional[str] = None  # judge the run against latest | RUN_ID | TAG from the database
    tags: tuple[str, ...] = ()  # labels of this run in the database
    thresholds: Mapping[str, Optional[float]] = field(default_factory=dict)  # Gates field -> value (None: default)
    max_accuracy_drop: Optional[float] = None  # points, for the answer and the dashboard (None: recommend's default)
    # the command line's limits for the answer (over each suite's declared ones, and over the flags run.json
    # recorded, field by field); None: those recorded
    limits: Optional[Limits] = None
    dashboard: Optional[str] = None  # where the dashboard is rebuilt; 'off' skips it; None: <results_dir>/dashboard
    targets: Optional[str] = None  # the title's "on ..." (None: the placements in run.json)
    profile: Optional[str] = None  # the title's profile (None: the one in run.json's options)
    failed_tests: frozenset = frozenset()  # case ids whose test failed (marked in the budget lines)


@dataclass
class RunSummary:
    """What the end of a run says, in order: `blocks` are (section title or None, lines)."""

    run_id: str
    blocks: list[Block]
    rows: pd.DataFrame
    recorded: bool = False  # the run is in the results database
    verdicts: Optional[pd.DataFrame] = None  # against the baseline (None without one)
    answer: list[str] = field(default_factory=list)  # one headline per (target, model, batch)
    dashboard: Optional[Path] = None  # its index page, when rebuilt

    def text(self) -> str:
        out = []
        for title, lines in self.blocks:
            if title:
                out.append(f"== {title} ==")
            out.extend(lines)
        return "\n".join(out)


def outage_lines(target: str, outages: list[dict]) -> list[str]:
    """How long the device was away, once per outage (run.json has the same under target.outages)."""
    lines = []
    for o in outages:
        when = f"from {o['since']} to {o['until']}" if o["until"] else f"since {o['since']}, still away at the end of the run"
        lines.append(f"target {target} stopped answering {when}: away {o['away_s']:.0f} s, {o['cases_failed']} case(s) failed")
    return lines


def _title(run: Run, options: FinishOptions) -> str:
    manifest = run.manifest
    targets = options.targets
    if targets is None:
        labels = [f"pool:{p['name']}" if p.get("pool") else p["name"] for p in manifest.get("placements") or []]
        targets = ", ".join(labels) or str((manifest.get("target") or {}).get("name"))
    profile = options.profile or (manifest.get("options") or {}).get("profile")
    return f"quantbench: run {run.run_id} on {targets}, {profile} profile"


def run_limits(run: Run, options: FinishOptions) -> tuple[Limits, dict[str, Limits]]:
    """(the command line's limits, suite -> its declared Limits): the flags run.json recorded, each
    one `options` sets (its limits and max_accuracy_drop) overriding; the suites' from run.json."""
    record = run.manifest.get("limits") or {}
    flags = Limits.from_dict(record.get("flags")).override(options.limits)
    flags = flags.override(Limits(max_accuracy_drop=options.max_accuracy_drop))
    declared = {suite: Limits.from_dict(values) for suite, values in (record.get("declared") or {}).items()}
    return flags, declared


def _report(run: Run, options: FinishOptions) -> Block:
    from harness.report import budget_lines, comparison_table

    df = run.rows
    flags, declared = run_limits(run, options)
    lines = [comparison_table(df, max_drop=flags, suite_limits=declared)]  # the device table's + is the answer's choice
    for name, board in sorted((run.manifest.get("targets") or {}).items()):
        lines += outage_lines(name, board.get("outages") or [])
    over = budget_lines(df)
    if over:
        lines.append(f"accuracy budgets: {len(over)} case(s) over budget or unchecked; a verdict, "
                     f"not a failure, unless --fail-over-budget or Suite(fail_over_budget=True):")
        lines += [f"  {case_id}: {verdict}" + (" [test failed]" if case_id in options.failed_tests else "")
                  for case_id, verdict in over]
    lines.append(f"report: {run.dir / 'results.parquet'} (also results.csv, latencies.parquet, run.json)")
    return _title(run, options), lines


def open_gate(run: Run, options: FinishOptions) -> HistoryGate:
    """The history of a run that had no gate while it ran; HistoryError for a bad --baseline."""
    preset = None
    if options.baseline:
        names = [p["name"] for p in run.manifest.get("placements") or []] or [run.manifest["target"]["name"]]
        preset = resolve_baseline(options.results_db, options.results_dir, options.baseline,
                                  names[0] if len(names) == 1 else names, exclude_run_id=run.run_id)
    return HistoryGate(options.results_db, options.results_dir, options.thresholds, options.tags, preset=preset)


def _answer_title(limits: set) -> str:
    """'which mode to ship (fastest within 1 accuracy points of its fp32)', or with the limits applied."""
    if len(limits) != 1:
        return "quantbench: which mode to ship (within each suite's limits, as each line says)"
    (one,) = limits
    best = {"p50": "fastest", "p99": "lowest p99", "size": "smallest", "energy": "least energy"}[one.goal]
    rest = one.describe(accuracy=False)
    return (f"quantbench: which mode to ship ({best} within {one.accuracy_drop:g} accuracy points of its fp32"
            + (f", {rest}" if rest else "") + ")")


def _answer(summary: RunSummary, gate: HistoryGate, options: FinishOptions, run: Run) -> list[Block]:
    """Which mode to ship per model and target (from this run's rows, through the same
    recommend() as `quantbench recommend`), then the rebuilt dashboard's path."""
    from harness.history.answer import answer_lines, dashboard_dir, write_dashboard

    from harness.history.recommend import group_limits

    rows = summary.rows
    flags, declared = run_limits(run, options)
    gates = Gates().override(options.thresholds)
    suites = set(rows["suite"].dropna()) if "suite" in rows and len(rows) else set()
    applied = {group_limits([s], flags, declared) for s in suites} or {flags}
    try:
        summary.answer = answer_lines(rows, flags, gates, declared)
    except Exception as exc:  # the rows and the history are written; never turn the summary into a crash
        summary.answer = [f"answer NOT computed: {type(exc).__name__}: {exc} (try `quantbench recommend --target "
                          f"{rows['target'].iloc[0] if len(rows) else '<target>'}`)"]
    blocks: list[Block] = []
    if summary.answer:
        blocks.append((_answer_title(applied), list(summary.answer)))
    out = dashboard_dir(options.dashboard, Path(options.results_dir))
    if out is None:
        return blocks
    if not gate.recorded:
        return blocks + [(None, [f"dashboard: not rebuilt ({gate.error or 'this run is not in a results database'})"])]
    try:
        index, seconds = write_dashboard(gate.db, out, flags, gates)  # its answers under the same limits
    except Exception as exc:  # the run and its history are safe; the site can be rebuilt later
        return blocks + [(None, [f"dashboard: NOT rebuilt: {type(exc).__name__}: {exc} (retry with `quantbench dashboard`)"])]
    summary.dashboard = index
    return blocks + [(None, [f"dashboard: {index} (rebuilt in {seconds:.1f} s)"])]


def finish_run(run: Run, options: Optional[FinishOptions] = None, gate: Optional[HistoryGate] = None) -> RunSummary:
    """The end of a complete run (run.json final, report rebuilt; RunStore.finish). `options`:
    FinishOptions() when None. `gate`: the run's own, when it judged cases while they ran (their
    verdicts are kept); else one is opened from `options`."""
    options = options if options is not None else FinishOptions()
    gate = gate if gate is not None else open_gate(run, options)
    report = _report(run, options)
    summary = RunSummary(run.run_id, [report], run.rows)
    history, summary.verdicts = gate.record(run)
    summary.recorded = gate.recorded
    summary.blocks += history
    summary.blocks += _answer(summary, gate, options, run)
    return summary


__all__ = ["FinishOptions", "RunSummary", "finish_run", "open_gate", "outage_lines"]
