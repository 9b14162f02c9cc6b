"""results/<run-id>/: one JSON file per case written the moment it finishes, and the
tidy report (results.parquet/.csv, latencies.parquet) rebuilt from those files."""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import pandas as pd

from harness import report


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)  # atomic: a reader never sees half a file


class RunStore:
    def __init__(self, results_dir: Path, run_id: str) -> None:
        self.run_id = run_id
        self.dir = Path(results_dir) / run_id
        self.cases_dir = self.dir / "cases"
        self.cases_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "run.log"

    def write_run(self, info: Mapping[str, Any]) -> None:
        _write_json(self.dir / "run.json", dict(info))

    @staticmethod
    def _case_record(row: Mapping[str, Any], latencies_ms, power_trace, round_sizes) -> dict[str, Any]:
        return {"row": dict(row), "latencies_ms": latencies_ms or [], "power_trace": power_trace or [],
                "round_sizes": round_sizes or []}  # latencies per round, in order (rounds > 1)

    def write_case(self, row: Mapping[str, Any], latencies_ms: Optional[list[float]] = None,
                   power_trace: Optional[list[tuple[float, float]]] = None, round_sizes: Optional[list[int]] = None) -> None:
        # The per-case file is the durable record. The parquet/csv are rebuilt once when the
        # session closes (or by load_run when stale), not after every case: a rebuild reads
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

    def read_case(self, case_id: str) -> Optional[dict[str, Any]]:
        """A case's row as written (by any process of the run), or None."""
        try:
            return json.loads((self.cases_dir / f"{case_id}.json").read_text())["row"]
        except FileNotFoundError:
            return None

    def log(self, text: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def rebuild(self) -> pd.DataFrame:
        return rebuild(self.dir)


POWER_COLUMNS = ["case_id", "t_s", "power_w"]


def read_cases(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, latencies = [], []
    for path in sorted((Path(run_dir) / "cases").glob("*.json")):
        record = json.loads(path.read_text())
        rows.append(record["row"])
        case_id = record["row"]["case_id"]
        values = record["latencies_ms"]
        rounds = [r for r, size in enumerate(record.get("round_sizes") or [len(values)]) for _ in range(size)]
        if len(rounds) != len(values):  # a record from before rounds, or a partial one: one round
            rounds = [0] * len(values)
        latencies.extend({"case_id": case_id, "i": i, "latency_ms": v, "round": r}
                         for i, (v, r) in enumerate(zip(values, rounds)))
    lat = pd.DataFrame(latencies, columns=["case_id", "i", "latency_ms", "round"])
    return report.frame(rows), lat


def read_power(run_dir: Path) -> pd.DataFrame:
    """The power samples of every case's timed window, long form: case_id, t_s (seconds since
    the window opened), power_w."""
    samples = []
    for path in sorted((Path(run_dir) / "cases").glob("*.json")):
        record = json.loads(path.read_text())
        case_id = record["row"]["case_id"]
        samples.extend({"case_id": case_id, "t_s": t, "power_w": w} for t, w in record.get("power_trace") or [])
    return pd.DataFrame(samples, columns=POWER_COLUMNS).astype({"t_s": float, "power_w": float})


def rebuild(run_dir: Path) -> pd.DataFrame:
    """Write results.parquet/.csv, latencies.parquet and power.parquet from the per-case files."""
    run_dir = Path(run_dir)
    df, lat = read_cases(run_dir)
    for name, table in (("results.parquet", df), ("latencies.parquet", lat), ("power.parquet", read_power(run_dir))):
        tmp = run_dir / f".{name}.tmp{os.getpid()}"
        table.to_parquet(tmp, index=False)
        os.replace(tmp, run_dir / name)
    tmp = run_dir / f".results.csv.tmp{os.getpid()}"
    df.to_csv(tmp, index=False)
    os.replace(tmp, run_dir / "results.csv")
    return df


def resolve_run(ref: str, results_dir: Optional[Path] = None) -> Path:
    """A run directory from a run id, a path, or 'latest' (under results_dir, default: harness.settings.results_dir())."""
    if results_dir is None:
        from harness import settings

        results_dir = settings.results_dir()
    if ref == "latest":
        runs = sorted(p for p in Path(results_dir).iterdir() if (p / "cases").is_dir()) if Path(results_dir).is_dir() else []
        if not runs:
            raise FileNotFoundError(f"no runs under {results_dir}")
        return runs[-1]
    for candidate in (Path(ref), Path(results_dir) / ref):
        if (candidate / "cases").is_dir():
            return candidate
    raise FileNotFoundError(f"no run {ref!r} (looked for {ref} and {Path(results_dir) / ref})")


def load_run(run_dir: Path) -> pd.DataFrame:
    """The run's rows; rebuilt from the per-case files when the parquet is missing or stale."""
    run_dir = Path(run_dir)
    parquet = run_dir / "results.parquet"
    cases = list((run_dir / "cases").glob("*.json"))
    if not parquet.is_file() or any(p.stat().st_mtime > parquet.stat().st_mtime for p in cases):
        return rebuild(run_dir)
    return pd.read_parquet(parquet)
