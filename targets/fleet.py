"""Several devices in one run: placements (what `--target` names) and board leases.

`--target=a,b,pool:pi5` names three placements: the targets `a` and `b` (every case runs on
each) and the pool `pi5` (every case runs once, on whichever of its boards is free). A bare
pool name works too; `pool:` says so explicitly (and fails if it is not a pool).

A lease is an exclusive `flock` on `results/<run-id>/fleet/leases/<board>.lock`: across the
pytest-xdist workers of a run, at most one case measures on a board at a time (two would
disturb each other's timing). The kernel drops the lock when its process dies. A
pool's board found unusable during a run is marked gone in the run's directory
(`fleet/gone/<board>.txt`, with the reason): leases skip it, so the pool's remaining work goes
to its other boards. A named target is never skipped: its own reconnect rules decide (ssh:
the reconnect window, then one quick connect per case, failing at once while it is away).

Boards of a labgrid lab (`--target=lab:...`, or an inventory entry of kind "labgrid") are the
places the coordinator offers (targets/labgrid_place.py): a lease holds the run's lock file and
the place at the coordinator, so separate runs exclude each other too.

This is the targets' side of a fleet (where cases run and who holds a board), so it lives in
targets/ with the adapters. The harness side, what the run's processes share, the xdist
controller's display and the fleet's recommendation, is the harness/fleet/ package.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from harness.locks import FileLock
from targets.base import TargetConfig, TargetError
from targets.inventory import Inventory

POOL_PREFIX = "pool:"


@dataclass(frozen=True)
class Placement:
    """One entry of --target: a single target, or a pool of identical boards."""

    name: str  # the `target` column of its rows: the target's or the pool's name
    boards: tuple[TargetConfig, ...]  # the one target, or the pool's members in inventory order
    pool: Optional[str] = None  # the pool's name (the `pool` column), None for a single target
    lab: Any = None  # targets.labgrid_place.LabSpec: the boards are labgrid places, held at its coordinator too

    @property
    def label(self) -> str:
        return f"{POOL_PREFIX}{self.name}" if self.pool and not self.lab else self.name


def lab_placement(name: str, spec) -> Placement:
    """The places a labgrid spec matches, as a placement (a pool unless it names one place); a
    matching place that cannot be used (no NetworkService) is left out with a line on stderr."""
    import sys

    from targets.labgrid_place import boards

    found, left_out = boards(name, spec)
    for note in left_out:
        print(f"quantbench: {name}: {note}; left out", file=sys.stderr)
    return Placement(name, tuple(found), pool=None if spec.place else name, lab=spec)


def parse_placements(spec: str, inventory: Inventory) -> list[Placement]:
    """`a,b,pool:pi5` -> placements, in the order given; a TargetError says what is wrong."""
    entries = [e.strip() for e in str(spec).split(",")]
    if not spec or not all(entries):
        raise TargetError(f"--target {spec!r}: name targets or pools separated by commas, e.g. --target=local or "
                          f"--target=pi5-a,jetson or --target=pool:pi5")
    placements: list[Placement] = []
    for entry in entries:
        name = entry[len(POOL_PREFIX):] if entry.startswith(POOL_PREFIX) else entry
        if entry.startswith("lab:"):
            from targets.labgrid_place import parse_spelling

            placement = lab_placement(entry, parse_spelling(entry, inventory.lab_defaults))
        elif name in inventory.labs:
            placement = lab_placement(name, inventory.labs[name])
        elif name in inventory.pools:
            pool = inventory.pools[name]
            placement = Placement(name, tuple(inventory.targets[m] for m in pool.targets), pool=name)
        elif entry.startswith(POOL_PREFIX):
            raise TargetError(f"unknown pool {name!r}; pools: {', '.join(sorted(inventory.pools)) or 'none declared'} "
                              f"(declare one in the inventory: [pools.{name}] targets = [...])")
        elif name in inventory.targets:
            placement = Placement(name, (inventory.targets[name],))
        else:
            pools = ", ".join(f"{POOL_PREFIX}{p}" for p in sorted(inventory.pools))
            raise TargetError(f"unknown target {name!r}; known targets: {', '.join(sorted(inventory.targets))}"
                              + (f"; pools: {pools}" if pools else ""))
        if placement.name in {p.name for p in placements}:
            raise TargetError(f"--target {spec!r} names {entry!r} twice")
        placements.append(placement)
    return placements


class AllBoardsGone(Exception):
    """Every board of a pool is gone; the message has each board's reason."""


