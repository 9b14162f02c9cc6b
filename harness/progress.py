"""One live line per case saying which phase it is in.

On a terminal the line sits below pytest's progress line and is rewritten in place, then
erased, and the cursor goes back to where pytest left it. In a log (CI) each phase is
one line.
"""
from __future__ import annotations

import time
from typing import Callable, Optional


class Progress:
    def __init__(self, write: Callable[[str], None], live: bool, column: Callable[[], int] = lambda: 0) -> None:
        self._write = write  # writes text to the terminal, uncaptured
        self._live = live  # True on a terminal that understands ANSI cursor movement
        self._column = column  # pytest's current column, to return to after erasing the live line
        self._case: Optional[str] = None
        self._started = 0.0
        self._opened = False  # a progress line is below pytest's line

    def start(self, case_id: str) -> None:
        self._case, self._started = case_id, time.monotonic()

    def __call__(self, message: str) -> None:
        line = f"[quantbench] {self._case or ''} {time.monotonic() - self._started:5.1f}s {message}"
        if not self._opened:
            self._write("\n")
            self._opened = True
        self._write(("\r\x1b[K" + line) if self._live else (line + "\n"))

    def echo(self, line: str) -> None:
        """A finished line of another process's progress (harness/build_ahead.py's second builder),
        shown as it is in a log; on a terminal only this process's live line is shown."""
        if not self._live:
            if not self._opened:
                self._write("\n")
                self._opened = True
            self._write(line.rstrip("\n") + "\n")

    def finish(self) -> None:
        if self._opened and self._live:
            # erase the live line, go up to pytest's line and back to its column
            self._write(f"\r\x1b[K\x1b[1A\x1b[{self._column() + 1}G")
        self._opened = False
        self._case = None


def silent() -> Progress:
    return Progress(lambda text: None, live=False)
