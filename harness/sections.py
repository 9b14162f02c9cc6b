"""The sections of a case's result: each a frozen dataclass whose fields are its row columns.

A section knows its columns (`CORE`: in every row, in the comparison table's order; `EXTRA`:
written only when there is something to say) and how to aggregate rounds where that applies
(`merge(rounds)`, like torch.utils.benchmark's Measurement.merge). An extra column's field is
`UNSET` when the row does not carry it (a present column may still be None, e.g.
`host_device_copies_timed` on a CPU). `harness.columns` builds the one column registry from
these; `harness.result.CaseResult` holds one of each and makes the row (`to_row`).

Power (`harness.power_columns.Power`), device (`harness.device_columns.Device`) and
mixed-precision (`harness.mixed_columns.Mixed`) sections live beside the helpers that read
their facts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np

from harness.rounds import round_columns
from harness.stats import latency_stats


class _Unset:
    """A column the row does not carry."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self):
        return (_Unset, ())


UNSET: Any = _Unset()


class Section:
    """Columns as fields: CORE ones always (None when unknown), EXTRA ones unless UNSET."""

    NAME: ClassVar[str] = ""
    CORE: ClassVar[tuple[str, ...]] = ()
    EXTRA: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def column_names(cls) -> tuple[str, ...]:
        return cls.CORE + cls.EXTRA

    @classmethod
    def merge(cls, rounds: Sequence["Section"]) -> "Section":
        """Several rounds (runner processes) of one case: by default the first round's."""
        return rounds[0]

    def columns(self) -> dict[str, Any]:
        out = {name: (None if getattr(self, name) is UNSET else getattr(self, name)) for name in self.CORE}
        out.update((name, getattr(self, name)) for name in self.EXTRA if getattr(self, name) is not UNSET)
        return out


@dataclass(frozen=True)
class Identity(Section):
    """What the case is and where it ran: known before anything is measured, except `device`,
    `threads` and `recipe`, which the runner and the built artifact refine."""

    NAME = "identity"
    CORE = ("run_id", "case_id", "started_at", "suite", "model", "framework", "mode", "recipe", "target",
            "target_kind", "profile", "device", "batch_size", "threads")

    run_id: Any = None
    case_id: Any = None
    started_at: Any = None
    suite: Any = None
    model: Any = None
    framework: Any = None
    mode: Any = None
    recipe: Any = None
    target: Any = None  # what --target named (a target or a pool); the board is the fleet section's
    target_kind: Any = None
    profile: Any = None
    device: Any = None
    batch_size: Any = None
    threads: Any = None


@dataclass(frozen=True)
class Outcome(Section):
    NAME = "outcome"
    CORE = ("status", "reason")

    status: Any = None
    reason: Any = None


@dataclass(frozen=True)
class Latency(Section):
    """The timed loop: statistics over every latency (every round's, pooled), load and first
    call (the first round's), and the rounds' own p50s when there were several."""

    NAME = "latency"
    CORE = ("init_ms", "first_ms", "latency_mean_ms", "latency_std_ms", "latency_min_ms", "latency_p50_ms",
            "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms", "n_runs", "duration_s",
            "iqr_over_median", "noisy", "valid", "throughput_ips")
    EXTRA = ("cold_start_ms", "batch_note", "rounds", "round_p50_ms", "rounds_disagree", "round_n_runs")

    init_ms: Any = None  # loading the artifact into its runtime (the runtime already imported)
    first_ms: Any = None  # the first call, right after the load (on-target compilation lands here)
    latency_mean_ms: Any = None
    latency_std_ms: Any = None
    latency_min_ms: Any = None
    latency_p50_ms: Any = None
    latency_p90_ms: Any = None
    latency_p95_ms: Any = None
    latency_p99_ms: Any = None
    latency_max_ms: Any = None
    n_runs: Any = None
    duration_s: Any = None
    iqr_over_median: Any = None
    noisy: Any = None
    valid: Any = None
    throughput_ips: Any = None
    # a fresh process's time to its first result: importing the runtime + init_ms + first_ms
    cold_start_ms: Any = UNSET
    batch_note: Any = UNSET  # the data could not fill one batch: it was repeated
    rounds: Any = UNSET
    round_p50_ms: Any = UNSET
    rounds_disagree: Any = UNSET
    round_n_runs: Any = UNSET
    latencies: tuple = field(default=(), repr=False, compare=False)  # every latency, round after round (ms)
    batch_size: int = field(default=1, repr=False)

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> "Latency":
        """One runner process's timed loop (its result.json)."""
        batch = int(result["batch_size"])
        imported = (result.get("phases_s") or {}).get("runtime_import")
        cold = (1000.0 * imported + result["init_ms"] + result["first_ms"]) if imported is not None else UNSET
        return cls(**latency_stats(result["latencies_ms"], batch), init_ms=result["init_ms"],
                   first_ms=result["first_ms"], cold_start_ms=cold, n_runs=result["n_runs"], duration_s=result["duration_s"],
                   valid=bool(result["valid"]), batch_note=result.get("timed_batch_note") or UNSET,
                   latencies=tuple(result["latencies_ms"]), batch_size=batch)

    @classmethod
    def merge(cls, rounds: Sequence["Latency"]) -> "Latency":
        """Several rounds (runner processes) of one case: statistics over every round's
        latencies, the rounds' own p50s beside them; load and first call stay the first round's."""
        first = rounds[0]
        if len(rounds) == 1:
            return first
        latencies = [lat for done in rounds for lat in done.latencies]
        own = round_columns([float(np.median(done.latencies)) for done in rounds])
        return replace(first, **latency_stats(latencies, first.batch_size), n_runs=len(latencies),
                       duration_s=sum(done.duration_s for done in rounds), valid=all(bool(done.valid) for done in rounds),
                       **own, round_n_runs=" ".join(str(len(done.latencies)) for done in rounds),
                       latencies=tuple(latencies))

    @property
    def round_sizes(self) -> list[int]:
        return [int(n) for n in self.round_n_runs.split()] if self.round_n_runs else [len(self.latencies)]


