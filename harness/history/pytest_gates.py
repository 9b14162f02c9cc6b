"""What harness.pytest_plugin calls for the history: options, the per-case gate, and at the
end of the session the run's append to the database and the table of regressions."""
from __future__ import annotations

import json
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd
import pytest

from harness import settings
from harness.history.gates import Gates
from harness.values import number

# command-line flag -> Gates field (None: the suite's value)
THRESHOLD_OPTIONS = {
    "--latency-threshold": ("latency", float, "relative p50 change that counts as a regression (default 0.10 = 10%)"),
    "--accuracy-threshold": ("accuracy_points", float, "accuracy drop in points that counts (default 0.5)"),
    "--size-threshold": ("size", float, "relative artifact size change that counts (default 0.10)"),
    "--memory-threshold": ("memory", float, "relative peak memory change that counts (default 0.10)"),
    "--energy-threshold": ("energy", float, "relative energy-per-inference change that counts (default 0.10)"),
    "--alpha": ("alpha", float, "significance level of the latency test (default 0.01; CIs are 1-alpha)"),
    "--noise-threshold": ("noise", float, "IQR/median at which a case's timing counts as noisy (default 0.10)"),
    "--noise-k": ("noise_k", float, "a noisy case's latency/energy threshold widens by this x its IQR/median (default 1.0)"),
}


def add_options(group) -> None:
    group.addoption("--results-db", default=None,
                    help="results database: a SQLite path or postgresql://... (default: $QUANTBENCH_RESULTS_DB, "
                         "else <results-dir>/history.sqlite; 'off' keeps results/<run-id>/ only)")
    group.addoption("--baseline", default=None,
                    help="compare each case with latest | RUN_ID | TAG from the results database; regressions fail")
    group.addoption("--tag", action="append", default=[], help="label this run in the results database (repeatable)")
    for flag, (_, kind, text) in THRESHOLD_OPTIONS.items():
        group.addoption(flag, type=kind, default=None, help=text)
    group.addoption("--max-accuracy-drop", type=float, default=None,
                    help="accuracy budget in points for the recommendation printed at the end and the dashboard "
                         "(default 1.0, as quantbench recommend)")
    group.addoption("--dashboard", default=None,
                    help="where the dashboard is rebuilt at the end of the run (default <results-dir>/dashboard; "
                         "'off' skips it)")


def _overrides(config: pytest.Config) -> dict[str, Any]:
    return {name: config.getoption(flag) for flag, (name, _, _) in THRESHOLD_OPTIONS.items()}


def configure(config: pytest.Config, target_name) -> None:
    """Validate the options; with --baseline, resolve it now so a bad one stops the run before it starts.
    `target_name`: the run's target, or a list of them (a run across devices)."""
    drop = config.getoption("--max-accuracy-drop")
    if drop is not None and not drop >= 0:
        raise pytest.UsageError(f"quantbench: --max-accuracy-drop must be a non-negative number of points, not {drop!r}")
    problem = Gates().override(_overrides(config)).validate()
    if problem:
        raise pytest.UsageError(f"quantbench: {problem.replace('gates.', 'threshold ')}")
    config.stash[_STATE] = None
    ref = config.getoption("--baseline")
    if not ref:
        return
    from harness.history.location import HistoryError, open_db, resolve_url

    url = resolve_url(config.getoption("--results-db"), settings.for_pytest(config).results_dir)
    if url is None:
        raise pytest.UsageError("quantbench: --baseline needs the results database, but --results-db is off")
    try:
        db = open_db(url)
        from harness.history.regress import select_baseline

        baseline = select_baseline(db, ref, target_name, exclude_run_id=config.getoption("--run-id"))
    except HistoryError as exc:
        raise pytest.UsageError(f"quantbench: {exc}") from exc
    config.stash[_PRESET] = (db, baseline)


_STATE = pytest.StashKey()
_PRESET = pytest.StashKey()


