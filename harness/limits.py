"""The user's limits: what a deployment can afford, and what to minimise among the modes that fit.

    Suite(..., limits=Limits(max_p99_ms=3.0, max_size_ratio=0.5))     # the suite's defaults
    quantbench recommend --max-p99-ms 3 --max-size-ratio 0.5 --objective size
    pytest suites/ --qb-max-p99-ms 3 ...                               # the answer at the end of a run

A field left None is not a limit (the accuracy budget then is DEFAULT_MAX_DROP points, the
objective p50). Command-line flags override a suite's defaults field by field (`override`).
`broken(row)` says which limits a result row breaks, each as "p99 4.1 ms > 3 ms"; a row with no
reading for a limited quantity (no energy sensor under --max-energy-mj) breaks it with "no ...
reading": under a limit, a figure that was not measured is never taken as fitting. Sizes and
memory are in MB of 2**20 bytes, as the peak_rss_mb column.

The accuracy budget is judged by harness/history/candidate.py (points in the metric's direction
against the framework's fp32); this module only carries it. No history imports here: the suite
and the runner's host side import it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping, Optional

DEFAULT_MAX_DROP = 1.0  # accuracy points vs fp32
MB = float(2 ** 20)  # bytes in the MB of --max-size-mb and of peak_rss_mb

# objective -> (the row column it minimises, how the answer names it)
OBJECTIVES: dict[str, tuple[str, str]] = {
    "p50": ("latency_p50_ms", "p50 latency"),
    "p99": ("latency_p99_ms", "p99 latency"),
    "size": ("size_bytes", "artifact size"),
    "energy": ("energy_mj_per_inf", "energy per inference"),
}
DEFAULT_OBJECTIVE = "p50"


def _size_mb(row: Mapping[str, Any]) -> Optional[float]:
    size = _number(row.get("size_bytes"))
    return None if size is None else size / MB


def _size_ratio(row: Mapping[str, Any]) -> Optional[float]:
    ratio = _number(row.get("size_ratio"))
    return 1.0 if ratio is None and row.get("mode") == "fp32" and _number(row.get("size_bytes")) else ratio


# field -> (short name, unit, how to read the row's figure, what is missing when it has none)
CHECKS: dict[str, tuple[str, str, Any, str]] = {
    "max_p99_ms": ("p99", " ms", lambda r: _number(r.get("latency_p99_ms")), "no p99 latency"),
    "max_memory_mb": ("peak memory", " MB", lambda r: _number(r.get("peak_rss_mb")), "no peak memory reading"),
    "max_size_mb": ("size", " MB", _size_mb, "no artifact size"),
    "max_size_ratio": ("size", "x fp32", _size_ratio, "no size ratio vs fp32"),
    "max_energy_mj": ("energy", " mJ/inference", lambda r: _number(r.get("energy_mj_per_inf")), "no energy reading"),
}


def _number(value: Any) -> Optional[float]:
    """A float or None (NaN, missing, booleans, text): as harness.values.number, without numpy."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if value != value else value


def _figure(value: float, unit: str) -> str:
    return f"{value:.3g}{unit}" if unit != "x fp32" else f"{value:.2f}x fp32"


