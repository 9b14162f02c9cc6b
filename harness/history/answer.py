"""The end of a run: which mode to ship, per model and target, and the dashboard.

The answer comes from this run's own rows through `recommend()`, the function behind
`quantbench recommend` and the dashboard, so the three never disagree on the same rows
(`quantbench recommend` reads the target's whole history: each (framework, mode) as the
newest run that measured it left it). The dashboard is rebuilt from the results database
once the run is recorded there.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Optional, Union

import pandas as pd

from harness.history.gates import Gates
from harness.history.recommend import DEFAULT_MAX_DROP, recommend
from harness.limits import Limits


def answer_lines(rows: pd.DataFrame, limits: Union[Limits, float] = DEFAULT_MAX_DROP, gates: Gates = Gates(),
                 suite_limits: Optional[Mapping[str, Limits]] = None) -> list[str]:
    """One headline per (target, model, batch size) measured in `rows`, and per (model, batch)
    for the fleet when the run spans several devices. `limits`: the command line's (or an accuracy
    budget in points), over each suite's declared ones in `suite_limits`."""
    from harness.fleet.recommend import recommend_fleet

    if rows.empty or not (rows["status"] == "ok").any():
        return []
    recs = recommend(rows, limits, gates.noise, suite_limits)
    return [rec.headline() for rec in recs] + [fleet.headline() for fleet in recommend_fleet(recs)]


def write_dashboard(db, out_dir: Path, max_drop: float = DEFAULT_MAX_DROP,
                    gates: Gates = Gates()) -> tuple[Path, float]:
    """Rebuild the static dashboard from `db`; returns its index page and the seconds it took."""
    from harness.history.dashboard import build

    start = time.perf_counter()
    index = build(db, out_dir, max_drop, gates)
    return index, time.perf_counter() - start


def dashboard_dir(option: Optional[str], results_dir: Path) -> Optional[Path]:
    """--dashboard: a folder, 'off' (None), or the default <results-dir>/dashboard."""
    if option is not None and option.strip().lower() in ("off", "no", "none", ""):
        return None
    return Path(option) if option else Path(results_dir) / "dashboard"
