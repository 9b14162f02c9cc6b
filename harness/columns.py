"""The one column registry: every column a result row can carry, built from the result's sections.

`COLUMNS` (the core: in every row, in this order) is each section's CORE in SECTIONS order;
`EXTRAS` are written only when there is something to say, and a row carries them in the order
below (the order the harness first wrote them; results.csv's extra columns follow it).
A metric's companion scores (top5, nn_agreement, ...) are named by the metric and sit at
COMPANIONS. report.COLUMNS, MIXED_COLUMNS and the history schema's typed columns read this.

COLUMNS_VERSION changes whenever a column is added, renamed or removed (history: pyperf's
_JSON_VERSION):
  1  the core of history schema version 1 (harness/history/schema.py: RESULT_COLUMNS_V1)
  2  core: higher_is_better, accuracy_ci_low/high, eval_samples, pool, board, worker,
     lease_wait_s; the extras registered here (power, device, mixed, rounds, comparison notes)
  3  extra built_isa (a compiled package's vector ISA and the CPU flags it needs: AOTI rows)
  4  extra speedup_ci_level: the true confidence of the speedup's interval over rounds (exact
     order statistics of the paired ratios; before, a percentile bootstrap called [min, max] 95%)
  5  extras delegated_ops, delegation_complete (which operators a delegate took, how many partitions,
     which stayed on portable/reference kernels: ExecuTorch .pte, AOTI and LiteRT rows)
  6  extras baseline_throttled, baseline_valid, baseline_timing_note: whether the fp32 side of a
     row's speedup (its paired rounds, or its row) ran throttled or stopped at its time cap
  7  extras lab_place, lab_holder, power_cycled: a labgrid place's board, who held it at the
     coordinator, and the power cycle after which the case ran again (targets/labgrid_place.py)
  8  extras execution ("deployed" or "reference": eager torch programs are reference numerics,
     never a candidate) and deprecated (the deprecated API a recipe uses and the version that warned)
  9  extras energy_above_idle_mj_per_inf (window power minus the idle power read just before it),
     energy_round_mj and energy_above_idle_round_mj (each round's figure: the energy gate's spread)
  10 extra runtime_footprint_mb (MB on disk of the runtime that ran the case)
 11  extra race: the race of the finalists a row was one of (harness/race.py's record as JSON: the
     per-round p50s of every finalist, cap, why it stopped), added after the run's cases
 12  extra cold_start_ms: a fresh runner process's time to its first result (importing the runtime,
     loading the artifact, the first call: phases_s.runtime_import + init_ms + first_ms)
 13  core held_from, held_until (fleet section): the board's hold the case ran under, UTC ISO-8601
     to the millisecond (sections.utc_ms); two runs' rows on one board show they never overlapped
"""
from __future__ import annotations

from typing import Any, Optional

from harness.device_columns import Device
from harness.mixed_columns import Mixed
from harness.power_columns import Power
from harness.sections import Accuracy, Comparison, Fleet, Identity, Latency, Outcome, Provenance, SizeMemory

COLUMNS_VERSION = 13

# The core's order: the comparison table's groups.
SECTIONS = (Identity, Outcome, Latency, Accuracy, SizeMemory, Power, Comparison, Provenance, Fleet, Device, Mixed)
COLUMNS: list[str] = [name for section in SECTIONS for name in section.CORE]

COMPANIONS = "*companions"  # where a metric's companion scores go
EXTRAS: list[str] = [
    "quantized_ops", "delegated_ops", "delegation_complete", "built_isa", "execution", "deprecated",
    "runtime_footprint_mb",
    *Mixed.EXTRA,
    "cold_start_ms", "batch_note",
    "power_coverage", "idle_power_note", "energy_mj_per_sample", "throttle_reasons", "throttle_note",
    *[c for c in Device.EXTRA if c.startswith("gpu_")],
    "gpu_mem_source", "gpu_mem_peak_allocated_mb",
    "providers_requested", "providers_used", "node_placement", "host_device_copies_timed",
    "power_window_note", "energy_above_idle_mj_per_inf", "energy_round_mj", "energy_above_idle_round_mj",
    "rounds", "round_p50_ms", "rounds_disagree", "round_n_runs",
    COMPANIONS,
    "speedup_ci_low", "speedup_ci_high", "speedup_ci_level", "speedup_rounds", "baseline_round_p50_ms",
    "baseline_case", "baseline_recipe", "execution_note", "baseline_throttled", "baseline_valid", "baseline_timing_note", "race",
    "size_note",
    *Fleet.EXTRA,
]
assert sorted(c for c in EXTRAS if c != COMPANIONS) == sorted(c for s in SECTIONS for c in s.EXTRA), \
    "every section's extra column has its place in EXTRAS"