@dataclass(frozen=True)
class Accuracy(Section):
    """The metric scored on the host; `companions`: the metric's companion scores (columns
    named after them, e.g. top5, nn_agreement); the budget verdict (harness/budget.py)."""

    NAME = "accuracy"
    CORE = ("metric", "higher_is_better", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "eval_samples",
            "accuracy_delta", "accuracy_budget", "within_budget")

    metric: Any = None
    higher_is_better: Any = None
    accuracy: Any = None
    accuracy_ci_low: Any = None
    accuracy_ci_high: Any = None
    eval_samples: Any = None  # 0: the case's time budget left no time for the evaluation pass
    accuracy_delta: Any = None
    accuracy_budget: Any = None
    within_budget: Any = None
    companions: tuple = ()  # ((name, score), ...)

    def columns(self) -> dict[str, Any]:
        out = super().columns()
        out.update(self.companions)
        return out


@dataclass(frozen=True)
class SizeMemory(Section):
    """The artifact's size (and its ratio to fp32's, with a note when an int8 file is not
    smaller), the runner's peak RSS, and GPU memory (NVML; the framework's allocator peak)."""

    NAME = "size_memory"
    CORE = ("size_bytes", "size_ratio", "peak_rss_mb", "gpu_mem_mb")
    EXTRA = ("gpu_mem_source", "gpu_mem_peak_allocated_mb", "size_note")

    size_bytes: Any = None
    size_ratio: Any = None
    peak_rss_mb: Any = None
    gpu_mem_mb: Any = None
    gpu_mem_source: Any = UNSET  # how gpu_mem_mb was measured, or "none: why"
    gpu_mem_peak_allocated_mb: Any = UNSET
    size_note: Any = UNSET


@dataclass(frozen=True)
class Comparison(Section):
    """Against the fp32 baseline of the same board: the speedup (over paired rounds, with its
    interval, when measured in rounds), which baseline, and its execution note."""

    NAME = "comparison"
    CORE = ("speedup",)
    EXTRA = ("speedup_ci_low", "speedup_ci_high", "speedup_ci_level", "speedup_rounds", "baseline_round_p50_ms",
             "baseline_case", "baseline_recipe", "execution_note", "baseline_throttled", "baseline_valid",
             "baseline_timing_note", "race")

    speedup: Any = None
    speedup_ci_low: Any = UNSET
    speedup_ci_high: Any = UNSET
    speedup_ci_level: Any = UNSET  # the interval's true confidence (exact order statistics: 3 rounds 0.75)
    speedup_rounds: Any = UNSET
    baseline_round_p50_ms: Any = UNSET
    baseline_case: Any = UNSET
    baseline_recipe: Any = UNSET
    execution_note: Any = UNSET
    baseline_throttled: Any = UNSET  # the fp32 side of the speedup (its paired rounds, or its row) ran throttled
    baseline_valid: Any = UNSET  # ... met its timing minimums (False: stopped at its time cap)
    baseline_timing_note: Any = UNSET  # which baseline round or row, and why
    race: Any = UNSET  # the race of the finalists this case was one of (harness/race.py: JSON, written after the run's cases)
    paired_disagree: Any = UNSET  # the paired rounds' verdict: replaces the latency section's rounds_disagree

    def columns(self) -> dict[str, Any]:
        out = super().columns()
        if self.paired_disagree is not UNSET:
            out["rounds_disagree"] = self.paired_disagree
        return out

    @classmethod
    def paired(cls, speedup: Mapping[str, Any]) -> dict[str, Any]:
        """Fields from `harness.rounds.paired_speedup`'s columns."""
        fields_ = dict(speedup)
        fields_["paired_disagree"] = fields_.pop("rounds_disagree")
        return fields_