class HistoryGate:
    """One per session: judges cases against the baseline and records the run at the end."""

    def __init__(self, config: pytest.Config, session) -> None:
        from harness.history.location import HistoryError, open_db, resolve_url

        self.config = config
        self.session = session
        self.overrides = _overrides(config)
        self.tags = list(config.getoption("--tag") or [])
        preset = config.stash.get(_PRESET, None)
        self.db, self.baseline = preset if preset else (None, None)
        self.error: Optional[str] = None  # why the database could not be opened (the run goes on)
        if self.db is None:
            url = resolve_url(config.getoption("--results-db"), settings.for_pytest(config).results_dir)
            try:
                self.db = open_db(url) if url else None
            except HistoryError as exc:  # e.g. no SQLAlchemy here: the run goes on, results/<run-id>/ keeps it
                self.error = str(exc)
        self.recorded = False  # this run is in self.db (the dashboard can show it)
        self.gates_by_suite: dict[str, Gates] = {}
        self.verdicts: dict[str, pd.DataFrame] = {}  # case_id -> its verdicts

    @classmethod
    def for_session(cls, config: pytest.Config, session) -> "HistoryGate":
        if config.stash.get(_STATE, None) is None:
            config.stash[_STATE] = cls(config, session)
        return config.stash[_STATE]

    def gates(self, case_or_row: Any) -> Gates:
        suite = case_or_row.suite if hasattr(case_or_row, "suite") else case_or_row.get("suite")
        if hasattr(case_or_row, "gates"):
            self.gates_by_suite[suite] = case_or_row.gates
        return self.gates_by_suite.get(suite, Gates()).override(self.overrides)

    def _new_latencies(self, case_id: str) -> Optional[np.ndarray]:
        path = self.session.store.cases_dir / f"{case_id}.json"
        if not path.is_file():
            return None
        return np.asarray(json.loads(path.read_text()).get("latencies_ms") or [], dtype=np.float64)

    def _old_latencies(self, row: Mapping[str, Any]) -> Optional[np.ndarray]:
        pk = number(row.get("result_pk"))
        if pk is None:
            return None
        return self.db.latency_arrays([int(pk)]).get(int(pk))

    def _judge(self, rows: pd.DataFrame) -> pd.DataFrame:
        from harness.history.regress import compare

        return compare(rows, self.baseline, self.gates, self._new_latencies, self._old_latencies)

    def check(self, case, row: Mapping[str, Any]) -> Optional[str]:
        """Why this case's test fails against the baseline, or None."""
        from harness.history.regress import failure_message

        self.gates(case)
        if self.baseline is None:
            return None
        verdicts = self._judge(pd.DataFrame([dict(row)]))
        self.verdicts[case.case_id] = verdicts
        return failure_message(case.case_id, verdicts, self.baseline)

    def finish(self, reporter) -> None:
        """Append the run to the database, store and print the verdicts (after BenchSession.close)."""
        session = self.session
        if self.db is None:  # no database: nothing below may import SQLAlchemy (a baseline needs the database)
            why = f"NOT recorded: {self.error}" if self.error else "not recorded (--results-db=off)"
            later = f". Add it later with `quantbench history import {session.store.dir}`" if self.error else ""
            reporter.write_line(f"history: run {session.run_id} {why}{later}")
            return
        from harness.history.db import display_url, read_power_traces, read_run_dir
        from harness.history.regress import IMPROVEMENT, NOISY, REGRESSION, VERDICT_COLUMNS, verdict_table

        manifest, rows, lat = read_run_dir(session.store.dir)
        verdicts = pd.DataFrame(columns=VERDICT_COLUMNS)
        if self.baseline is not None:
            frame = pd.DataFrame(rows)
            missing = frame[~frame["case_id"].isin(self.verdicts)] if len(frame) else frame
            parts = [v for v in self.verdicts.values() if len(v)] + ([self._judge(missing)] if len(missing) else [])
            if parts:
                verdicts = pd.concat(parts, ignore_index=True)
        try:
            self.db.append_run(manifest, rows, lat, self.tags, power=read_power_traces(session.store.dir))
            if self.baseline is not None:
                self.db.record_comparisons(session.run_id, verdicts)
            self.recorded = True
            where = f"recorded in {display_url(self.db.url)}" + (f" (tags: {', '.join(self.tags)})" if self.tags else "")
        except Exception as exc:  # the run is safe on disk; say how to add it later
            where = (f"NOT recorded in {display_url(self.db.url)}: {exc}. Add it later with "
                     f"`quantbench history import {session.store.dir}`")
        reporter.write_line(f"history: run {session.run_id} {where}")
        if self.baseline is None:
            return
        reporter.section(f"quantbench: against {self.baseline.describe()}")
        table = verdict_table(verdicts)
        n_reg = int((verdicts["verdict"] == REGRESSION).sum())
        n_imp = int((verdicts["verdict"] == IMPROVEMENT).sum())
        reporter.write_line(table if table else "no regressions or improvements beyond the thresholds")
        noisy = sorted(set(verdicts.loc[verdicts["verdict"] == NOISY, "case_id"]))
        if noisy:
            reporter.write_line("within the noise (moved beyond the threshold, inside the margin its IQR/median "
                                f"widens): {', '.join(noisy)}")
        judged = set(verdicts["case_id"])
        unmatched = sorted((r for r in rows if r.get("status") == "ok" and r["case_id"] not in judged),
                           key=lambda r: r["case_id"])
        for r in unmatched:
            reporter.write_line(f"no baseline row for {r['case_id']}: {self.baseline.why_no_row(r)}")
        reporter.write_line(f"{n_reg} regression(s), {n_imp} improvement(s), {len(noisy)} within the noise")


