"""A benchmarking session: one run, case after case, on one target or across a fleet.

The path of a case: lease a board of the case's target (a target, or a pool of identical
boards: harness/boards.py), measure its fp32 baseline there first if it has not been
(harness/baselines.py), walk the case's steps (harness/pipeline.py: choose float layers ->
build -> check -> rounds -> score -> compare) and store the row.

A run across devices (--target=a,b, a pool) or pytest-xdist workers is one session per process,
sharing results/<run-id>/ (harness/fleet/) and leasing boards through its lock files.
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from harness import baselines, budget, pipeline
from harness.artifacts import ArtifactCache
from harness.baselines import Baselines
from harness.boards import Boards
from harness.fleet import Board, SharedRun
from harness.locks import file_lock
from harness.model_state import ModelState
from harness.options import SessionOptions
from harness.pipeline import CaseFailure, condense, died_row, gone_row  # noqa: F401 (public here too)
from harness.power_columns import power_trace
from harness.progress import Progress, silent
from harness.result import Measured
from harness.runner_jobs import RunnerJobs
from harness.sections import utc_ms
from harness.store import Run, RunStore, new_run_id
from harness.suite import Case
from harness.vocabulary import BASELINE_MODE
from targets import Target, TargetConfig
from targets.fleet import AllBoardsGone, BoardUnusable, Placement

class BenchSession(RunnerJobs):
    """One run: per case, a leased board, its fp32 baseline there, the pipeline's steps, the row."""

    def __init__(self, targets: Union[TargetConfig, Sequence[Placement]], options: SessionOptions = SessionOptions(),
                 progress: Optional[Progress] = None, command: Optional[list[str]] = None, worker: str = "") -> None:
        """`targets`: one target (run serially on it), or the placements of --target. `worker`:
        the pytest-xdist worker id when this process is one of several working on the run."""
        self.placements: list[Placement] = (
            [Placement(targets.name, (targets,))] if isinstance(targets, TargetConfig) else list(targets))
        self.target_config = self.placements[0].boards[0]
        self.options = options
        self.progress = progress or silent()
        self.command = command or sys.argv
        self.worker = worker
        # Several boards or several processes: leases, per-board fp32 baselines, shared files.
        self.fleet = (bool(worker) or len(self.placements) > 1 or any(p.pool for p in self.placements)
                      or any(p.lab for p in self.placements))  # a labgrid place is leased per case, even alone
        self.run_id = options.run_id or new_run_id()
        cache_dir = Path(options.cache_dir)
        self.boards = Boards(self.placements, cache_dir, options.threads, self.fleet, self.progress)
        self.cache = ArtifactCache(cache_dir / "artifacts",
                                   (lambda: file_lock(self.boards.host_lock, shared=True)) if self.fleet else None,
                                   self._waiting_for_build)
        self.board: Optional[Board] = None  # the board of the case being run (one case at a time)
        self.target: Optional[Target] = None
        self.target_info = None
        self.threads: Optional[int] = None
        if not self.fleet:
            # One target, one process: open it first, so an unusable target stops the run
            # before anything runs and leaves no empty run directory behind.
            self._use(self.boards.open(self.target_config))
        self.store = RunStore(options.results_dir, self.run_id)
        self.shared = SharedRun(self.store.dir)
        self.boards.attach(self.shared, self.store.log)
        self.models = ModelState(self.cache, cache_dir / "models", self.progress, options.profile,
                                 options.eval_samples, lambda: self.store.dir / "inputs")
        self.baselines = Baselines(self.shared if self.fleet else None)
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._done: dict[str, dict[str, Any]] = {}  # case_id -> row
        self.measured_cases: dict[str, tuple[Case, Any]] = {}  # case_id -> (case, its artifact): what a race reruns
        self.suites: set[str] = set()
        self._waited = 0.0  # how long the case in progress waited for its board
        self._held = None  # the labgrid place held for the case in progress (targets/labgrid_place.py)
        self._power_note: Optional[str] = None  # set while a case runs again after a power cycle
        self._hold: Optional[str] = None  # the held_from stamp of the board's hold in progress
        self._held_rows: list[str] = []  # the rows this process wrote under that hold: they get its held_until
        if not self.fleet or not (self.store.dir / "run.json").is_file():  # the last process rewrites it at the end
            self.store.write_manifest(self.command, self.started_at, False, self.placements, self.options,
                                      self.boards.facts())

    def _waiting_for_build(self, key: str) -> None:
        self.progress(f"waiting for another process to build artifact {key}")
        self.store.log(f"artifact {self.cache.root / key} (waiting for another process's build, worker {self.worker or 'main'})")

    def _use(self, board: Board) -> None:
        """Make `board` the one cases run on (a process runs one case at a time)."""
        self.board, self.target, self.target_info, self.threads = board, board.target, board.info, board.threads
        self.target_config = board.config
        if hasattr(self.progress, "board"):
            self.progress.board = board.name

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self._done.values())

    def race(self, limits: Any = None, cap_s: Optional[float] = None) -> list:
        """The race of the finalists of each (target, model, batch) this session measured, before the
        answer (harness/race_run.py); stored in the run. A fleet has none yet."""
        from harness.race_run import run_races

        return run_races(self, limits, cap_s)

    def build_ahead(self, cases: Sequence[Case], jobs: int, suite_files: dict[str, str]) -> None:
        """Build the artifacts of `cases` before any is timed, `jobs` at once (harness/build_ahead.py):
        a single target only (a fleet's processes build on their own, harness/pipeline.prepare)."""
        if not self.fleet:
            from harness.build_ahead import build_ahead

            build_ahead(self, cases, jobs, suite_files)

    def annotate(self, case_id: str, **columns: Any) -> None:
        """Add columns to a recorded row (its case file and this session's copy)."""
        self._done[case_id] = self.store.update_row(case_id, columns)

    def close(self, finalize: bool = True) -> Optional[Run]:
        """Release the targets; `finalize` (the run's last process): run.json and the report,
        and the run read back for what ends it (harness.finish)."""
        self.boards.save()
        run = self.store.finish(self.command, self.started_at, self.placements, self.options,
                                self.boards.facts()) if finalize else None
        self.boards.close()
        return run

    # -- per-model state (harness/model_state.py) ------------------------------------------
    def _context(self, case: Case):
        return self.models.context(case, self.target_config.settings)

    def _evaluation(self, case: Case):
        return self.models.evaluation(case)

    def _inputs_file(self, case: Case) -> Path:
        return self.models.inputs_file(case)

    # -- one case -----------------------------------------------------------------------------
    baseline_case = staticmethod(baselines.baseline_case)

    def run_case(self, case: Case) -> dict[str, Any]:
        """Run one case on a leased board of its target, with its fp32 baseline measured first
        on that same board if it has not been, and record its row."""
        if case.case_id in self._done:
            return self._done[case.case_id]
        if case.suite not in self.suites:
            self.store.write_suite_limits(case.suite, case.limits)  # run.json's limits.declared
        self.suites.add(case.suite)
        if case.mode == BASELINE_MODE and self.fleet:
            recorded = self.store.read_case(case.case_id)  # another worker measured it as a baseline
            if recorded is not None:
                self._done[case.case_id] = recorded
                return recorded
        placement = self.boards.placement(case)
        pipeline.prepare(self, case, placement)
        try:
            lease, board = self.boards.lease(case, placement, (baselines.fp32_of(case) or case).case_id,
                                             self.target_config)
        except (AllBoardsGone, BoardUnusable) as exc:
            return self._record(Measured(gone_row(self, case, placement, str(exc)), [], None))
        try:
            self._use(board)
            self._waited, self._held, self._power_note = lease.waited_s, lease.held, lease.power_note
            self._hold = utc_ms(lease.held_from)
            if case.mode == BASELINE_MODE and case.recipe is not None:
                measured = self._baseline_on(board, case)
            else:
                fp32 = baselines.fp32_of(case)
                baseline = self._baseline_on(board, fp32).row if fp32 is not None else None
                if self.boards.gone(board):  # it died measuring the baseline: this case's loss
                    measured = Measured(died_row(self, case, board, baseline), [], None)
                else:
                    self.baselines.compared_with[case.case_id] = baseline
                    measured = self._measure(case, baseline)
                    self.boards.lost(board, measured.row)
        finally:
            until = time.time()  # before the release begins: the rows' window lies within the hold
            self._held = self._power_note = None
            lease.release()
            self.store.log(f"[{case.case_id}] lease {board.name} {lease.held_from:.3f}-{until:.3f} "
                           f"(waited {lease.waited_s:.2f} s, worker {self.worker or 'main'})")
            hold, self._hold = self._hold, None
            self._end_hold(utc_ms(until))
        if measured.row.get("held_from") == hold and measured.row.get("board") == board.name:
            measured = replace(measured, row={**measured.row, "held_until": utc_ms(until)})
        return self._record(measured)

    def _end_hold(self, until: str) -> None:
        """The rows written while the board was held (an fp32 baseline measured first) get the hold's end."""
        written, self._held_rows = self._held_rows, []
        for case_id in written:
            self._done[case_id] = self.store.update_row(case_id, {"held_until": until})

    def _timed(self, case: Case, baseline: Optional[dict[str, Any]]) -> Measured:
        """Measure one case on the board in use (its lease is held): the pipeline's steps."""
        self.progress.start(case.case_id)
        try:
            run = pipeline.measure(self, case, self.options.timing(case.timing), baseline)
        finally:
            self.progress.finish()
        row = pipeline.on_board(run.result, self, self.board).to_row()  # the row, made once
        if run.artifact is not None and row.get("status") == "ok":
            self.measured_cases[case.case_id] = (case, run.artifact)
        # evaluation outputs: kept for an fp32 measurement (what the board's other cases are scored against)
        trace = power_trace(run.rounds.first.result) if run.rounds.first else []
        return Measured(row, run.latencies, None, trace, run.round_sizes)

    def _measure(self, case: Case, baseline: Optional[dict[str, Any]]) -> Measured:
        """Measure the case; once more if its board stopped answering and a power cycle
        through labgrid brought it back (the row says so)."""
        measured = self._timed(case, baseline)
        note = self.boards.revive(self.board, measured.row, self._held)
        if note:
            before, self._power_note = self._power_note, note
            try:
                measured = self._timed(case, baseline)
            finally:
                self._power_note = before
        return measured

    def _baseline_on(self, board: Board, fp32: Case) -> Measured:
        return self.baselines.on(board, fp32, lambda case: self._measure(case, None), self.boards.lost,
                                 lambda measured: measured.row["case_id"] in self._done or self._record(measured))

    def _record(self, measured: Measured) -> dict[str, Any]:
        """Write the case's row, once: an fp32 row another worker wrote first stays (its own
        measurement remains that board's baseline)."""
        row = measured.row
        if self.fleet:
            stored = self.store.write_case_once(row, measured.latencies, measured.trace, measured.round_sizes)
        else:
            self.store.write_case(row, measured.latencies, measured.trace, measured.round_sizes)
            stored = row
        if self._hold is not None and row.get("held_from") == self._hold and all(
                stored.get(k) == row.get(k) for k in ("held_from", "board", "worker")):
            self._held_rows.append(row["case_id"])  # written under the hold in progress (not another worker's row)
        self._done[row["case_id"]] = stored
        return stored

    # -- what a test asserts (harness/budget.py) ------------------------------------------------
    budget_failure = staticmethod(budget.failure)
    verdict = staticmethod(budget.verdict)

    def baseline_row(self, case: Case) -> Optional[dict[str, Any]]:
        """The fp32 row the case was compared with (measured on the same board)."""
        if case.case_id in self.baselines.compared_with:
            return self.baselines.compared_with[case.case_id]
        return self._done.get(self.baseline_case(case).case_id) if case.recipe else None

