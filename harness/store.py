"""results/<run-id>/: the one module that reads and writes a run's directory.

`RunStore` writes while a run goes on: one JSON file per case the moment it finishes
(cases/<case_id>.json), run.json (`write_manifest`: the single path for it, from a session or
the pytest-xdist controller) and run.log. `Run` is the directory read back, once and lazily:
the rows, latencies, power traces and run.json that the report, the history database, the
end of a run and the dashboard take; the tidy report (results.parquet/.csv, latencies.parquet,
power.parquet) is rebuilt from it.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import secrets
import time
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pandas as pd

from harness import report
from harness.fleet.shared import SharedRun
from harness.limits import Limits

# The format of the files this module writes (run.json and cases/<id>.json carry it as
# "format"), as pyperf's _JSON_VERSION. Files without it are read as version 0.
#   0: the files before the format was recorded (rounds and power traces optional in a case file)
#   1: "format" added to run.json and to each case file; nothing else changed
JSON_VERSION = 1

VERSIONED = ("numpy", "pandas", "torch", "torchao", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxconverter-common",
             "tensorflow-cpu", "ai-edge-litert", "litert-torch", "ai-edge-quantizer", "paramiko", "nvidia-ml-py")
POWER_COLUMNS = ["case_id", "t_s", "power_w"]


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def _read_versioned(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if int(data.get("format") or 0) > JSON_VERSION:
        raise ValueError(f"{path} has format {data['format']}, newer than this quantbench reads ({JSON_VERSION}); "
                         "upgrade quantbench")
    return data


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run_manifest(run_id: str, command: list[str], started_at: str, finished: bool, run_dir: Path,
                 placements: Sequence[Any], options: Any,
                 boards: Optional[dict[str, dict[str, Any]]] = None,
                 rows: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    """run.json: `target` is the one target of a single-target run (as history expects), or
    the --target value; `targets` has every board that ran something, `placements` the pools.
    `placements`: targets.fleet.Placement; `options`: the session's options (a dataclass);
    `rows`: the cases' rows when the caller has read them (else read here)."""
    boards = {**SharedRun(run_dir).boards(), **(boards or {})}
    rows = Run(run_dir).case_rows if rows is None else rows
    suites = {row.get("suite") for row in rows}
    declared = Run(run_dir).declared_limits
    single = len(placements) == 1 and not placements[0].pool
    name = placements[0].name if single else ",".join(p.label for p in placements)
    target = dict(boards.get(name) or {"name": name}) if single else {"name": name}
    return {
        "run_id": run_id,
        "command": command,
        "started_at": started_at,
        "finished_at": _now() if finished else None,
        "suites": sorted(s for s in suites if s),
        "cases": len(rows),
        "versions": library_versions(),
        "target": target,
        "targets": boards,
        "placements": [{"name": p.name, "pool": p.pool, "boards": [b.name for b in p.boards]} for p in placements],
        "options": {k: str(v) for k, v in asdict(options).items()},
        "limits": limits_record(declared, getattr(options, "limits", None), suites),
    }


def limits_record(declared: Mapping[str, Mapping[str, Any]], flags: Optional[Limits],
                  suites: Any = ()) -> dict[str, Any]:
    """run.json's "limits": each suite's declared Limits (Suite(limits=...)), the command line's
    (`flags`) and the limits applied to each suite's answer (declared overridden by flags, defaults
    filled in)."""
    names = sorted({*declared, *(s for s in suites if isinstance(s, str) and s)})
    flags = flags if isinstance(flags, Limits) else Limits()
    return {"declared": {name: dict(declared[name]) for name in sorted(declared)}, "flags": flags.as_dict(),
            "applied": {name: Limits.from_dict(declared.get(name)).override(flags).as_dict(resolved=True)
                        for name in names}}


