"""The boards a session runs cases on: opened once per process, leased one case at a time, and
recovered (or given up) when one stops answering.

A single target in one process is opened at the start and used for every case. Several boards
(--target=a,b, a pool) or pytest-xdist workers lease a board of the case's placement through the
run's lock files (targets/fleet.py): boards that already measured the case's fp32 baseline
first. A pool's board that cannot be opened, or that stops answering after a failed case, is
marked gone for the rest of the run and its work goes to the other boards; a named target gets
its reconnect window.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from harness.fleet import Board, HostExclusive, SharedRun, board_facts
from harness.progress import Progress
from harness.suite import Case
from harness.vocabulary import STATUS_ERROR
from targets import TargetConfig, TargetError, TargetInfo, open_target
from targets.fleet import BoardLeases, BoardUnusable, Lease, Placement

HOST_KINDS = ("local", "cuda")  # targets that run on this host: they share its CPU with builds


def _powered(config: TargetConfig, held: Any) -> bool:
    """A labgrid place held for the case, with a power port."""
    return held is not None and bool((config.settings.get("labgrid") or {}).get("power"))


class Boards:
    """The boards this process opened, by name, and the run's leases on them."""

    def __init__(self, placements: Sequence[Placement], cache_dir: Path, threads: Optional[int], fleet: bool,
                 progress: Progress) -> None:
        self.placements = list(placements)
        self.cache_dir = Path(cache_dir)
        self.threads = threads  # --threads; default: each board's own
        self.fleet = fleet
        self.progress = progress
        self.opened: dict[str, Board] = {}
        self.shared: Optional[SharedRun] = None
        self.leases: Optional[BoardLeases] = None
        self.host_lock: Optional[Path] = None
        self.log: Callable[[str], None] = lambda message: None

    def attach(self, shared: SharedRun, log: Callable[[str], None]) -> None:
        """The run's shared directory: leases, gone boards and the host lock live there.
        Leases belong to the run (all its processes share its directory); separate runs
        started by hand do not wait for each other."""
        self.shared, self.log = shared, log
        self.leases = BoardLeases(shared.dir / "leases", shared.dir / "gone")
        self.host_lock = shared.dir / "leases" / "host.lock"

    def open(self, config: TargetConfig) -> Board:
        """Open a board (connects to a device); TargetError when it cannot be used."""
        if config.name not in self.opened:
            target = open_target(config, self.cache_dir)
            try:
                info = target.info()
            except BaseException:
                target.close()
                raise
            if self.fleet and config.kind in HOST_KINDS:
                target = HostExclusive(target, self.host_lock)
            self.opened[config.name] = Board(config, target, info, self.threads or info.threads)
            if self.fleet:
                self.shared.save_board(self.opened[config.name])
        return self.opened[config.name]

    def placement(self, case: Case) -> Placement:
        if not case.target:
            return self.placements[0]
        for placement in self.placements:
            if placement.name == case.target:
                return placement
        raise LookupError(f"case {case.case_id}: target {case.target!r} is not one of this run's "
                          f"({', '.join(p.name for p in self.placements)})")

    def known_info(self, placement: Placement) -> Optional[TargetInfo]:
        """What a board of the placement reported, when any process of the run opened one."""
        info = next((self.opened[b.name].info for b in placement.boards if b.name in self.opened), None)
        if info is None:
            known = self.shared.boards()
            facts = next((known[b.name] for b in placement.boards if b.name in known), None)
            if facts is not None:
                info = TargetInfo(**{k: facts[k] for k in ("name", "kind", "profile", "threads", "arch", "device", "host", "facts")})
        return info

    def lease(self, case: Case, placement: Placement, baseline_id: str, default: TargetConfig) -> tuple[Lease, Board]:
        """A free, usable board of the placement, leased; boards that already measured the
        case's fp32 baseline (`baseline_id`) first. A board that cannot be opened, or stopped
        answering, is marked gone for the rest of the run and the next one is tried;
        AllBoardsGone when none is left."""
        if not self.fleet:  # one target, one process: the target opened at the start; its run() reconnects or fails fast
            return Lease(default, 0.0), self.opened[default.name]
        prefer = [b.name for b in placement.boards if self.shared.has_baseline(b.name, baseline_id)]
        shown = []

        def waiting(seconds: float, why: str = "") -> None:
            if not shown:
                self.progress.start(case.case_id)
                shown.append(True)
            self.progress(f"waiting {seconds:.0f} s for a free board of {placement.label}" + (f": {why}" if why else ""))

        while True:
            try:
                lease = self.leases.acquire(placement, prefer, waiting, self.log)
            except TargetError as exc:  # a labgrid lab: coordinator gone, every place held past the wait limit
                self.log(f"[{case.case_id}] {exc}")
                raise BoardUnusable(" ".join(str(exc).split())) from None
            finally:
                if shown:
                    self.progress.finish()
                    shown.clear()
            try:
                board = self.open(lease.board)
                # a pool has other boards to go on with: one attempt; a named target gets its reconnect window
                board.target.ready(self.progress, quick=bool(placement.pool))
            except TargetError as exc:
                reason = " ".join(str(exc).split())
                note = self._power_cycle(lease.board, lease.held, reason, case.case_id) if _powered(lease.board, lease.held) else None
                if note:  # a labgrid place brought back by its power port
                    lease.power_note, board = note, self.opened[lease.board.name]
                    board.pool = placement.pool
                    return lease, board
                if placement.pool:
                    self.leases.mark_gone(lease.board.name, reason)  # before releasing: nobody else tries it
                lease.release()
                if placement.pool:
                    opened = self.opened.pop(lease.board.name, None)
                    if opened is not None:
                        opened.target.close()
                    self.log(f"[{case.case_id}] board {lease.board.name} of pool {placement.name} is gone: {reason}")
                    continue
                raise BoardUnusable(reason) from None
            except BaseException:
                lease.release()
                raise
            board.pool = placement.pool
            return lease, board

    def lost(self, board: Board, row: dict[str, Any]) -> bool:
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
            self.log(f"[{row['case_id']}] board {board.name} {'left pool ' + board.pool if board.pool else 'is away'}: {reason}")
            return True

    def revive(self, board: Board, row: dict[str, Any], held: Any) -> Optional[str]:
        """A labgrid place with a power port whose board failed a case and does not answer
        (after its reconnect window; a pool's board: one attempt): power-cycled (`_power_cycle`).
        Returns the row's note when the board is back (the case is then run once more), else
        None (the board is handled as lost, with the reason in the run's log)."""
        if not _powered(board.config, held) or row.get("status") != STATUS_ERROR:
            return None
        try:
            board.target.ready(self.progress, quick=bool(board.pool))
            return None  # it answers: the case failed for another reason
        except TargetError as exc:
            return self._power_cycle(board.config, held, " ".join(str(exc).split()), row["case_id"])

    def _power_cycle(self, config: TargetConfig, held: Any, reason: str, case_id: str) -> Optional[str]:
        """Cycle the place's power through labgrid, wait for SSH (the lab's power_wait_s), open
        the board again and run the `targets check` probe (runner.facts). The note, or None."""
        started = time.time()
        self.log(f"[{case_id}] board {config.name} stopped answering; power-cycling labgrid place {held.place}: {reason}")
        self.progress(f"power-cycling {held.place} through labgrid")
        try:
            held.power_cycle()
            deadline = time.monotonic() + held.power_wait_s
            while True:
                try:
                    board = self.open(config)  # connects (and runs runner.facts) if it never answered before
                    board.target.ready(self.progress, quick=True)
                    board.target.facts()  # what `quantbench targets check` runs: the runner starts there again
                    break
                except TargetError as exc:
                    if time.monotonic() > deadline:
                        raise TargetError(f"SSH did not come back within {held.power_wait_s:g} s of the power cycle: {exc}") from None
                    time.sleep(1.0)
        except TargetError as exc:
            self.log(f"[{case_id}] power cycle of labgrid place {held.place} did not bring {config.name} back: "
                     f"{' '.join(str(exc).split())}")
            return None
        back = time.time() - started
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
        board.power_cycles.append({"at": at, "place": held.place, "case": case_id, "reason": reason,
                                   "back_after_s": round(back, 1)})
        self.log(f"[{case_id}] labgrid place {held.place} power-cycled; SSH and targets check ok after {back:.0f} s")
        return (f"power-cycled labgrid place {held.place} at {at} after the board stopped answering ({reason}); "
                f"SSH and targets check ok after {back:.0f} s; the case ran after it")

    def gone(self, board: Board) -> bool:
        """Whether a pool's board left the pool (it died measuring the fp32 baseline)."""
        return bool(board.pool) and self.leases.gone(board.name)

    def facts(self) -> dict[str, dict[str, Any]]:
        return {name: board_facts(board) for name, board in self.opened.items()}

    def save(self) -> None:
        """Record every opened board, with the outages this process saw, for run.json."""
        if self.fleet:
            for board in self.opened.values():
                self.shared.save_board(board)

    def close(self) -> None:
        for board in self.opened.values():
            board.target.close()