@dataclass(frozen=True)
class Limits:
    """What a deployment can afford (None: no limit) and what to minimise among what fits."""

    max_accuracy_drop: Optional[float] = None  # accuracy points lost vs fp32 (None: DEFAULT_MAX_DROP)
    max_p99_ms: Optional[float] = None  # p99 latency of one inference (of one batch), ms
    max_memory_mb: Optional[float] = None  # peak RSS of the runner process (the peak_rss_mb column), MB
    max_size_mb: Optional[float] = None  # artifact size on disk, MB (2**20 bytes)
    max_size_ratio: Optional[float] = None  # artifact size / its framework's fp32 artifact size
    max_energy_mj: Optional[float] = None  # energy per inference, mJ; a row with no energy reading is out
    objective: Optional[str] = None  # what to minimise: p50 (None), p99, size or energy

    def validate(self) -> Optional[str]:
        """What is wrong with these limits, or None."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "objective":
                if value is not None and value not in OBJECTIVES:
                    return f"objective {value!r} is not one of {', '.join(OBJECTIVES)}"
            elif value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                        or value != value or value < 0):
                return f"limit {f.name} must be a non-negative number (or None: no limit), not {value!r}"
        return None

    def override(self, other: Optional["Limits"]) -> "Limits":
        """These limits with every field `other` sets (not None) taken from it: a suite's defaults
        overridden by the command line."""
        if other is None:
            return self
        return replace(self, **{k: v for k, v in asdict(other).items() if v is not None})

    @property
    def accuracy_drop(self) -> float:
        return DEFAULT_MAX_DROP if self.max_accuracy_drop is None else float(self.max_accuracy_drop)

    @property
    def goal(self) -> str:
        """The objective, its default filled in."""
        return self.objective or DEFAULT_OBJECTIVE

    @property
    def column(self) -> str:
        """The row column the objective minimises."""
        return OBJECTIVES[self.goal][0]

    def broken(self, row: Mapping[str, Any]) -> list[tuple[str, float, str]]:
        """(field, relative excess, text) for each limit other than accuracy that `row` breaks:
        'p99 4.1 ms > 3 ms', or 'no energy reading (limit 5 mJ/inference)' (excess inf)."""
        out = []
        for name, (short, unit, read, missing) in CHECKS.items():
            limit = getattr(self, name)
            if limit is None:
                continue
            value = read(row)
            if value is None:
                why = str(row.get("power_source") or "") if name == "max_energy_mj" else ""
                extra = f": {why.removeprefix('none:').split(' (')[0].strip()}" if why.startswith("none:") else ""
                out.append((name, float("inf"), f"{missing}{extra} (limit {short} {_figure(limit, unit)})"))
            elif value > limit * (1 + 1e-9):
                excess = value / limit - 1 if limit > 0 else float("inf")
                out.append((name, excess, f"{short} {_figure(value, unit)} > {_figure(limit, unit)}"))
        return out

    def missing_objective(self, row: Mapping[str, Any]) -> Optional[str]:
        """Why `row` cannot be ranked by the objective (it has no figure for it), or None."""
        value = OBJECTIVES[self.goal][0]
        if _number(row.get(value)) is not None:
            return None
        return f"no {OBJECTIVES[self.goal][1]} figure (the objective is {self.goal})"

    def describe(self, accuracy: bool = True) -> str:
        """'within 1 accuracy point, p99 <= 3 ms, size <= 0.50x fp32' (the limits applied)."""
        parts = [f"within {self.accuracy_drop:g} accuracy points"] if accuracy else []
        for name, (short, unit, _, _) in CHECKS.items():
            limit = getattr(self, name)
            if limit is not None:
                parts.append(f"{short} <= {_figure(limit, unit)}")
        return ", ".join(parts)

    def as_dict(self, resolved: bool = False) -> dict[str, Any]:
        """The fields as a JSON object; `resolved`: the defaults filled in (the limits applied)."""
        data = asdict(self)
        if resolved:
            data.update(max_accuracy_drop=self.accuracy_drop, objective=self.goal)
        return data

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "Limits":
        """From as_dict()'s object (run.json); unknown keys are ignored (a newer writer's)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


# The command-line spelling of each field (quantbench recommend; the pytest plugin adds --qb-).
FLAGS: dict[str, tuple[str, Any, str]] = {
    "max_p99_ms": ("--max-p99-ms", float, "p99 latency limit in ms; a mode over it is out"),
    "max_memory_mb": ("--max-memory-mb", float, "peak memory (the runner's peak RSS) limit in MB"),
    "max_size_mb": ("--max-size-mb", float, "artifact size limit in MB (2**20 bytes)"),
    "max_size_ratio": ("--max-size-ratio", float, "artifact size limit as a fraction of its framework's fp32 artifact"),
    "max_energy_mj": ("--max-energy-mj", float,
                      "energy per inference limit in mJ; a mode with no energy reading is out"),
    "objective": ("--objective", str, f"what to minimise among the modes that fit: {', '.join(OBJECTIVES)} "
                                      f"(default {DEFAULT_OBJECTIVE})"),
}


def from_options(values: Mapping[str, Any]) -> Limits:
    """Limits from parsed options keyed by field name (None: not given); max_accuracy_drop included."""
    return Limits(**{k: values.get(k) for k in ("max_accuracy_drop", *FLAGS)})


__all__ = ["CHECKS", "DEFAULT_MAX_DROP", "DEFAULT_OBJECTIVE", "FLAGS", "Limits", "MB", "OBJECTIVES", "from_options"]
