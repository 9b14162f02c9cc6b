"""Where a runner process spends its wall time, step by step, and whether the evaluation
pass still fits the case's time budget (standard library only).

`Phases.mark(name)` records the seconds since the previous mark; the result's `phases_s`
then says how long the interpreter took to start, the imports, the model load, warmup,
the timed loop, the evaluation pass and writing the outputs took. benchmarks/case_overhead.py
adds them up to show what a case costs besides its measurement.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Dict, List, Optional

MIN_SKIPPED_SHARE = 0.1  # an evaluation pass projected under this share of the budget is never skipped


def process_age_s() -> Optional[float]:
    """Seconds since this process started (Linux /proc, 10 ms resolution); None elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the command name may contain spaces
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22: starttime in ticks
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class Phases:
    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}
        self._started = self._last = time.perf_counter()
        age = process_age_s()
        if age is not None:  # interpreter start up to the runner's first line
            self.seconds["startup"] = round(age, 3)

    def mark(self, name: str) -> float:
        """Record the seconds since the previous mark under `name` (added to, if repeated)."""
        now = time.perf_counter()
        spent = now - self._last
        self.seconds[name] = round(self.seconds.get(name, 0.0) + spent, 6)
        self._last = now
        return spent

    def elapsed_s(self) -> float:
        """Seconds since this object was made, plus the startup before it."""
        return time.perf_counter() - self._started + self.seconds.get("startup", 0.0)


def evaluation_over_budget(budget_s: Optional[float], elapsed_s: float, latencies_ms: List[float],
                           samples: int, batch_size: int) -> str:
    """Why the evaluation pass is skipped ('' when it fits): `samples` in calls of `batch_size`,
    each projected at the timed loop's median, after `elapsed_s` of the case, against `budget_s`.
    A pass projected under a tenth of the budget always runs: skipping it would save little."""
    if not budget_s or not latencies_ms:
        return ""
    calls = -(-samples // batch_size)
    per_call_s = statistics.median(latencies_ms) / 1000.0
    projected = calls * per_call_s
    if elapsed_s + projected <= budget_s or projected < MIN_SKIPPED_SHARE * budget_s:
        return ""
    return (f"the evaluation pass would take about {projected:.3g} s ({calls} calls of batch {batch_size} at "
            f"{per_call_s * 1000:.4g} ms, the timed median) after {elapsed_s:.3g} s of this case, over its time "
            f"budget of {budget_s:g} s")
