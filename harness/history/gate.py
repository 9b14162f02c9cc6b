"""A run's history, with or without pytest: the per-case gate against --baseline while the run
goes on, and at its end the run's append to the database with the verdicts, as summary lines.

The database's location comes from history/location.py and `open_db` imports db.py (SQLAlchemy)
only when there is one to open: with none (`off`, or no SQLAlchemy here) the run goes on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from harness.history.gates import Gates
from harness.history.location import HistoryError, display_url, resolve_url
from harness.values import number

Block = tuple[Optional[str], list[str]]  # (a section title, or None to go on in the current one; lines)


def open_db(url: str):
    """The HistoryDB at `url`; HistoryError (not ImportError) when SQLAlchemy is missing, saying what to do."""
    try:
        from harness.history.db import HistoryDB
    except ImportError as exc:
        raise HistoryError(f"the results database {display_url(url)} needs the history extra, which is not installed "
                           f"({exc}): pip install 'quantbench[history]', or pass --results-db=off") from exc
    return HistoryDB(url)


def resolve_baseline(results_db: Optional[str], results_dir: Path, ref: str, target_name: Union[str, Sequence[str]],
                     exclude_run_id: Optional[str] = None):
    """(db, Baseline) for --baseline `ref`; HistoryError says why it cannot be used."""
    url = resolve_url(results_db, Path(results_dir))
    if url is None:
        raise HistoryError("--qb-baseline needs the results database, but --qb-results-db is off")
    db = open_db(url)
    from harness.history.regress import select_baseline

    return db, select_baseline(db, ref, target_name, exclude_run_id=exclude_run_id)


class HistoryGate:
    """One per run: judges cases against the baseline and records the run at the end.
    `store` (harness.store.RunStore) is where check() finds a case's latencies during the run."""

    def __init__(self, results_db: Optional[str], results_dir: Path, overrides: Optional[Mapping[str, Any]] = None,
                 tags: Sequence[str] = (), store=None, preset: Optional[tuple] = None) -> None:
        self.store = store
        self.overrides = dict(overrides or {})
        self.tags = list(tags)
        self.db, self.baseline = preset if preset else (None, None)
        self.error: Optional[str] = None  # why the database could not be opened (the run goes on)
        if self.db is None:
            url = resolve_url(results_db, Path(results_dir))
            try:
                self.db = open_db(url) if url else None
            except HistoryError as exc:  # e.g. no SQLAlchemy here: the run goes on, results/<run-id>/ keeps it
                self.error = str(exc)
        self.recorded = False  # this run is in self.db (the dashboard can show it)
        self.gates_by_suite: dict[str, Gates] = {}
        self.verdicts: dict[str, pd.DataFrame] = {}  # case_id -> its verdicts

    def gates(self, case_or_row: Any) -> Gates:
        suite = case_or_row.suite if hasattr(case_or_row, "suite") else case_or_row.get("suite")
        if hasattr(case_or_row, "gates"):
            self.gates_by_suite[suite] = case_or_row.gates
        return self.gates_by_suite.get(suite, Gates()).override(self.overrides)

    def _new_latencies(self, case_id: str) -> Optional[np.ndarray]:
        record = self.store.read_record(case_id) if self.store is not None else None
        if record is None:
            return None
        return np.asarray(record.get("latencies_ms") or [], dtype=np.float64)

    def _old_latencies(self, row: Mapping[str, Any]) -> Optional[np.ndarray]:
        pk = number(row.get("result_pk"))
        if pk is None:
            return None
        return self.db.latency_arrays([int(pk)]).get(int(pk))

    def _judge(self, rows: pd.DataFrame, new_latencies=None) -> pd.DataFrame:
        from harness.history.regress import compare

        return compare(rows, self.baseline, self.gates, new_latencies or self._new_latencies, self._old_latencies)

    def check(self, case, row: Mapping[str, Any]) -> Optional[str]:
        """Why this case's test fails against the baseline, or None."""
        from harness.history.regress import failure_message

        self.gates(case)
        if self.baseline is None:
            return None
        verdicts = self._judge(pd.DataFrame([dict(row)]))
        self.verdicts[case.case_id] = verdicts
        return failure_message(case.case_id, verdicts, self.baseline)

    def record(self, run) -> tuple[list[Block], Optional[pd.DataFrame]]:
        """Append `run` (harness.store.Run, complete) to the database with its verdicts; the
        summary's lines and the verdicts (None without a baseline)."""
        if self.db is None:  # no database: nothing below may import SQLAlchemy (a baseline needs the database)
            why = f"NOT recorded: {self.error}" if self.error else "not recorded (--qb-results-db=off)"
            later = f". Add it later with `quantbench history import {run.dir}`" if self.error else ""
            return [(None, [f"history: run {run.run_id} {why}{later}"])], None
        from harness.history.regress import IMPROVEMENT, NOISY, REGRESSION, VERDICT_COLUMNS, verdict_table

        rows = run.case_rows
        verdicts = pd.DataFrame(columns=VERDICT_COLUMNS)
        if self.baseline is not None:
            frame = pd.DataFrame(rows)
            missing = frame[~frame["case_id"].isin(self.verdicts)] if len(frame) else frame
            lat = run.latencies
            new_latencies = lambda case_id: (np.asarray(lat[case_id], dtype=np.float64)  # noqa: E731
                                             if case_id in lat else None)
            parts = [v for v in self.verdicts.values() if len(v)] + (
                [self._judge(missing, new_latencies)] if len(missing) else [])
            if parts:
                verdicts = pd.concat(parts, ignore_index=True)
        try:
            self.db.append(run, self.tags)
            if self.baseline is not None:
                self.db.record_comparisons(run.run_id, verdicts)
            self.recorded = True
            where = f"recorded in {display_url(self.db.url)}" + (f" (tags: {', '.join(self.tags)})" if self.tags else "")
        except Exception as exc:  # the run is safe on disk; say how to add it later
            where = (f"NOT recorded in {display_url(self.db.url)}: {exc}. Add it later with "
                     f"`quantbench history import {run.dir}`")
        blocks: list[Block] = [(None, [f"history: run {run.run_id} {where}"])]
        if self.baseline is None:
            return blocks, None
        table = verdict_table(verdicts)
        n_reg = int((verdicts["verdict"] == REGRESSION).sum())
        n_imp = int((verdicts["verdict"] == IMPROVEMENT).sum())
        lines = [table if table else "no regressions or improvements beyond the thresholds"]
        noisy = sorted(set(verdicts.loc[verdicts["verdict"] == NOISY, "case_id"]))
        if noisy:
            lines.append("within the noise (moved beyond the threshold, inside the margin its IQR/median "
                         f"widens): {', '.join(noisy)}")
        judged = set(verdicts["case_id"])
        unmatched = sorted((r for r in rows if r.get("status") == "ok" and r["case_id"] not in judged),
                           key=lambda r: r["case_id"])
        lines += [f"no baseline row for {r['case_id']}: {self.baseline.why_no_row(r)}" for r in unmatched]
        lines.append(f"{n_reg} regression(s), {n_imp} improvement(s), {len(noisy)} within the noise")
        return blocks + [(f"quantbench: against {self.baseline.describe()}", lines)], verdicts
