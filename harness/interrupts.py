"""SIGTERM ends a run the way Ctrl-C does.

Python's default SIGTERM action kills the process on the spot: no `finally` runs, so the
runner of the case in flight (in its own process group, out of reach of signals sent to
ours) would outlive the run and the report would not be written. During a run, SIGTERM
raises `Terminated` (a KeyboardInterrupt) in the main thread instead: the target kills
the runner's process group, pytest stops, and the finished rows, the report and the
history are written as after Ctrl-C.
"""
from __future__ import annotations

import signal
import threading
from typing import Callable


class Terminated(KeyboardInterrupt):
    """The run received SIGTERM."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated(f"received signal {signal.Signals(signum).name}: stopping the case in flight")


def raise_on_sigterm() -> Callable[[], None]:
    """Install the handler (main thread only, and only over the default action); returns
    the function that puts the previous handler back."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return lambda: None
    signal.signal(signal.SIGTERM, _raise_terminated)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)