def finish(config: pytest.Config, reporter, run=None) -> None:
    """`run` (with .run_id and .store) records a run whose cases ran in other processes
    (the pytest-xdist controller's view); a session's own gate is used when there is one."""
    gate: Optional[HistoryGate] = config.stash.get(_STATE, None)
    if gate is None and run is not None:
        gate = HistoryGate.for_session(config, run)
    if gate is not None:
        gate.finish(reporter)


def the_answer(config: pytest.Config, reporter, rows: pd.DataFrame) -> None:
    """The last words of a run: the recommendation per model and target (from this run's rows,
    through the same recommend() as `quantbench recommend`), then the rebuilt dashboard's path."""
    from harness.history.answer import answer_lines, dashboard_dir, write_dashboard
    from harness.history.recommend import DEFAULT_MAX_DROP

    drop = config.getoption("--max-accuracy-drop")
    drop = DEFAULT_MAX_DROP if drop is None else drop
    gates = Gates().override(_overrides(config))
    try:
        lines = answer_lines(rows, drop, gates)
    except Exception as exc:  # the rows and the history are written; never turn the summary into a crash
        lines = [f"answer NOT computed: {type(exc).__name__}: {exc} (try `quantbench recommend --target "
                 f"{rows['target'].iloc[0] if len(rows) else '<target>'}`)"]
    if lines:
        reporter.section(f"quantbench: which mode to ship (fastest within {drop:g} accuracy points of its fp32)")
        for line in lines:
            reporter.write_line(line)
    gate: Optional[HistoryGate] = config.stash.get(_STATE, None)
    out = dashboard_dir(config.getoption("--dashboard"), settings.for_pytest(config).results_dir)
    if out is None:
        return
    if gate is None or not gate.recorded:
        why = gate.error if gate is not None and gate.error else "this run is not in a results database"
        reporter.write_line(f"dashboard: not rebuilt ({why})")
        return
    try:
        index, seconds = write_dashboard(gate.db, out, drop, gates)
    except Exception as exc:  # the run and its history are safe; the site can be rebuilt later
        reporter.write_line(f"dashboard: NOT rebuilt: {type(exc).__name__}: {exc} (retry with `quantbench dashboard`)")
        return
    reporter.write_line(f"dashboard: {index} (rebuilt in {seconds:.1f} s)")
