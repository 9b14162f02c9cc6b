"""A case's result, typed: `CaseResult` (identity + one section of each kind) and `Measured`
(a result as the store and the fleet's shared files keep it: its row, latencies, evaluation
outputs and power trace).

The pipeline's steps build the sections from the build's manifest and the runner's results
(several rounds merge: `Latency.merge`, `Power.merge`); the row, the plain dict the store,
the report and the history consume, is made once, by `CaseResult.to_row()`: every core column
of the registry in its order (harness/columns.py), then the extras the result carries, in the
registry's order.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

import numpy as np

from harness import columns
from harness.device_columns import Device
from harness.mixed_columns import Mixed
from harness.power_columns import Power
from harness.sections import Accuracy, Comparison, Fleet, Identity, Latency, Outcome, Provenance, SizeMemory


@dataclass(frozen=True)
class CaseResult:
    """One case on one board: a section of each kind (an unmeasured section has no values)."""

    identity: Identity
    outcome: Outcome = Outcome()
    latency: Latency = Latency()
    accuracy: Accuracy = Accuracy()
    size: SizeMemory = SizeMemory()
    power: Power = Power()
    device: Device = Device()
    mixed: Mixed = Mixed()
    provenance: Provenance = Provenance()
    comparison: Comparison = Comparison()
    fleet: Fleet = Fleet()

    @staticmethod
    def column_names() -> list[str]:
        """Every registered column: the core (always in a row), then the extras (when there is
        something to say; a metric's companion scores sit at columns.COMPANIONS)."""
        return columns.COLUMNS + columns.EXTRAS

    def sections(self) -> list:
        return [getattr(self, f.name) for f in fields(self)]

    def with_(self, **sections: Any) -> "CaseResult":
        return replace(self, **sections)

    def to_row(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for section in self.sections():  # a later section's column replaces an earlier one's (rounds_disagree)
            values.update(section.columns())
        row = {name: values.pop(name, None) for name in columns.COLUMNS}
        # throttling only a later round's probes could tell is placed where the rounds' columns are
        late = "round_n_runs" if self.power.throttling_from_rounds else None
        for name in sorted(values, key=lambda c: columns.extra_position(c, late if c == "throttle_reasons" else None)):
            row[name] = values[name]
        return row


@dataclass(frozen=True)
class Measured:
    """A case measured on one board: its row, latencies, evaluation outputs (kept for fp32,
    what the board's other cases are scored against) and power trace."""

    row: dict[str, Any]
    latencies: list[float]
    outputs: Optional[dict[str, np.ndarray]] = None
    trace: list = field(default_factory=list)  # [(seconds since the window opened, watts)]
    round_sizes: list = field(default_factory=list)  # latencies per round, in order (rounds > 1)
