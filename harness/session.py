"""A benchmarking session: one run, case after case, on one target or across a fleet.

The path of a case: build (or fetch) the artifact, lease a board of the case's target (a
target, or a pool of identical boards), ship the artifact with the evaluation inputs there,
let the runner measure, score accuracy here, compare with the fp32 baseline of the same
framework and batch measured on the same board, and write the row.

A run across devices (--target=a,b or a pool) or over pytest-xdist workers is one session
per process; the processes share results/<run-id>/ (harness/fleet/) and lease boards
through lock files (targets/fleet.py), so a board measures one case at a time.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from harness import baselines, compat, profiles, report, settings
from harness.artifacts import ArtifactCache
from harness.data import Dataset, bind_inputs, resolve_data
from harness.device_columns import fill_device_columns
from harness.fleet import Board, HostExclusive, Measured, SharedRun, board_facts
from harness.locks import file_lock
from harness.power_columns import combined_throttling, fill_power_columns, power_trace
from harness.rounds import paired_speedup, round_columns
from harness.mixed_columns import fill_mixed_columns
from harness.metrics import Metric, accuracy_loss, resolve_metric
from harness.progress import Progress, silent
from harness.quantize import BuildContext, NotApplicable, fp32_recipe
from harness.quantize.base import ExportFormat
from harness.quantize.onnx_weights import size_note
from harness.sensitivity import choose_before_build
from harness.stats import latency_stats
from harness.store import RunStore, new_run_id
from harness.suite import Case, Timing
from harness.vocabulary import BASELINE_MODE, STATUS_ERROR, STATUS_NA, STATUS_OK
from targets import RunnerJob, Target, TargetConfig, TargetError, TargetInfo, open_target
from targets.fleet import AllBoardsGone, BoardLeases, BoardUnusable, Lease, Placement

HOST_KINDS = ("local", "cuda")  # targets that run on this host: they share its CPU with builds



@dataclass(frozen=True)
class SessionOptions:
    """Per-run settings from the command line; None means the suite's own value."""

    results_dir: Path = field(default_factory=settings.results_dir)  # run directories are created under here
    cache_dir: Path = field(default_factory=settings.cache_dir)  # artifacts and trained models, shared across runs
    threads: Optional[int] = None  # default: the target's physical core count
    min_runs: Optional[int] = None
    min_duration_s: Optional[float] = None
    max_duration_s: Optional[float] = None
    warmup_runs: Optional[int] = None
    run_id: Optional[str] = None
    profile: str = profiles.QUICK  # how much of the matrix: the suites' evaluation subsets, the case budget
    rounds: Optional[int] = None  # runner processes per case, paired with fp32 ones (default: suite, then profile)
    case_budget_s: Optional[float] = None  # default: the profile's (harness/profiles.py)
    eval_samples: Optional[int] = None  # every case scores a seeded subset of this many samples (default: the suites')

    def budget_s(self, case_timeout_s: float) -> float:
        """Seconds a case may take in the runner: the profile's budget (or --case-budget), and
        never more than the target's case timeout, past which the runner is killed anyway."""
        budget = self.case_budget_s if self.case_budget_s is not None else profiles.resolve(self.profile).case_budget_s
        return min(case_timeout_s, budget) if budget is not None else case_timeout_s

    def timing(self, suite_timing: Timing) -> Timing:
        # a suite that declares no timing gets the profile's; then the command line's values
        if replace(suite_timing, rounds=None) == Timing():
            suite_timing = replace(suite_timing, **dict(profiles.resolve(self.profile).timing))
        overrides = {
            k: v for k, v in (("min_runs", self.min_runs), ("min_duration_s", self.min_duration_s),
                              ("max_duration_s", self.max_duration_s), ("warmup_runs", self.warmup_runs))
            if v is not None
        }
        timing = replace(suite_timing, **overrides)
        if timing.min_duration_s > timing.max_duration_s:
            timing = replace(timing, max_duration_s=timing.min_duration_s)
        # rounds: --rounds, else the suite's, else the run profile's
        return replace(timing, rounds=self.rounds or timing.rounds or profiles.resolve(self.profile).rounds)


class CaseFailure(Exception):
    """A case step failed; the message is one actionable line for the row."""