_POSITION = {name: i for i, name in enumerate(EXTRAS)}

# The row of a case that never produced numbers still carries every core column.
EMPTY: dict[str, Any] = {c: None for c in COLUMNS}

# SQL types of the typed history columns (harness/history/schema.py maps the kinds to SQLAlchemy):
# s: String(300), s16/s32/s64: String(n), t: Text, i: Integer, big: BigInteger, b: Boolean, f: Double.
SQL_KINDS: dict[str, str] = {
    "case_id": "s", "started_at": "s32", "suite": "s", "model": "s", "framework": "s32",
    "mode": "s32", "recipe": "t", "target": "s", "target_kind": "s32", "profile": "s64",
    "device": "s", "batch_size": "i", "threads": "i",
    "status": "s16", "reason": "t",
    "init_ms": "f", "first_ms": "f", "latency_mean_ms": "f", "latency_std_ms": "f", "latency_min_ms": "f",
    "latency_p50_ms": "f", "latency_p90_ms": "f", "latency_p95_ms": "f", "latency_p99_ms": "f", "latency_max_ms": "f",
    "n_runs": "big", "duration_s": "f", "iqr_over_median": "f", "noisy": "b", "valid": "b", "throughput_ips": "f",
    "metric": "s", "accuracy": "f", "accuracy_delta": "f", "accuracy_budget": "f", "within_budget": "b",
    "size_bytes": "big", "size_ratio": "f", "peak_rss_mb": "f", "gpu_mem_mb": "f",
    "power_source": "t", "idle_power_w": "f", "power_mean_w": "f", "energy_mj_per_inf": "f", "throttled": "b",
    "temp_before_c": "f", "temp_after_c": "f",
    "speedup": "f",
    "runtime": "s", "runtime_version": "s", "python_version": "s32", "host": "s",
    "artifact_key": "s", "artifact_sha256": "s64",
}
# The version each core column entered the registry (COLUMNS_VERSION's list above).
SINCE: dict[str, int] = {c: 2 for c in ("higher_is_better", "accuracy_ci_low", "accuracy_ci_high", "eval_samples",
                                         "pool", "board", "worker", "lease_wait_s")}
SINCE.update({c: 13 for c in ("held_from", "held_until")})


def since(column: str) -> int:
    return SINCE.get(column, 1)


def typed(version: int) -> dict[str, str]:
    """The core columns (but run_id) as of registry `version` with their SQL kinds, in order:
    what a history schema of that time gave a typed column."""
    return {c: SQL_KINDS[c] for c in COLUMNS if c != "run_id" and since(c) <= version}


def group(name: str) -> list[str]:
    """A section's columns (core, then extras) by its NAME, e.g. group("mixed")."""
    return list(_section(name).column_names())


def core(name: str) -> list[str]:
    """A section's core columns by its NAME, e.g. core("power")."""
    return list(_section(name).CORE)


def _section(name: str) -> type:
    return next(s for s in SECTIONS if s.NAME == name)


def new_row(**identity: Any) -> dict[str, Any]:
    row = dict(EMPTY)
    row.update(identity)
    return row


def extra_position(column: str, after: Optional[str] = None) -> int:
    """Where an extra column goes among the extras (a companion score: at COMPANIONS;
    `after`: right after that column instead)."""
    if after is not None:
        return _POSITION[after]
    return _POSITION.get(column, _POSITION[COMPANIONS])
