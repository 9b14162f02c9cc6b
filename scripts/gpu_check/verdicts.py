"""The GPU check's verdicts (scripts/gpu_check.py loads this file): a check per step from what it
left (JUnit XML, the digits run, the timing JSON), the tables beside them, and the outputs:
the tarball and summary.txt. (`StepResult` and `Log` are scripts/gpu_check/host.py's, `Mode` is
scripts/gpu_check.py's.)
"""
from __future__ import annotations

import json
import shutil
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

HALF_MODES = ("fp32", "bf16", "fp16")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


# -- checks on what the steps left -------------------------------------------------------------------------
def junit_check(path: Path, step: StepResult, require_gpu: bool) -> tuple[Check, list[str]]:
    """The tests' verdict from their JUnit XML: counts, each failure and each skip with its reason."""
    if step.returncode is None:
        return Check("GPU tests (tests/test_cuda_target.py)", False, "timed out"), []
    if not path.is_file():
        return Check("GPU tests (tests/test_cuda_target.py)", False, f"no JUnit XML (pytest exit {step.returncode})"), []
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    notes = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name")
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        if problem is not None:
            counts["failed"] += 1
            notes.append(f"FAILED {name}: {(problem.get('message') or '').strip()[:300]}")
        elif skipped is not None:
            counts["skipped"] += 1
            notes.append(f"skipped {name}: {(skipped.get('message') or '').strip()[:200]}")
        else:
            counts["passed"] += 1
    skipped_for_no_gpu = [n for n in notes if n.startswith("skipped") and "no CUDA device" in n]
    ok = step.returncode == 0 and counts["failed"] == 0 and not (require_gpu and skipped_for_no_gpu)
    detail = f"{counts['passed']} passed, {counts['skipped']} skipped, {counts['failed']} failed (pytest exit {step.returncode})"
    return Check("GPU tests (tests/test_cuda_target.py)", ok, detail), notes


def _present(value: Any) -> bool:
    from harness.values import number

    return number(value) is not None


def row_checks(df, mode: Mode, gpu_name: Optional[str]) -> list[Check]:
    """torch fp32/bf16/fp16 rows: ok with p50, GPU memory (NVML and torch's peak) and NVML energy."""
    checks = []
    for mode_name in HALF_MODES:
        rows = df[(df["framework"] == "torch") & (df["mode"] == mode_name)]
        label = f"digits torch {mode_name}"
        if len(rows) != 1:
            checks.append(Check(label, False, f"{len(rows)} rows (expected 1)"))
            continue
        r = rows.iloc[0]
        if not mode.require_gpu:  # the rehearsal: fp16 is n/a on a CPU without float16 arithmetic
            ok = r["status"] == "ok" and _present(r["latency_p50_ms"]) or (r["status"] == "n/a" and mode_name == "fp16")
            checks.append(Check(label, bool(ok), f"{r['status']} {r['reason'] or ''}".strip()))
            continue
        missing = [c for c in ("latency_p50_ms", "gpu_mem_mb", "gpu_mem_peak_allocated_mb", "energy_mj_per_inf")
                   if not (_present(r.get(c)) and float(r[c]) > 0)]
        problems = []
        if r["status"] != "ok":
            problems.append(f"status {r['status']}: {r['reason']}")
        if missing:
            problems.append(f"no {', '.join(missing)}")
        if not str(r.get("power_source") or "").startswith("NVML"):
            problems.append(f"power_source {r.get('power_source')!r} is not NVML")
        if gpu_name and r.get("device") != gpu_name:
            problems.append(f"device {r.get('device')!r}, not {gpu_name!r}")
        checks.append(Check(label, not problems, "; ".join(problems) or "ok: p50, gpu_mem_mb, peak allocated, NVML energy"))
    return checks


TORCH_COLUMNS = ("mode", "recipe", "status", "latency_p50_ms", "latency_p99_ms", "n_runs", "gpu_mem_mb",
                 "gpu_mem_peak_allocated_mb", "energy_mj_per_inf", "power_mean_w", "idle_power_w", "accuracy", "accuracy_delta")


def rows_table(df) -> str:
    import pandas as pd

    torch_rows = df[df["framework"] == "torch"]
    if torch_rows.empty:
        return "(no torch rows)"
    order = {m: i for i, m in enumerate(HALF_MODES)}
    torch_rows = torch_rows.assign(_order=torch_rows["mode"].map(order).fillna(len(order))).sort_values(["_order", "recipe"])
    shown = torch_rows[[c for c in TORCH_COLUMNS if c in torch_rows.columns]]
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 48):
        table = shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")
    sources = sorted({str(v) for v in torch_rows.get("power_source", []) if v is not None and v == v})
    memory = sorted({str(v) for v in torch_rows.get("gpu_mem_source", []) if v is not None and v == v})
    return "\n".join([table] + [f"power_source: {v}" for v in sources] + [f"gpu_mem_source: {v}" for v in memory])


def na_reasons(df) -> list[str]:
    out = []
    for framework in ("onnxruntime", "tflite"):
        reasons = sorted(set(df[(df["framework"] == framework) & (df["status"] == "n/a")]["reason"]))
        statuses = df[df["framework"] == framework]["status"].value_counts().to_dict()
        out.append(f"{framework}: {statuses}" + (f"; n/a because: {' | '.join(r[:240] for r in reasons[:3])}" if reasons else ""))
    return out


