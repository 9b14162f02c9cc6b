"""A run in pytest-benchmark's JSON layout, so `pytest-benchmark compare` (and anything else
that reads `.benchmarks/`) can show quantbench cases beside a team's other benchmarks.

One benchmark per measured case, named like the case's pytest test; times are in seconds
per call, as pytest-benchmark stores them, and its statistics are computed with its own
definitions (quartiles by its "method 3/method 2", Tukey fences, stddev outliers). The
raw latencies go in `stats.data` unless asked not to. quantbench's own columns (accuracy,
speedup, size, ...) ride along in `extra_info`.
"""
from __future__ import annotations

import datetime as dt
import math
import platform
import statistics
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from harness.values import plain

PYTEST_BENCHMARK_LAYOUT = "5.1"  # the layout version written in `version` (fields as of pytest-benchmark 5.x)
EXTRA_COLUMNS = ("run_id", "case_id", "suite", "model", "framework", "mode", "recipe", "target", "device", "batch_size",
                 "threads", "accuracy", "accuracy_delta", "speedup", "size_bytes", "size_ratio", "peak_rss_mb",
                 "energy_mj_per_inf", "iqr_over_median", "valid", "latency_p90_ms", "latency_p99_ms")


def _quartiles(data: Sequence[float]) -> tuple[float, float]:
    """q1, q3 exactly as pytest_benchmark.stats.Stats computes them."""
    n = len(data)
    if n == 1:
        return data[0], data[0]
    if n % 2:  # method 3
        k, r = n // 4, n % 4
        if r == 1:
            return 0.25 * data[k - 1] + 0.75 * data[k], 0.75 * data[3 * k] + 0.25 * data[3 * k + 1]
        return 0.75 * data[k] + 0.25 * data[k + 1], 0.25 * data[3 * k + 1] + 0.75 * data[3 * k + 2]
    return statistics.median(data[: n // 2]), statistics.median(data[n // 2:])  # method 2


def benchmark_stats(seconds: Sequence[float]) -> dict[str, Any]:
    """pytest-benchmark's Stats.as_dict() fields for these per-call times (seconds)."""
    data = [float(v) for v in seconds]
    s = sorted(data)
    n = len(s)
    mean = statistics.mean(s)
    std = statistics.stdev(s) if n > 1 else 0
    q1, q3 = _quartiles(s)
    iqr = q3 - q1
    lo, hi = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    std_out = sum(1 for v in s if v < mean - std or v > mean + std)
    iqr_out = sum(1 for v in s if v < lo or v > hi)
    total = math.fsum(s)
    return {
        "min": s[0], "max": s[-1], "mean": mean, "stddev": std, "rounds": n, "median": statistics.median(s),
        "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": iqr_out, "stddev_outliers": std_out,
        "outliers": f"{std_out};{iqr_out}",
        "ld15iqr": s[0] if n == 1 else s[bisect_left(s, lo)],
        "hd15iqr": s[0] if n == 1 else s[bisect_right(s, hi) - 1],
        "ops": n / total if total else 0, "total": total,
    }



def machine_id(manifest: Mapping[str, Any]) -> str:
    """pytest-benchmark's storage folder name (system-implementation-pyversion-bits) for the target."""
    target = manifest.get("target") or {}
    facts = target.get("facts") or {}
    system = str(facts.get("os") or platform.system()).split("-")[0]
    py = str((manifest.get("versions") or {}).get("python") or facts.get("python_version") or platform.python_version())
    bits = "64bit" if "64" in str(target.get("arch") or facts.get("machine") or platform.machine()) else "32bit"
    return f"{system}-CPython-{'.'.join(py.split('.')[:2])}-{bits}"


def to_pytest_benchmark(manifest: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                        latencies_ms: Mapping[str, Sequence[float]], tags: Sequence[str] = (),
                        include_data: bool = True) -> dict[str, Any]:
    target = manifest.get("target") or {}
    facts = target.get("facts") or {}
    versions = manifest.get("versions") or {}
    benchmarks = []
    for row in rows:
        values = latencies_ms.get(row["case_id"])
        if row.get("status") != "ok" or values is None or not len(values):
            continue  # pytest-benchmark leaves out benchmarks that errored, too
        seconds = [float(v) / 1000.0 for v in values]
        stats = benchmark_stats(seconds)
        if include_data:
            stats["data"] = seconds
        stats["iterations"] = 1
        suite = row.get("suite") or "suite"
        benchmarks.append({
            "group": f"{row.get('model')} on {row.get('target')} (batch {row.get('batch_size')})",
            "name": f"test_case[{row['case_id']}]",
            "fullname": f"suites/test_{suite}.py::test_case[{row['case_id']}]",
            "params": {"case": row["case_id"]},
            "param": row["case_id"],
            "extra_info": {k: plain(row.get(k)) for k in EXTRA_COLUMNS},
            "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": None, "max_time": None,
                        "min_time": None, "warmup": True},
            "stats": stats,
        })
    started = manifest.get("started_at")
    return {
        "machine_info": {
            "node": target.get("host") or facts.get("host"), "processor": target.get("device"),
            "machine": target.get("arch") or facts.get("machine"), "python_compiler": None,
            "python_implementation": "CPython", "python_implementation_version": versions.get("python"),
            "python_version": versions.get("python"), "python_build": None, "release": facts.get("os"),
            "system": str(facts.get("os") or "").split("-")[0] or None,
            "cpu": {"brand_raw": target.get("device"), "arch": target.get("arch"), "count": facts.get("logical_cores")},
            "quantbench_target": target.get("name"), "quantbench_profile": target.get("profile"),
        },
        "commit_info": {"id": None, "time": started, "author_time": None, "dirty": None, "project": "quantbench",
                        "branch": None, "quantbench_run_id": manifest.get("run_id"), "quantbench_tags": list(tags)},
        "benchmarks": benchmarks,
        "datetime": started or dt.datetime.now(dt.timezone.utc).isoformat(),
        "version": PYTEST_BENCHMARK_LAYOUT,
    }


def next_storage_path(storage: Path, manifest: Mapping[str, Any], name: str) -> Path:
    """<storage>/<machine id>/NNNN_<name>.json, numbered after the files already there (like --benchmark-save)."""
    folder = Path(storage) / machine_id(manifest)
    folder.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[:4]) for p in folder.glob("[0-9][0-9][0-9][0-9]_*.json")]
    return folder / f"{max(numbers, default=0) + 1:04d}_{name}.json"


def load_run(ref: str, db=None, results_dir: Optional[Path] = None):
    """(manifest, rows, latencies, tags) of a run: from the database when it holds the run,
    else from results/<run-id>/ (ref may be a run id, a run directory or 'latest')."""
    from harness.store import Run, resolve_run

    if db is not None:
        runs = db.runs(limit=1) if ref == "latest" else db.runs(run_id=ref)
        if len(runs):
            run_id = runs.iloc[0]["run_id"]
            rows = db.results(run_id=run_id)
            arrays = db.latency_arrays(rows["result_pk"])
            lat = {r.case_id: arrays[r.result_pk].tolist() for r in rows.itertuples() if r.result_pk in arrays}
            clean = [{k: plain(v) for k, v in r.items()} for r in rows.to_dict("records")]
            tags = [t for t in str(runs.iloc[0]["tags"]).split(",") if t]
            return db.manifest(run_id), clean, lat, tags
    run = Run(resolve_run(ref, Path(results_dir) if results_dir else None))
    return run.manifest, run.case_rows, run.latencies, []