class RunStore:
    """Writes results/<run-id>/ while the run goes on (any process of the run)."""

    def __init__(self, results_dir: Path, run_id: str) -> None:
        self.run_id = run_id
        self.dir = Path(results_dir) / run_id
        self.cases_dir = self.dir / "cases"
        self.cases_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "run.log"

    def write_run(self, info: Mapping[str, Any]) -> None:
        _write_json(self.dir / "run.json", {**dict(info), "format": JSON_VERSION})

    def write_manifest(self, command: list[str], started_at: Optional[str], finished: bool, placements: Sequence[Any],
                       options: Any, boards: Optional[dict[str, dict[str, Any]]] = None,
                       rows: Optional[list[dict[str, Any]]] = None) -> None:
        """run.json (run_manifest); `started_at` None keeps the one an earlier write recorded."""
        if started_at is None:
            path = self.dir / "run.json"
            started_at = (_read_versioned(path).get("started_at") if path.is_file() else None) or _now()
        self.write_run(run_manifest(self.run_id, command, started_at, finished, self.dir, placements, options, boards,
                                    rows))

    def finish(self, command: list[str], started_at: Optional[str], placements: Sequence[Any], options: Any,
               boards: Optional[dict[str, dict[str, Any]]] = None) -> "Run":
        """By the run's last process (a session, or the pytest-xdist controller): the final run.json
        and the tidy report; returns the run, its case files read once for both and what follows."""
        run = Run(self.dir)
        self.write_manifest(command, started_at, True, placements, options, boards, run.case_rows)
        run.rebuild()
        return run

    @staticmethod
    def _case_record(row: Mapping[str, Any], latencies_ms, power_trace, round_sizes) -> dict[str, Any]:
        return {"format": JSON_VERSION, "row": dict(row), "latencies_ms": latencies_ms or [],
                "power_trace": power_trace or [],
                "round_sizes": round_sizes or []}  # latencies per round, in order (rounds > 1)

    def write_suite_limits(self, suite: str, limits: Limits) -> None:
        """limits/<suite>.json: the Limits a suite declared (run.json's limits.declared); any of the run's
        processes may write it, always the same content."""
        folder = self.dir / "limits"
        folder.mkdir(exist_ok=True)
        _write_json(folder / f"{suite}.json", limits.as_dict())

    def write_case(self, row: Mapping[str, Any], latencies_ms: Optional[list[float]] = None,
                   power_trace: Optional[list[tuple[float, float]]] = None, round_sizes: Optional[list[int]] = None) -> None:
        # The per-case file is the durable record. The parquet/csv are rebuilt once when the
        # session closes (or by Run.rows when stale), not after every case: a rebuild reads
        # every case file, so doing it per case made a run's bookkeeping quadratic.
        _write_json(self.cases_dir / f"{row['case_id']}.json", self._case_record(row, latencies_ms, power_trace, round_sizes))

    def write_case_once(self, row: Mapping[str, Any], latencies_ms: Optional[list[float]] = None,
                        power_trace: Optional[list[tuple[float, float]]] = None,
                        round_sizes: Optional[list[int]] = None) -> dict[str, Any]:
        """Write the case's file unless one exists (another process of the run wrote it first);
        returns the row now on disk. Atomic: the file appears complete or not at all."""
        final = self.cases_dir / f"{row['case_id']}.json"
        tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(self._case_record(row, latencies_ms, power_trace, round_sizes), indent=1, default=str))
        try:
            os.link(tmp, final)  # fails if the file exists: exactly one writer wins
            return dict(row)
        except FileExistsError:
            return self.read_case(row["case_id"])
        finally:
            tmp.unlink()

    def update_row(self, case_id: str, columns: Mapping[str, Any]) -> dict[str, Any]:
        """Add or replace columns of a recorded case's row (its latencies and trace unchanged);
        returns the row now on disk."""
        record = _read_versioned(self.cases_dir / f"{case_id}.json")
        record["row"] = {**record["row"], **dict(columns)}
        _write_json(self.cases_dir / f"{case_id}.json", {**record, "format": JSON_VERSION})
        return record["row"]

    def read_record(self, case_id: str) -> Optional[dict[str, Any]]:
        """A case's file as written (by any process of the run), or None."""
        try:
            return _read_versioned(self.cases_dir / f"{case_id}.json")
        except FileNotFoundError:
            return None

    def read_case(self, case_id: str) -> Optional[dict[str, Any]]:
        """A case's row as written (by any process of the run), or None."""
        record = self.read_record(case_id)
        return None if record is None else record["row"]

    def log(self, text: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def run(self) -> "Run":
        return Run(self.dir)

    def rebuild(self) -> pd.DataFrame:
        return self.run().rebuild()


class Run:
    """A run's directory read back: each file read once, when first asked for."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.dir.name) if (self.dir / "run.json").is_file() else self.dir.name

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """run.json."""
        path = self.dir / "run.json"
        if not path.is_file():
            raise FileNotFoundError(f"{self.dir} is not a quantbench run directory (no run.json)")
        return _read_versioned(path)

    @cached_property
    def records(self) -> list[dict[str, Any]]:
        """Every cases/<case_id>.json, in file-name order."""
        return [_read_versioned(path) for path in sorted((self.dir / "cases").glob("*.json"))]

    @property
    def declared_limits(self) -> dict[str, dict[str, Any]]:
        """suite -> the Limits fields it declared (limits/<suite>.json), for the suites that ran a case."""
        return {path.stem: json.loads(path.read_text()) for path in sorted((self.dir / "limits").glob("*.json"))}

    @property
    def case_rows(self) -> list[dict[str, Any]]:
        """The rows as written, one dict per case."""
        return [record["row"] for record in self.records]

    @property
    def latencies(self) -> dict[str, list[float]]:
        """case_id -> its raw latencies (ms), every round in order."""
        return {record["row"]["case_id"]: record.get("latencies_ms") or [] for record in self.records}

    @property
    def power_traces(self) -> dict[str, list]:
        """case_id -> [(seconds since the window opened, watts), ...], for cases that have one."""
        return {record["row"]["case_id"]: record["power_trace"] for record in self.records if record.get("power_trace")}

    def latency_frame(self) -> pd.DataFrame:
        """Long form: case_id, i, latency_ms, round."""
        latencies = []
        for record in self.records:
            case_id, values = record["row"]["case_id"], record["latencies_ms"]
            rounds = [r for r, size in enumerate(record.get("round_sizes") or [len(values)]) for _ in range(size)]
            if len(rounds) != len(values):  # a record from before rounds, or a partial one: one round
                rounds = [0] * len(values)
            latencies.extend({"case_id": case_id, "i": i, "latency_ms": v, "round": r}
                             for i, (v, r) in enumerate(zip(values, rounds)))
        return pd.DataFrame(latencies, columns=["case_id", "i", "latency_ms", "round"])

    def power_frame(self) -> pd.DataFrame:
        """The power samples of every case's timed window, long form: case_id, t_s (seconds since
        the window opened), power_w."""
        samples = [{"case_id": case_id, "t_s": t, "power_w": w}
                   for case_id, trace in self.power_traces.items() for t, w in trace]
        return pd.DataFrame(samples, columns=POWER_COLUMNS).astype({"t_s": float, "power_w": float})

    def rebuild(self) -> pd.DataFrame:
        """Write results.parquet/.csv, latencies.parquet and power.parquet from the per-case files."""
        df = report.frame(self.case_rows)
        for name, table in (("results.parquet", df), ("latencies.parquet", self.latency_frame()),
                            ("power.parquet", self.power_frame())):
            tmp = self.dir / f".{name}.tmp{os.getpid()}"
            table.to_parquet(tmp, index=False)
            os.replace(tmp, self.dir / name)
        tmp = self.dir / f".results.csv.tmp{os.getpid()}"
        df.to_csv(tmp, index=False)
        os.replace(tmp, self.dir / "results.csv")
        return df

    @cached_property
    def rows(self) -> pd.DataFrame:
        """The run's rows (results.parquet, as the report reads them); rebuilt from the per-case
        files when the parquet is missing or stale."""
        parquet = self.dir / "results.parquet"
        cases = list((self.dir / "cases").glob("*.json"))
        if not parquet.is_file() or any(p.stat().st_mtime > parquet.stat().st_mtime for p in cases):
            return self.rebuild()
        return pd.read_parquet(parquet)


def read_run_dir(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, list[float]]]:
    """run.json, the rows and the raw latencies of results/<run-id>/ (Run's, as a tuple)."""
    run = Run(run_dir)
    return run.manifest, run.case_rows, run.latencies


def rebuild(run_dir: Path) -> pd.DataFrame:
    return Run(run_dir).rebuild()


def is_run_dir(path: Path) -> bool:
    """A results/<run-id>/ that holds (or will hold) case files."""
    return (Path(path) / "cases").is_dir()


def resolve_run(ref: str, results_dir: Optional[Path] = None) -> Path:
    """A run directory from a run id, a path, or 'latest' (under results_dir, default: harness.settings.results_dir())."""
    if results_dir is None:
        from harness import settings

        results_dir = settings.results_dir()
    if ref == "latest":
        runs = sorted(p for p in Path(results_dir).iterdir() if is_run_dir(p)) if Path(results_dir).is_dir() else []
        if not runs:
            raise FileNotFoundError(f"no runs under {results_dir}")
        return runs[-1]
    for candidate in (Path(ref), Path(results_dir) / ref):
        if is_run_dir(candidate):
            return candidate
    raise FileNotFoundError(f"no run {ref!r} (looked for {ref} and {Path(results_dir) / ref})")


def load_run(run_dir: Path) -> pd.DataFrame:
    """The run's rows (Run.rows)."""
    return Run(run_dir).rows
