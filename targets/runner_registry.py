"""Which local runner processes are running, and for which run.

Every runner the local (and cuda) target starts is registered while it runs: a small JSON
file `<cache>/runners/<pid>.json` naming the runner's process group and the process that
owns it (the harness process), each with its start time, so a reused pid is never taken
for the original. A run that ends normally, fails or is interrupted (Ctrl-C, SIGTERM)
kills its runner and removes the record. A run killed with SIGKILL cannot; the next run
on this cache then finds the record, sees that the owner is gone, and kills the runner's
process group. A runner whose owner still runs (another live run) is never touched.

Start times come from /proc/<pid>/stat (Linux); where /proc is missing, liveness is
checked with kill(pid, 0) alone.
"""
from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

PROC = Path("/proc")


def start_ticks(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); None if
    there is no such process or no /proc."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    try:
        return int(text.rsplit(")", 1)[1].split()[19])  # the command name may contain spaces and ')'
    except (IndexError, ValueError):
        return None


def alive(pid: int, ticks: Optional[int]) -> bool:
    """Whether process `pid` exists and is the one that started at `ticks` (when known)."""
    if PROC.is_dir() and ticks is not None:
        now = start_ticks(pid)
        return now is not None and now == ticks
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid: int) -> list[int]:
    """Pids whose process group is `pgid` (Linux /proc; [] elsewhere)."""
    members = []
    if not PROC.is_dir():
        return members
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid):  # field 5: pgrp
            members.append(int(entry.name))
    return members


@dataclass(frozen=True)
class RunnerRecord:
    runner_pid: int  # also its process group (the runner starts a new session)
    runner_ticks: Optional[int]
    owner_pid: int  # the harness process that started it
    owner_ticks: Optional[int]
    case_id: str
    work_dir: str


class RunnerRegistry:
    def __init__(self, cache_dir: Path) -> None:
        self.dir = Path(cache_dir) / "runners"

    def add(self, runner_pid: int, case_id: str, work_dir: Path) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        owner = os.getpid()
        record = RunnerRecord(runner_pid, start_ticks(runner_pid), owner, start_ticks(owner), case_id, str(work_dir))
        path = self.dir / f"{runner_pid}.json"
        tmp = path.with_name(f".{path.name}.tmp{owner}")
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, path)
        return path

    def remove(self, runner_pid: int) -> None:
        (self.dir / f"{runner_pid}.json").unlink(missing_ok=True)

    def records(self) -> list[tuple[Path, RunnerRecord]]:
        found = []
        for path in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else ():
            try:
                found.append((path, RunnerRecord(**json.loads(path.read_text()))))
            except (OSError, ValueError, TypeError):
                continue  # half-written by a run that is adding it right now, or not ours
        return found

    def reap(self) -> list[str]:
        """Kill the runners whose owning run is gone; one line per runner ended (for the log)."""
        ended = []
        for path, record in self.records():
            if alive(record.owner_pid, record.owner_ticks):
                continue  # another live run's runner
            what = (f"runner pid {record.runner_pid} (case {record.case_id}) left behind by harness pid "
                    f"{record.owner_pid}, which is gone")
            if self._kill_group(record):
                ended.append(f"ended {what}")
            path.unlink(missing_ok=True)
        return ended

    @staticmethod
    def _kill_group(record: RunnerRecord) -> bool:
        pgid = record.runner_pid
        if start_ticks(pgid) is not None or not PROC.is_dir():
            if not alive(pgid, record.runner_ticks):
                return False  # that pid is another process now
        elif not group_members(pgid):
            return False  # the runner and its children are gone
        # The leader may be gone while children of the group live on: while any member
        # lives, the kernel never reuses the group's id, so the group is still ours.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return False
        return True
