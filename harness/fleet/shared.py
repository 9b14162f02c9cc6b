"""What the processes of one run share when it spans several devices or pytest-xdist workers.

Everything lives under results/<run-id>/fleet/, written atomically:
- boards/<board>.json: what each board reported when a process first opened it (run.json's
  `targets` is built from these at the end);
- baselines/<board>/<fp32 case id>.json + .npz: every fp32 measurement on a board, with its
  evaluation outputs, so any worker that later leases that board compares its case with the
  fp32 measured *on that board* instead of measuring it again;
- gone/<board>.txt: boards that stopped answering, with the reason (targets/fleet.py);
- status/<worker>.json: what each worker is doing now, for the controller's progress display.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from harness.locks import file_lock
from harness.result import Measured
from targets import Target, TargetConfig, TargetInfo


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


@dataclass
class Board:
    """A target opened by this process, with what rows and runner jobs need from it."""

    config: TargetConfig
    target: Target
    info: TargetInfo
    threads: int
    pool: Optional[str] = None  # the pool it was leased from, for this case
    power_cycles: list = field(default_factory=list)  # each power cycle through labgrid: when, why, how long SSH took

    @property
    def name(self) -> str:
        return self.config.name


def board_facts(board: Board) -> dict[str, Any]:
    """A board as run.json's `targets` records it (`outages`: when it stopped answering, ssh)."""
    info = board.info
    return {"name": info.name, "kind": info.kind, "profile": info.profile, "threads": board.threads, "arch": info.arch,
            "device": info.device, "host": info.host, "facts": dict(info.facts), "settings": dict(board.config.settings),
            "outages": board.target.outage_report(), **({"power_cycles": board.power_cycles} if board.power_cycles else {})}


class HostExclusive:
    """A target that runs on this host (local, cuda): each runner job holds the host lock
    exclusively, and artifact builds hold it shared, so a case on the host CPU is never timed
    while another worker quantizes or measures here. Everything else passes through."""

    def __init__(self, target: Target, lock_path: Path) -> None:
        self._target = target
        self._lock_path = lock_path

    def run(self, job, progress: Callable[[str], None] = lambda m: None):
        with file_lock(self._lock_path):
            return self._target.run(job, progress)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class SharedRun:
    """results/<run-id>/fleet/: the files the processes of one run share."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir) / "fleet"

    # -- boards ---------------------------------------------------------------------------
    def save_board(self, board: Board) -> None:
        """Each process that opened the board saves it (again when it closes: its outages);
        outages other processes saw stay."""
        path = self.dir / "boards" / f"{board.name}.json"
        with file_lock(path.with_name(f".{board.name}.lock")):
            facts = board_facts(board)
            seen = (read_json(path) or {}).get("outages") or []
            facts["outages"] = seen + [o for o in facts["outages"] if o not in seen]
            write_json(path, facts)

    def boards(self) -> dict[str, dict[str, Any]]:
        found = {}
        for path in sorted((self.dir / "boards").glob("*.json")):
            data = read_json(path)
            if data:
                found[data["name"]] = data
        return found

    # -- fp32 measurements per board ----------------------------------------------------------
    def _baseline_path(self, board: str, case_id: str) -> Path:
        return self.dir / "baselines" / board / f"{case_id}.json"

    def has_baseline(self, board: str, case_id: str) -> bool:
        return self._baseline_path(board, case_id).is_file()

    def baseline(self, board: str, case_id: str) -> Optional[Measured]:
        path = self._baseline_path(board, case_id)
        record = read_json(path)
        if record is None:
            return None
        outputs = None
        if path.with_suffix(".npz").is_file():
            with np.load(path.with_suffix(".npz"), allow_pickle=False) as npz:
                outputs = {k: npz[k] for k in npz.files}
        return Measured(record["row"], record["latencies_ms"], outputs, record.get("power_trace") or [],
                        record.get("round_sizes") or [])

    def save_baseline(self, board: str, measured: Measured) -> None:
        path = self._baseline_path(board, measured.row["case_id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        if measured.outputs is not None:  # before the .json: a reader that sees the row finds its outputs
            tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
            np.savez(tmp, **measured.outputs)
            os.replace(tmp, path.with_suffix(".npz"))
        write_json(path, {"row": measured.row, "latencies_ms": measured.latencies, "power_trace": measured.trace,
                          "round_sizes": measured.round_sizes})

    # -- what each worker does now ------------------------------------------------------------
    def set_status(self, worker: str, status: Mapping[str, Any]) -> None:
        write_json(self.dir / "status" / f"{worker}.json", dict(status))

    def statuses(self) -> dict[str, dict[str, Any]]:
        found = {}
        for path in sorted((self.dir / "status").glob("*.json")):
            try:
                data = read_json(path)
            except ValueError:  # replaced while being read: the next poll sees it
                continue
            if data:
                found[path.stem] = data
        return found


class StatusProgress:
    """The Progress interface for a pytest-xdist worker: its output is not shown, so each
    phase goes to fleet/status/<worker>.json, which the controller's display reads."""

    def __init__(self, shared: SharedRun, worker: str) -> None:
        self.shared = shared
        self.worker = worker
        self._case: Optional[str] = None
        self._started = 0.0
        self.board: Optional[str] = None  # set by the session while it holds a lease

    def start(self, case_id: str) -> None:
        self._case, self._started = case_id, time.time()
        self("starting")

    def __call__(self, message: str) -> None:
        self.shared.set_status(self.worker, {"case": self._case, "board": self.board, "message": message,
                                             "since": self._started, "at": time.time()})

    def finish(self) -> None:
        self._case = None
        self.shared.set_status(self.worker, {"case": None, "board": None, "message": "idle", "since": time.time(),
                                             "at": time.time()})