def timing_check(path: Path, step: StepResult, gated: bool) -> tuple[Check, list[str]]:
    name = "timing synchronised (benchmarks/cuda_timing_sync.py)" if gated else "timing benchmark rehearsal on the CPU"
    if step.returncode is None:
        return Check(name, False, "timed out"), []
    if not path.is_file():
        return Check(name, False, f"no JSON (exit {step.returncode})"), []
    document = json.loads(path.read_text())
    lines = []
    for m in document["models"]:
        p = m["p50_ms"]
        lines.append(f"{m['model']} (batch {m['batch']}): no sync {p['no_sync']:.4f} ms, sync {p['sync']:.4f} ms, "
                     f"quantbench io device {p['quantbench_device']:.4f} ms ({m['ratio_device']:.3f}x sync); host io "
                     f"{p['host_io']:.4f} ms, quantbench io host {p['quantbench_host']:.4f} ms ({m['ratio_host']:.3f}x)"
                     + (f" -> {'met' if m['verdict']['passed'] else 'MISSED'}" if "verdict" in m else " (not gated)"))
    if gated:
        ok = step.returncode == 0 and document.get("passed") is True
        detail = f"quantbench p50 within {document['goal']:.0%} of the synchronised loop: {'yes' if ok else 'NO'}"
    else:
        ok = step.returncode == 0
        detail = f"ran on {document['device']} ({document['target_kind']}): a rehearsal, no GPU to synchronise"
    return Check(name, ok, detail), lines


def digits_verdict(run_dir: Path, step: StepResult, mode: Mode, gpu_name: Optional[str], out: Path, checks: list[Check],
                   sections: list[tuple[str, list[str]]]) -> None:
    """The digits run's checks and tables; its run.json and results.csv into OUT_DIR."""
    name = f"digits suite on {mode.target}"
    if not (run_dir / "run.json").is_file():
        checks.append(Check(name, False, f"no run directory (pytest exit {step.returncode}): "
                                         f"{' | '.join(step.output.strip().splitlines()[-3:])}"))
        return
    from harness.store import load_run

    df = load_run(run_dir)
    shutil.copyfile(run_dir / "run.json", out / "run.json")
    df.to_csv(out / "results.csv", index=False)
    counts = df["status"].value_counts().to_dict()
    checks.append(Check(name, step.returncode == 0,
                        f"{len(df)} cases {counts} (pytest exit {'timeout' if step.returncode is None else step.returncode})"))
    checks.extend(row_checks(df, mode, gpu_name))
    sections.append((f"torch rows on {gpu_name or mode.target} (digits-cnn, batch 1)", [rows_table(df)]))
    sections.append(("other frameworks", na_reasons(df)))


def analysed(log: Log, checks: list[Check], name: str, fn: Callable[[], None]) -> None:
    """Run one step's analysis; a failure of the analysis itself is a failed check, and the
    remaining steps still run (a GPU machine's minutes are too scarce to lose them to a bug here)."""
    try:
        fn()
    except Exception as exc:
        import traceback

        log(traceback.format_exc())
        checks.append(Check(name, False, f"the check's own analysis failed: {type(exc).__name__}: {exc} (see gpu_check.log)"))


# -- outputs ---------------------------------------------------------------------------------------------
def write_tarball(out: Path, work: Path, log: Log) -> None:
    path = out / "gpu_check.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for item in sorted(work.iterdir()):
            if item.name in ("venv", "site"):
                continue
            tar.add(item, arcname=f"gpu_check/{item.name}")
    log(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


def summary_text(mode_name: str, facts: dict, gpu_says: str, how_wheels: str, checks: list[Check], sections: list[tuple[str, list[str]]],
                 started: str, elapsed: float, out: Path) -> str:
    versions = facts.get("versions") or {}
    probe = facts.get("cuda_probe") or {}
    gpu = probe.get("gpu") or {}
    lines = [f"quantbench GPU check, {started} (UTC), mode: {mode_name}, {elapsed:.0f} s",
             f"host: {facts.get('host')}, {facts.get('cpu_cores')} CPU cores; Python {facts.get('python')} ({facts.get('executable')})"]
    if gpu:
        lines.append(f"GPU: {gpu.get('name')} ({gpu.get('uuid')}), driver {gpu.get('driver_version')}, CUDA {gpu.get('cuda_driver_version')}, "
                     f"compute capability {gpu.get('compute_capability')}, {gpu.get('memory_total_mb') or 0:.0f} MiB, "
                     f"power limit {gpu.get('power_limit_w')} W")
    lines.append(f"GPU detection: {gpu_says}")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    lines.append(f"onnxruntime providers: {', '.join(probe.get('onnxruntime_providers') or []) or 'none'}")
    lines.append(f"wheels: {how_wheels}")
    lines.append("")
    lines.append("checks:")
    lines += [f"  {'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}" for c in checks]
    for title, body in sections:
        if body:
            lines += ["", f"{title}:"] + [f"  {line}" for line in "\n".join(body).splitlines()]
    failed = [c for c in checks if not c.ok]
    lines += ["", f"verdict: {'PASSED' if not failed else f'FAILED ({len(failed)} of {len(checks)} checks)'}",
              f"files: {', '.join(sorted(p.name for p in out.iterdir()))}"]
    return "\n".join(lines) + "\n"
