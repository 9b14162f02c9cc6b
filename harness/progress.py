"""One live line per case saying which phase it is in.

On a terminal the line is rewritten in place; in a log (CI) each phase is one line.
"""
from __future__ import annotations

import time
from typing import Callable, Optional


class Progress:
    def __init__(self, write: Callable[[str], None], live: bool) -> None:
        self._write = write
        self._live = live
        self._case: Optional[str] = None
        self._started = 0.0

    def start(self, case_id: str) -> None:
        self._case, self._started = case_id, time.monotonic()

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self._started
        line = f"[quantbench] {self._case or ''} {elapsed:5.1f}s {message}"
        if self._live:
            self._write("\r\x1b[K" + line)
        else:
            self._write(line + "\n")

    def finish(self) -> None:
        if self._live and self._case is not None:
            self._write("\r\x1b[K")
        self._case = None


def silent() -> Progress:
    return Progress(lambda text: None, live=False)
