"""The pytest-xdist controller's progress display: which device runs what, now.

Workers' output is not shown, so each worker writes its phase to
results/<run-id>/fleet/status/<worker>.json (harness.fleet.shared.StatusProgress) and a thread of the
controller reads them twice a second. On a terminal it keeps a block of one line per worker
below pytest's progress line, redrawn in place and erased at the end; in a log (CI) it
writes one line per change.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from harness.fleet.shared import SharedRun


def status_line(worker: str, status: dict, now: float) -> str:
    if not status.get("case"):
        return f"[quantbench] {worker:<5} idle"
    elapsed = now - float(status.get("since") or now)
    return (f"[quantbench] {worker:<5} {status.get('board') or '-':<12} {status['case']} "
            f"{elapsed:5.1f}s {status.get('message') or ''}")


class FleetDisplay:
    def __init__(self, shared: SharedRun, write: Callable[[str], None], live: bool,
                 column: Callable[[], int] = lambda: 0, interval_s: float = 0.5) -> None:
        self.shared = shared
        self._write = write  # straight to the terminal
        self._live = live  # a terminal that understands cursor movement
        self._column = column  # pytest's current column, to return to
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="quantbench-fleet-display", daemon=True)
        self._seen: dict[str, tuple] = {}  # worker -> (case, board, message) last written (log mode)
        self._drawn = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop and erase the block (call before pytest writes its summary)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self._live and self._drawn:
            self._write("\x1b[J")
            self._drawn = False

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.render(self.shared.statuses())
            except Exception:  # a display never breaks a run
                continue

    def render(self, statuses: dict[str, dict]) -> None:
        now = time.time()
        if self._live:
            lines = [status_line(w, s, now) for w, s in sorted(statuses.items())]
            if not lines:
                return
            column = self._column()
            # erase what is below pytest's cursor, draw the block, go back to pytest's column
            self._write("\x1b[J\n" + "\n".join(lines) + f"\x1b[{len(lines)}A\r" + (f"\x1b[{column}C" if column else ""))
            self._drawn = True
            return
        changed = []
        for worker, status in sorted(statuses.items()):
            key = (status.get("case"), status.get("board"), status.get("message"))
            if status.get("case") and self._seen.get(worker) != key:
                changed.append(status_line(worker, status, now))
            self._seen[worker] = key
        if changed:
            self._write(("\n" if self._column() else "") + "\n".join(changed) + "\n")