class BoardUnusable(Exception):
    """A named target cannot take the case now (it does not answer); the message says why."""


@dataclass
class Lease:
    """A board held exclusively until release()."""

    board: TargetConfig
    waited_s: float  # how long acquiring took (all boards busy)
    _lock: Optional[FileLock] = None  # None: nothing to share the board with (one target, one process)
    held: Any = None  # targets.labgrid_place.Held: the labgrid place, acquired at the coordinator
    power_note: Optional[str] = None  # the place was power-cycled through labgrid before the case could run
    held_from: float = field(default_factory=time.time)  # when it was granted (made once the lock and place are held)

    def release(self) -> None:
        try:
            if self.held is not None:
                held, self.held = self.held, None
                held.release()
        finally:
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class BoardLeases:
    """Leases on the boards of one run (lock files under lock_dir, gone marks under gone_dir)."""

    def __init__(self, lock_dir: Path, gone_dir: Path, poll_s: float = 0.02) -> None:
        self.lock_dir = Path(lock_dir)
        self.gone_dir = Path(gone_dir)
        self.poll_s = poll_s

    def gone(self, board: str) -> Optional[str]:
        """Why the board is gone in this run, or None while it is usable."""
        path = self.gone_dir / f"{board}.txt"
        try:
            return path.read_text().strip() or "gone"
        except FileNotFoundError:
            return None

    def mark_gone(self, board: str, reason: str) -> None:
        self.gone_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.gone_dir / f".{board}.tmp"
        tmp.write_text(reason + "\n")
        tmp.replace(self.gone_dir / f"{board}.txt")

    def gone_reasons(self, placement: Placement) -> str:
        return "; ".join(f"{b.name}: {self.gone(b.name)}" for b in placement.boards if self.gone(b.name))

    def acquire(self, placement: Placement, prefer: Sequence[str] = (),
                waiting: Callable[[float, str], None] = lambda seconds, why: None,
                log: Callable[[str], None] = lambda line: None) -> Lease:
        """The first free, usable board of the placement (boards in `prefer` first); waits
        while all are busy. Raises AllBoardsGone when none is usable any more; for labgrid
        places, TargetError (LabBusy) when others hold them all past the wait limit."""
        if placement.lab is not None:
            return self._acquire_place(placement, prefer, waiting, log)
        order = sorted(placement.boards, key=lambda b: (b.name not in prefer, placement.boards.index(b)))
        started = time.monotonic()
        next_note = started + 1.0
        while True:
            usable = [b for b in order if not self.gone(b.name)]
            if not usable:
                what = f"pool {placement.name}" if placement.pool else f"target {placement.name}"
                raise AllBoardsGone(f"every board of {what} is gone ({self.gone_reasons(placement)})"
                                    if placement.pool else f"{what} is gone: {self.gone(placement.name)}")
            for board in usable:
                lock = FileLock(self.lock_dir / f"{board.name}.lock")
                if lock.acquire(block=False):
                    if self.gone(board.name):  # marked while we were locking it
                        lock.release()
                        continue
                    return Lease(board, time.monotonic() - started, lock)
            now = time.monotonic()
            if now >= next_note:
                waiting(now - started, "")
                next_note = now + 1.0
            time.sleep(self.poll_s)

    def _acquire_place(self, placement: Placement, prefer: Sequence[str], waiting, log) -> Lease:
        from targets import labgrid_place

        if not [b for b in placement.boards if not self.gone(b.name)]:
            raise AllBoardsGone(f"every place of {placement.name} is gone ({self.gone_reasons(placement)})")

        def board_lock(board: TargetConfig) -> Optional[FileLock]:
            lock = FileLock(self.lock_dir / f"{board.name}.lock")
            return lock if lock.acquire(block=False) else None

        started = time.monotonic()
        board, lock, held = labgrid_place.acquire(placement, board_lock, prefer, waiting, log, self.gone)
        return Lease(board, time.monotonic() - started, lock, held)