def condense(exc: BaseException, limit: int = 300) -> str:
    """The framework's own message as one line, without the traceback."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, (CaseFailure, NotApplicable)):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BenchSession:
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
        self.fleet = bool(worker) or len(self.placements) > 1 or any(p.pool for p in self.placements)
        self.run_id = options.run_id or new_run_id()
        cache_dir = Path(options.cache_dir)
        self.cache = ArtifactCache(cache_dir / "artifacts",
                                   (lambda: file_lock(self.host_lock, shared=True)) if self.fleet else None,
                                   self._waiting_for_build)
        self._boards: dict[str, Board] = {}  # opened by this process, by board name
        self.board: Optional[Board] = None  # the board of the case being run (one case at a time)
        self.target: Optional[Target] = None
        self.target_info = None
        self.threads: Optional[int] = None
        if not self.fleet:
            # One target, one process: open it first, so an unusable target stops the run
            # before anything runs and leaves no empty run directory behind.
            self._use(self._open(self.target_config))
        self.store = RunStore(options.results_dir, self.run_id)
        self.shared = SharedRun(self.store.dir)
        # Leases belong to the run (all its processes share its directory); separate runs
        # started by hand do not wait for each other, as before fleets existed.
        self.leases = BoardLeases(self.shared.dir / "leases", self.shared.dir / "gone")
        self.host_lock = self.shared.dir / "leases" / "host.lock"
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._contexts: dict[str, BuildContext] = {}
        self._datasets: dict[str, Dataset] = {}
        self._inputs: dict[tuple, Path] = {}  # (model, evaluation samples) -> inputs file
        self._done: dict[str, dict[str, Any]] = {}  # case_id -> row
        self._outputs: dict[str, dict[str, np.ndarray]] = {}  # fp32 case_id -> evaluation outputs on the board in use
        self._baselines: dict[tuple[str, str], Measured] = {}  # (board, fp32 case_id) -> measured there
        self._compared_with: dict[str, Optional[dict[str, Any]]] = {}  # case_id -> the fp32 row it was compared with
        self.suites: set[str] = set()
        self._waited = 0.0  # how long the case in progress waited for its board
        if not self.fleet or not (self.store.dir / "run.json").is_file():  # the last process rewrites it at the end
            self._write_run_json(finished=False)

    def _waiting_for_build(self, key: str) -> None:
        self.progress(f"waiting for another process to build artifact {key}")
        self.store.log(f"artifact {self.cache.root / key} (waiting for another process's build, worker {self.worker or 'main'})")

    # -- boards ----------------------------------------------------------------------------
    def _open(self, config: TargetConfig) -> Board:
        """Open a board (connects to a device); TargetError when it cannot be used."""
        if config.name not in self._boards:
            target = open_target(config, Path(self.options.cache_dir))
            try:
                info = target.info()
            except BaseException:
                target.close()
                raise
            if self.fleet and config.kind in HOST_KINDS:
                target = HostExclusive(target, self.host_lock)
            self._boards[config.name] = Board(config, target, info, self.options.threads or info.threads)
            if self.fleet:
                self.shared.save_board(self._boards[config.name])
        return self._boards[config.name]

    def _use(self, board: Board) -> None:
        """Make `board` the one cases run on (a process runs one case at a time)."""
        self.board, self.target, self.target_info, self.threads = board, board.target, board.info, board.threads
        self.target_config = board.config
        if hasattr(self.progress, "board"):
            self.progress.board = board.name

    def _placement(self, case: Case) -> Placement:
        if not case.target:
            return self.placements[0]
        for placement in self.placements:
            if placement.name == case.target:
                return placement
        raise LookupError(f"case {case.case_id}: target {case.target!r} is not one of this run's "
                          f"({', '.join(p.name for p in self.placements)})")

    def _lease(self, case: Case, placement: Placement) -> tuple[Lease, Board]:
        """A free, usable board of the placement, leased; boards that already measured the
        case's fp32 baseline first. A board that cannot be opened, or stopped answering, is
        marked gone for the rest of the run and the next one is tried; AllBoardsGone when
        none is left."""
        baseline_id = (self._fp32_of(case) or case).case_id
        prefer = [b.name for b in placement.boards if self.shared.has_baseline(b.name, baseline_id)] if self.fleet else []

        shown = []

        def waiting(seconds: float) -> None:
            if not shown:
                self.progress.start(case.case_id)
                shown.append(True)
            self.progress(f"waiting {seconds:.0f} s for a free board of {placement.label}")

        if not self.fleet:  # one target, one process: the target opened at the start; its run() reconnects or fails fast
            return Lease(self.target_config, 0.0), self._boards[self.target_config.name]
        while True:
            try:
                lease = self.leases.acquire(placement, prefer, waiting)
            finally:
                if shown:
                    self.progress.finish()
                    shown.clear()
            try:
                board = self._open(lease.board)
                # a pool has other boards to go on with: one attempt; a named target gets its reconnect window
                board.target.ready(self.progress, quick=bool(placement.pool))
            except TargetError as exc:
                reason = " ".join(str(exc).split())
                if placement.pool:
                    self.leases.mark_gone(lease.board.name, reason)  # before releasing: nobody else tries it
                lease.release()
                if placement.pool:
                    opened = self._boards.pop(lease.board.name, None)
                    if opened is not None:
                        opened.target.close()
                    self.store.log(f"[{case.case_id}] board {lease.board.name} of pool {placement.name} is gone: {reason}")
                    continue
                raise BoardUnusable(reason) from None
            except BaseException:
                lease.release()
                raise
            board.pool = placement.pool
            return lease, board

    # -- run bookkeeping ---------------------------------------------------------------
    def _write_run_json(self, finished: bool) -> None:
        self.store.write_manifest(self.command, self.started_at, finished, self.placements, self.options,
                                  {name: board_facts(board) for name, board in self._boards.items()})

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self._done.values())

    def close(self, finalize: bool = True) -> None:
        """Release the targets; `finalize` (the run's last process): run.json and the report."""
        if self.fleet:
            for board in self._boards.values():  # with the outages this process saw
                self.shared.save_board(board)
        if finalize:
            self._write_run_json(finished=True)
            self.store.rebuild()
        for board in self._boards.values():
            board.target.close()

    # -- per-model state -----------------------------------------------------------------
    def _dataset(self, case: Case) -> Dataset:
        name = case.model.name
        if name not in self._datasets:
            dataset = resolve_data(case.model.data)
            if case.model.inputs is not None:  # a model file with its own input names and shapes
                dataset = bind_inputs(dataset, case.model.inputs(), f"model {name} ({case.model.description})")
            self._datasets[name] = dataset
        return self._datasets[name]

    def _context(self, case: Case) -> BuildContext:
        budget = case.budget if case.searches_float_layers else None  # what keep_float="auto" searches within
        key = f"{case.model.name}|{','.join(case.keep_float)}|{budget}|{case.kept_precision}"
        if key not in self._contexts:
            self._contexts[key] = BuildContext(case.model, self._dataset(case), self.cache,
                                               Path(self.options.cache_dir) / "models", self.progress, case.keep_float,
                                               export=ExportFormat.from_settings(self.target_config.settings),
                                               mixed_budget=budget, kept_precision=case.kept_precision)
        return self._contexts[key]

    def _eval_count(self, case: Case) -> Optional[int]:
        """How many evaluation samples this run scores for the case (None: all): --eval-samples,
        else the suite's figure for the run's profile."""
        count = self.options.eval_samples or case.eval_samples.get(self.options.profile)
        return count if count is not None and count < self._dataset(case).n_eval else None

    def _evaluation(self, case: Case):
        """(inputs, labels) the case is scored on: the profile's seeded subset, or everything."""
        return self._dataset(case).eval_subset(self._eval_count(case), profiles.EVAL_SEED)

    def _inputs_file(self, case: Case) -> Path:
        count = self._eval_count(case)
        key = (case.model.name, count)
        if key not in self._inputs:
            dataset = self._dataset(case)
            inputs, _ = self._evaluation(case)
            subset = f"-{count}of{dataset.n_eval}" if count else ""
            path = self.store.dir / "inputs" / f"{case.model.name}-{dataset.fingerprint()}{subset}.npz"
            if not path.is_file():  # another worker of the run may have written it (same bytes)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
                np.savez(tmp, **{k: np.ascontiguousarray(v) for k, v in inputs.items()})
                os.replace(tmp, path)  # atomic: a worker shipping it never reads half a file
            self._inputs[key] = path
        return self._inputs[key]

    # -- the path of one case ------------------------------------------------------------------
    @staticmethod
    def baseline_case(case: Case) -> Case:
        # The fp32 recipe of the same source and execution format: tflite's keras and litert-torch rows each
        # have their own, torch's TorchScript and compiled recipes theirs.
        return replace(case, mode=BASELINE_MODE, recipe=fp32_recipe(case.framework, case.recipe), budget=None, na_reason="")

    def _fp32_of(self, case: Case) -> Optional[Case]:
        """The fp32 case this one is compared with (None for an fp32 or n/a case, or when the
        framework has no fp32 recipe for its source)."""
        if case.recipe is None or case.mode == BASELINE_MODE:
            return None
        try:
            return self.baseline_case(case)
        except LookupError:
            return None

    def run_case(self, case: Case) -> dict[str, Any]:
        """Run one case on a leased board of its target, with its fp32 baseline measured first
        on that same board if it has not been, and record its row."""
        if case.case_id in self._done:
            return self._done[case.case_id]
        self.suites.add(case.suite)
        if case.mode == BASELINE_MODE and self.fleet:
            recorded = self.store.read_case(case.case_id)  # another worker measured it as a baseline
            if recorded is not None:
                self._done[case.case_id] = recorded
                return recorded
        placement = self._placement(case)
        self._prepare(case, placement)
        try:
            lease, board = self._lease(case, placement)
        except (AllBoardsGone, BoardUnusable) as exc:
            return self._record(Measured(self._gone_row(case, placement, str(exc)), [], None))
        acquired = time.time()
        try:
            self._use(board)
            self._waited = lease.waited_s
            if case.mode == BASELINE_MODE and case.recipe is not None:
                measured = self._baseline_on(board, case)
            else:
                fp32 = self._fp32_of(case)
                baseline = self._baseline_on(board, fp32).row if fp32 is not None else None
                if board.pool and self.leases.gone(board.name):  # it died measuring the baseline: this case's loss
                    measured = Measured(self._died_row(case, board, baseline), [], None)
                else:
                    self._compared_with[case.case_id] = baseline
                    measured = self._timed(case, baseline)
                    self._check_board(board, measured.row)
        finally:
            lease.release()
            self.store.log(f"[{case.case_id}] lease {board.name} {acquired:.3f}-{time.time():.3f} "
                           f"(waited {lease.waited_s:.2f} s, worker {self.worker or 'main'})")
        return self._record(measured)

    def _timed(self, case: Case, baseline: Optional[dict[str, Any]]) -> Measured:
        """Measure one case on the board in use (its lease is held)."""
        self.progress.start(case.case_id)
        try:
            row, latencies, trace, round_sizes = self._measure(case, self.options.timing(case.timing), baseline)
        finally:
            self.progress.finish()
        row.update(pool=self.board.pool, board=self.board.name, worker=self.worker or None,
                   lease_wait_s=round(self._waited, 3))
        if self.board.pool:
            row["target"] = self.board.pool
        # evaluation outputs: kept for an fp32 measurement (what the board's other cases are scored against)
        return Measured(row, latencies, None, trace, round_sizes)

    def _baseline_on(self, board: Board, fp32: Case) -> Measured:
        """The fp32 case measured on this board: from this process, from another worker's
        measurement there, or measured now (and recorded as the fp32 row if it has none yet)."""
        key = (board.name, fp32.case_id)
        if key not in self._baselines and self.fleet:
            found = self.shared.baseline(board.name, fp32.case_id)
            if found is not None:
                self._baselines[key] = found
        if key not in self._baselines:
            self._outputs.pop(fp32.case_id, None)  # another board's outputs are no reference here
            measured = replace(self._timed(fp32, None), outputs=self._outputs.get(fp32.case_id))
            if self._check_board(board, measured.row) and board.pool:
                return measured  # the board left the pool: no baseline of its, and the case in progress is the loss
            if self.fleet:
                self.shared.save_baseline(board.name, measured)
            self._baselines[key] = measured
            if fp32.case_id not in self._done:
                self._record(measured)
        measured = self._baselines[key]
        self._outputs.pop(fp32.case_id, None)
        if measured.outputs is not None:
            self._outputs[fp32.case_id] = measured.outputs  # what _score compares this board's case with
        return measured

    def _record(self, measured: Measured) -> dict[str, Any]:
        """Write the case's row, once: an fp32 row another worker wrote first stays (its own
        measurement remains that board's baseline)."""
        row = measured.row
        if self.fleet:
            row = self.store.write_case_once(row, measured.latencies, measured.trace, measured.round_sizes)
        else:
            self.store.write_case(row, measured.latencies, measured.trace, measured.round_sizes)
        self._done[row["case_id"]] = row
        return row

    def _prepare(self, case: Case, placement: Placement) -> None:
        """Host work before holding a board: the fp32 model (its weights are in every cache
        key) and, once the placement's facts are known (a board opened by any process of the
        run: they decide which recipes apply), the artifacts of the case and its baseline.
        A failure here is ignored: it happens again under the lease and becomes the row's reason."""
        if not self.fleet or case.recipe is None:
            return
        info = next((self._boards[b.name].info for b in placement.boards if b.name in self._boards), None)
        if info is None:
            known = self.shared.boards()
            facts = next((known[b.name] for b in placement.boards if b.name in known), None)
            if facts is not None:
                info = TargetInfo(**{k: facts[k] for k in ("name", "kind", "profile", "threads", "arch", "device", "host", "facts")})
        for needed in [c for c in (self._fp32_of(case), case) if c is not None]:
            try:
                context = self._context(needed)
                context.key_parts(needed.recipe, float_choice=False)  # builds or loads the fp32 model (its weights are in the key)
                if info is not None and not needed.recipe.not_applicable_reason(needed.model, info):
                    choose_before_build(context, needed.recipe)  # keep_float="auto": the search hands the build its layers
                    artifact, built = context.artifact(needed.recipe)
                    if built:
                        self.store.log(f"[{needed.case_id}] artifact {artifact.path} (built)")
            except Exception:
                pass

    def _gone_row(self, case: Case, placement: Placement, reason: str) -> dict[str, Any]:
        metric = resolve_metric(case.model.metric)
        first = placement.boards[0]
        return report.new_row(
            run_id=self.run_id, case_id=case.case_id, started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            suite=case.suite, model=case.model.name, framework=case.framework, mode=case.mode,
            recipe=case.recipe.name if case.recipe else None, target=placement.name, target_kind=first.kind,
            profile=first.profile, batch_size=case.batch_size, metric=metric.name,
            higher_is_better=metric.higher_is_better, accuracy_budget=case.budget, status=STATUS_ERROR,
            reason=f"{reason} (not run)", pool=placement.pool, worker=self.worker or None)

    def _died_row(self, case: Case, board: Board, baseline: dict[str, Any]) -> dict[str, Any]:
        row = self._row(case)
        row.update(status=STATUS_ERROR, pool=board.pool, board=board.name, worker=self.worker or None,
                   lease_wait_s=round(self._waited, 3),
                   reason=f"board {board.name} stopped answering while measuring the fp32 baseline: {baseline.get('reason')}")
        if board.pool:
            row["target"] = board.pool
        return row

    def _check_board(self, board: Board, row: dict[str, Any]) -> bool:
        """After a failed case on a device of a fleet, check it still answers while the lease is
        held (ssh: reconnect, killing a runner the lost connection left behind). A pool's board
        that does not (one attempt) leaves the pool for the rest of the run and its remaining
        work goes to the other boards; a named target gets its reconnect window, and its later
        cases each try one quick connect. Returns whether the board was lost."""
        if not self.fleet or row.get("status") != STATUS_ERROR:
            return False
        try:
            board.target.ready(self.progress, quick=bool(board.pool))
            return False
        except TargetError as exc:
            reason = " ".join(str(exc).split())
            if board.pool:
                self.leases.mark_gone(board.name, reason)
            self.store.log(f"[{row['case_id']}] board {board.name} {'left pool ' + board.pool if board.pool else 'is away'}: {reason}")
            return True

    def _row(self, case: Case) -> dict[str, Any]:
        info = self.target_info
        metric = resolve_metric(case.model.metric)
        return report.new_row(
            run_id=self.run_id, case_id=case.case_id, started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            suite=case.suite, model=case.model.name, framework=case.framework, mode=case.mode,
            recipe=case.recipe.name if case.recipe else None, target=info.name, target_kind=info.kind,
            profile=info.profile, device=info.device, batch_size=case.batch_size, threads=self.threads,
            metric=metric.name, higher_is_better=metric.higher_is_better, accuracy_budget=case.budget,
            power_source=f"none: no power sensor is sampled on {info.kind} target {info.name} (profile {info.profile})",
        )

    def _measure(self, case: Case, timing: Timing, baseline) -> tuple[dict[str, Any], list[float], list, list[int]]:
        """The row, every latency (round after round), the first round's power trace, and the
        number of latencies each round contributed."""
        row = self._row(case)
        if case.recipe is None:
            row.update(status=STATUS_NA, reason=case.na_reason)
            return row, [], [], []
        reason = case.recipe.not_applicable_reason(case.model, self.target_info)
        if reason:
            row.update(status=STATUS_NA, reason=reason)
            return row, [], [], []
        try:
            ctx = self._context(case)
            self.progress(f"quantizing ({case.recipe.name})")
            choose_before_build(ctx, case.recipe)  # keep_float="auto": the search hands the build its layers
            artifact, built = ctx.artifact(case.recipe)
            row.update(size_bytes=artifact.size_bytes, artifact_key=artifact.manifest["key"],
                       recipe=artifact.manifest.get("notes", {}).get("recipe", row["recipe"]),
                       artifact_sha256=artifact.manifest["sha256"])
            if artifact.manifest.get("notes", {}).get("quantized_ops"):  # which ops compute in int8, e.g. "MatMul 1/1, Conv 0/53"
                row["quantized_ops"] = str(artifact.manifest["notes"]["quantized_ops"])
            if case.mode == "mixed":
                fill_mixed_columns(row, artifact.manifest)  # kept_float, its precision, the search's outcome
            self.store.log(f"[{case.case_id}] artifact {artifact.path} ({'built' if built else 'cached'})")
            reason = case.recipe.artifact_reason(artifact, self.target_info, case.batch_size)
            if reason:  # what only the built artifact tells (e.g. int8 matmul shapes a GPU kernel refuses)
                row.update(status=STATUS_NA, reason=reason)
                return row, [], [], []
            problem = compat.load_problem(artifact.path, artifact.manifest, self.target_info.facts, self.target_info.name)
            if problem:  # version skew: say which file needs which version, before shipping anything
                raise CaseFailure(problem)
            rounds = max(1, timing.rounds or 1)
            paired = self._paired_baseline(case, baseline, rounds)
            outcome, results, baseline_p50s = None, [], []
            for r in range(rounds):
                # ABBA: the fp32 baseline runs right before the case in even rounds, right after it in odd ones
                if paired and r % 2 == 0:
                    baseline_p50s.append(self._baseline_round(case, paired, timing, r, rounds))
                where = f"round {r + 1}/{rounds}, " if rounds > 1 else ""
                self.progress(f"measuring on {self.target_info.name} ({where}up to {timing.max_duration_s:g} s)")
                # the evaluation pass runs once per artifact and batch: in the first round only
                done = self._run_job(case, artifact, timing, self._work_dir(case, r), evaluate=r == 0)
                outcome = outcome or done
                results.append(done.result)
                if paired and r % 2 == 1:
                    baseline_p50s.append(self._baseline_round(case, paired, timing, r, rounds))
            result = outcome.result
            if result.get("nonfinite_outputs"):
                bad = ", ".join(f"{n} non-finite values in output {k!r}" for k, n in result["nonfinite_outputs"].items())
                raise CaseFailure(f"model produced NaN/Inf on the evaluation data ({bad})")
            self._fill_measurements(row, result)
            latencies = [lat for done in results for lat in done["latencies_ms"]]
            if rounds > 1:
                self._pool_rounds(row, results, latencies)
            if result.get("evaluation_skipped"):  # over the case's time budget: the latency is the result
                row.update(eval_samples=0, reason=f"accuracy not scored: {result['evaluation_skipped']} "
                                                  f"({self._budget_hint()})")
            else:
                self.progress("scoring accuracy")
                self._score(case, row, outcome.outputs, baseline)
            report.compare_to_baseline(row, baseline)
            if paired:  # the speedup over paired rounds, with its interval, replaces the single ratio
                row.update(paired_speedup(baseline_p50s, [float(np.median(done["latencies_ms"])) for done in results]))
            baselines.name_baseline(row, baseline)  # the speedup's other side, by name
            execution = (baselines.execution_note(artifact.manifest) if case.mode == BASELINE_MODE
                         else baselines.inherited_note(baseline))
            if execution:  # an fp32 artifact far slower than its eager module: the row says so
                row["execution_note"] = execution
            note = size_note(case.mode, artifact.manifest.get("notes", {}).get("weight_storage"), row.get("size_ratio"))
            if note:  # an int8 file that keeps float weights, or is not smaller, says why
                row["size_note"] = note
            self._check_budget(case, row, baseline)
            return row, latencies, power_trace(result), [len(done["latencies_ms"]) for done in results]
        except NotApplicable as exc:
            row.update(status=STATUS_NA, reason=condense(exc))
            return row, [], [], []
        except Exception as exc:  # any failure becomes an error row; the other cases still run
            self.store.log(f"[{case.case_id}] FAILED\n{traceback.format_exc()}")
            row.update(status=STATUS_ERROR, reason=condense(exc) + f" (details: {self.store.log_path})")
            return row, [], [], []

    # -- rounds ----------------------------------------------------------------------------------
    def _work_dir(self, case: Case, r: int, baseline: bool = False) -> Path:
        # per board in a fleet: one fp32 case may run on several boards at once
        folder = self.store.dir / "work" / (self.board.name if self.fleet else "") / case.case_id
        return folder / f"baseline-round-{r}" if baseline else (folder if r == 0 else folder / f"round-{r}")

    def _run_job(self, case: Case, artifact, timing: Timing, work_dir: Path, evaluate: bool = True):
        outcome = self.target.run(self._job(case, artifact, timing, work_dir, evaluate), self.progress)
        if outcome.log.strip():
            self.store.log(f"[{case.case_id}] runner output ({work_dir.name}):\n{outcome.log.rstrip()}")
        if outcome.result.get("status") != STATUS_OK:
            reason = outcome.result.get("reason") or "failed without a reason"
            raise CaseFailure(f"runner on {self.target_info.name}: {reason}")
        return outcome

    def _paired_baseline(self, case: Case, baseline: Optional[dict[str, Any]], rounds: int):
        """(baseline case, its artifact) to run beside each round, when the case is measured in
        rounds and its fp32 baseline measured fine; None otherwise (fp32 itself, one round)."""
        if rounds < 2 or case.mode == BASELINE_MODE or not baseline or baseline.get("status") != STATUS_OK:
            return None
        base = self.baseline_case(case)
        artifact, _ = self._context(base).artifact(base.recipe)  # cached: it ran as the baseline's own row
        return base, artifact

    def _baseline_round(self, case: Case, paired, timing: Timing, r: int, rounds: int) -> float:
        """One fresh process of the fp32 baseline, timing only: its p50."""
        base, artifact = paired
        self.progress(f"round {r + 1}/{rounds}: fp32 baseline beside it")
        done = self._run_job(base, artifact, timing, self._work_dir(case, r, baseline=True), evaluate=False)
        return float(np.median(done.result["latencies_ms"]))

    @staticmethod
    def _pool_rounds(row: dict[str, Any], results: list[dict[str, Any]], latencies: list[float]) -> None:
        """Latency statistics over every round's latencies; the rounds' own p50s beside them.
        Load, first call, memory and power stay the first round's."""
        row.update(latency_stats(latencies, int(results[0]["batch_size"])))
        row.update(n_runs=len(latencies), duration_s=sum(done["duration_s"] for done in results),
                   valid=all(bool(done["valid"]) for done in results))
        row.update(round_columns([float(np.median(done["latencies_ms"])) for done in results]))
        row["round_n_runs"] = " ".join(str(len(done["latencies_ms"])) for done in results)
        throttling = [(done.get("power") or {}) for done in results]
        if any("throttled" in power for power in throttling):  # throttled in any round is throttled
            row["throttled"] = combined_throttling([power.get("throttled") for power in throttling])
            reasons = list(dict.fromkeys(why for power in throttling for why in power.get("throttle_reasons") or []))
            row["throttle_reasons"] = "; ".join(reasons) or None

    def _job(self, case: Case, artifact, timing: Timing, work_dir: Optional[Path] = None,
             evaluate: bool = True) -> RunnerJob:
        sensing = dict(self.target_config.settings.get("sensors", {}))  # the inventory's [targets.X.sensors]
        config = {
            "framework": case.framework,
            "threads": self.threads,
            "batch_size": case.batch_size,
            "warmup_runs": timing.warmup_runs,
            "warmup_s": timing.warmup_s,
            "min_runs": timing.min_runs,
            "min_duration_s": timing.min_duration_s,
            "max_duration_s": timing.max_duration_s,
            # fp32 is the reference every other case of its framework is scored against: only the
            # target's case timeout bounds it.
            "budget_s": (self.target_config.case_timeout_s if case.mode == BASELINE_MODE
                         else self.options.budget_s(self.target_config.case_timeout_s)),
            "evaluate": evaluate,
            "options": {},
            "artifact_format": compat.describe(artifact.path, artifact.manifest),  # for load errors on the device
            "sensors": {"profile": self.target_info.profile, "root": sensing.get("root", "/"),
                        "idle_s": sensing.get("idle_s", 1.0), "settings": sensing},
        }
        return RunnerJob(case.case_id, artifact.path, artifact.manifest["file"], artifact.manifest,
                         self._inputs_file(case), config, work_dir or self._work_dir(case, 0))

    @staticmethod
    def _fill_measurements(row: dict[str, Any], result: dict[str, Any]) -> None:
        row.update(latency_stats(result["latencies_ms"], int(result["batch_size"])))
        system = result.get("system", {})
        row.update(
            status=STATUS_OK, reason="",
            init_ms=result["init_ms"], first_ms=result["first_ms"], n_runs=result["n_runs"],
            duration_s=result["duration_s"], valid=bool(result["valid"]), threads=result["threads"],
            peak_rss_mb=result["peak_rss_mb"], runtime=result["runtime"], runtime_version=result["runtime_version"],
            python_version=system.get("python_version"), host=system.get("host"),
            device=system.get("cpu_model") or row["device"],
        )
        if result.get("timed_batch_note"):  # the data could not fill one batch: the row says it was repeated
            row["batch_note"] = result["timed_batch_note"]
        fill_power_columns(row, result)  # power, energy, throttling, temperatures
        fill_device_columns(row, result)  # GPU state and memory, execution providers, copies, window note

    def _budget_hint(self) -> str:
        if self.options.case_budget_s is not None:
            return "set by --case-budget"
        return f"the {self.options.profile} profile's budget; raise it with --case-budget SECONDS, or run --profile nightly"

    def _score(self, case: Case, row: dict[str, Any], outputs, baseline) -> None:
        metric: Metric = resolve_metric(case.model.metric)
        _, labels = self._evaluation(case)
        if case.mode == BASELINE_MODE:
            self._outputs[case.case_id] = outputs
            reference = outputs
        else:
            reference = self._outputs.get(self.baseline_case(case).case_id)
        if metric.needs_reference and reference is None:
            why = (baseline or {}).get("reason") or "the fp32 baseline failed"
            raise CaseFailure(f"metric {metric.name} is scored against fp32 outputs, and the fp32 baseline has none ({why})")
        row["accuracy"] = metric.score(outputs, labels, reference)
        row["eval_samples"] = len(next(iter(outputs.values())))
        interval = metric.confidence_interval(outputs, labels, reference)
        row["accuracy_ci_low"], row["accuracy_ci_high"] = interval if interval else (None, None)
        row.update(metric.companion_scores(outputs, labels, reference))  # e.g. nn_agreement

    @staticmethod
    def _check_budget(case: Case, row: dict[str, Any], baseline) -> None:
        if case.budget is None:
            return
        if baseline is None or baseline.get("accuracy") is None or row.get("accuracy") is None:
            row["within_budget"] = None  # cannot be checked: no fp32 accuracy, or this case's was not scored
            return
        loss_points = accuracy_loss(row["accuracy"], baseline["accuracy"], bool(row["higher_is_better"]))
        row["within_budget"] = bool(loss_points <= case.budget + 1e-9)

    # -- what a test asserts --------------------------------------------------------------
    @staticmethod
    def budget_failure(case: Case, row: dict[str, Any], baseline: Optional[dict[str, Any]]) -> Optional[str]:
        """Why an ok case does not meet its accuracy budget (over it, or it cannot be checked), or None."""
        if case.budget is None or row["status"] != STATUS_OK:
            return None
        if row.get("within_budget") is None:
            if row.get("accuracy") is None and row.get("eval_samples") == 0:
                return None  # not scored within the case's time budget: its reason says so, its latency stands
            why = baseline["reason"] if baseline else "no fp32 baseline"
            return f"{case.case_id}: accuracy budget {case.budget} points cannot be checked: fp32 baseline failed ({why})"
        if not row["within_budget"]:
            loss = accuracy_loss(row["accuracy"], baseline["accuracy"], bool(row["higher_is_better"]))
            lower = "" if row["higher_is_better"] else f" ({row['metric']}: lower is better)"
            return (f"{case.case_id}: accuracy {row['accuracy']:.4f} vs fp32 {baseline['accuracy']:.4f}{lower} "
                    f"loses {loss:.2f} points, over the {case.mode} budget of {case.budget} points")
        return None

    @classmethod
    def verdict(cls, case: Case, row: dict[str, Any], baseline: Optional[dict[str, Any]],
                fail_over_budget: bool = False) -> Optional[str]:
        """Why the case's test fails, or None when it passes (n/a is a skip, handled by the caller).
        An error fails; a case over its accuracy budget is a verdict shown in the table and the
        summary, and fails only with `fail_over_budget` (the flag, or the suite's setting)."""
        if row["status"] == STATUS_ERROR:
            return f"{case.case_id}: {row['reason']}"
        if fail_over_budget or case.fail_over_budget:
            return cls.budget_failure(case, row, baseline)
        return None

    def baseline_row(self, case: Case) -> Optional[dict[str, Any]]:
        """The fp32 row the case was compared with (measured on the same board)."""
        if case.case_id in self._compared_with:
            return self._compared_with[case.case_id]
        return self._done.get(self.baseline_case(case).case_id) if case.recipe else None