@dataclass(frozen=True)
class Provenance(Section):
    """What produced the figures: the runtime and host that ran it, the artifact it ran (and
    which ops compute in int8 there)."""

    NAME = "provenance"
    CORE = ("runtime", "runtime_version", "python_version", "host", "artifact_key", "artifact_sha256")
    EXTRA = ("quantized_ops", "delegated_ops", "delegation_complete", "built_isa", "execution", "deprecated",
             "runtime_footprint_mb")

    runtime: Any = None
    runtime_version: Any = None
    python_version: Any = None
    host: Any = None
    artifact_key: Any = None
    artifact_sha256: Any = None
    quantized_ops: Any = UNSET  # e.g. "MatMul 1/1, Conv 0/53"
    # what a delegate took, e.g. "xnnpack 12/14 ops in 2 partitions; portable: aten.view_copy x2"
    delegated_ops: Any = UNSET
    delegation_complete: Any = UNSET  # True when every operator went to the delegate
    built_isa: Any = UNSET  # compiled packages (AOTI): the vector ISA and the CPU flags its kernels need
    # "deployed" (what a user of the framework ships: an onnxruntime session, a LiteRT interpreter,
    # an AOTInductor package, an ExecuTorch program, TorchScript) or "reference" (an eager torch
    # program: accuracy debugging, never a candidate of the answer); every row with a recipe
    execution: Any = UNSET
    deprecated: Any = UNSET  # an API the recipe uses is deprecated: which, and the library version that warned
    runtime_footprint_mb: Any = UNSET  # MB on disk of the runtime that ran the case (its installed distribution)

    @classmethod
    def runner(cls, result: Mapping[str, Any]) -> dict[str, Any]:
        """Fields from the runner's result; a delegation the runtime reported on the device (LiteRT:
        which operators its XNNPACK delegate took there) replaces the build host's."""
        system = result.get("system", {})
        footprint = (result.get("runtime_details") or {}).get("runtime_footprint_mb")
        return dict(runtime=result["runtime"], runtime_version=result["runtime_version"],
                    python_version=system.get("python_version"), host=system.get("host"),
                    **({"runtime_footprint_mb": footprint} if footprint is not None else {}),
                    **cls.delegation(result.get("runtime_details") or {}))

    @classmethod
    def delegation(cls, notes: Mapping[str, Any]) -> dict[str, Any]:
        """Fields from an artifact manifest's notes["delegation"]: {"summary": str, "complete": bool,
        ...} (what a delegate took at build time); none when the artifact has no delegate."""
        found = notes.get("delegation") or {}
        if not found.get("summary"):
            return {}
        return dict(delegated_ops=str(found["summary"]), delegation_complete=bool(found.get("complete")))


@dataclass(frozen=True)
class Fleet(Section):
    """Which board of the run's placements ran the case, how long it waited for it, and when it
    held it: `held_from`/`held_until`, the hold under which the case (and the fp32 baseline it
    measured first on that board) ran, as `utc_ms` stamps. The window lies within the hold: taken
    once the board was granted (the run's lease, and a labgrid place at the coordinator) and
    before its release began, so two rows whose windows overlap did share a board. Every target
    kind has them (a single target's hold is the case's); `held_until` is empty when the run
    ended before the hold did (killed); both are empty for a case no board ran."""

    NAME = "fleet"
    CORE = ("pool", "board", "worker", "lease_wait_s", "held_from", "held_until")
    EXTRA = ("lab_place", "lab_holder", "power_cycled")

    pool: Any = None
    board: Any = None
    worker: Any = None
    lease_wait_s: Any = None
    held_from: Any = None
    held_until: Any = None
    lab_place: Any = UNSET  # the labgrid place the board is (targets/labgrid_place.py)
    lab_holder: Any = UNSET  # who held it at the coordinator while the case ran: host/user+qb-<pid>-<start>
    power_cycled: Any = UNSET  # the case was run again after the board was power-cycled through labgrid: when and why


def utc_ms(seconds: float) -> str:
    """A `time.time()` instant as UTC ISO-8601 to the millisecond, e.g. 2026-12-07T10:15:03.123Z
    (truncated, never rounded up: an earlier instant never gets a later stamp)."""
    ms = int(seconds * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def field_names(section: type) -> set[str]:
    return {f.name for f in fields(section)}


def optional(value: Any) -> Optional[Any]:
    """UNSET as None (reading a section's extra field as a value)."""
    return None if value is UNSET else value
