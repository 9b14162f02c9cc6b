"""The regression thresholds. A suite may carry its own (`Suite(gates=Gates(latency=0.2))`);
command-line flags override single fields for one run."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class Gates:
    """When a case counts as regressed (or improved) against its baseline row."""

    latency: float = 0.10  # relative p50 change that counts (0.10 = 10%), when also statistically real
    alpha: float = 0.01  # Mann-Whitney U significance level; the CI fallback uses (1 - alpha) intervals
    min_samples: int = 20  # fewer raw latencies than this on a side: compare confidence intervals instead
    accuracy_points: float = 0.5  # accuracy drop that counts, in points (0.01 of a fraction)
    size: float = 0.10  # relative artifact size change that counts
    memory: float = 0.10  # relative peak RSS change that counts
    energy: float = 0.10  # relative energy-per-inference change that counts
    noise: float = 0.10  # IQR/median at or above which a case's latency counts as noisy
    noise_k: float = 1.0  # a noisy latency's threshold widens by noise_k x the larger IQR/median of the two sides; energy's by noise_k x its readings' spread

    def validate(self) -> Optional[str]:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                return f"gates.{f.name} must be a non-negative number, not {value!r}"
        if not 0 < self.alpha < 1:
            return f"gates.alpha must be in (0, 1), not {self.alpha!r}"
        return None

    def override(self, values: Mapping[str, Any]) -> "Gates":
        """These gates with the fields given (None values are ignored)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


DEFAULT_GATES = Gates()
