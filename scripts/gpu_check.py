"""The GPU check: quantbench's cuda target measured on this machine's GPU, in one command.

    scripts/gpu_check.sh [OUT_DIR] [--self-check | --rehearse-on-cpu] [--wheels DIR] [--budget-s S]

Made for a borrowed GPU machine: one command, its own Python (not our pins), no network, a
few minutes. The steps, each logged to OUT_DIR/gpu_check.log with its time:

  1. wheels     pure-Python wheels brought along (--wheels, default .whl/ in the repo) go into a
                throwaway layer over this Python (a venv whose .pth adds this Python's own
                packages), so the pytest processes and the runner processes they start see them;
  2. host side  the modules the check uses import under that Python, and the cuda target's
                probe runs (NVML, onnxruntime's providers, TensorRT, torch);
  3. GPU        NVML, torch.cuda and nvidia-smi. Without a GPU: a self-check (a small rehearsal
                of the timing benchmark on the CPU), "found no GPU", exit 0;
  4. tests      tests/test_cuda_target.py with QUANTBENCH_REQUIRE_GPU=1: a GPU test fails
                instead of skipping;
  5. digits     suites/test_digits.py --target=cuda --results-db=off (torch on the GPU;
                onnxruntime's CPU build and tflite are n/a with their reasons);
  6. timing     benchmarks/cuda_timing_sync.py: quantbench's p50 against bare loops with and
                without torch.cuda.synchronize();
  7. OUT_DIR    summary.txt, run.json and results.csv of the digits run, timing_sync.json,
                gpu_check.log and gpu_check.tar.gz (the rest: parquet results and raw
                latencies, run.log, the tests' JUnit XML and output). At most 6 files, no folder.

Exit status: 0 when every check passed, or when there is no GPU and the self-check passed;
1 when a GPU is present and a check failed; 2 when the check itself cannot run (arguments,
wheels, a host-side import). --rehearse-on-cpu runs steps 4-7 against the local CPU target
(torch cases only, GPU checks relaxed): a rehearsal of the whole script on a machine without a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WHEELS = REPO / ".whl"
OUT_ENV = "QUANTBENCH_GPU_CHECK_OUT"
DEFAULT_BUDGET_S = 450.0  # the whole check, installs included; the device allows a 10-minute command
SUMMARY_RESERVE_S = 15.0  # kept back from the steps for the summary and the tarball
SSH_TEST = "tests/test_cuda_target.py::test_ssh_target_with_a_gpu_profile_runs_the_gpu_paths"
HALF_MODES = ("fp32", "bf16", "fp16")
# Host-side modules the check's steps import (pytest plugin, session, targets, runner backends, benchmark).
HOST_MODULES = ("harness.pytest_plugin", "harness.session", "harness.store", "harness.report", "harness.quantize",
                "harness.device_columns", "harness.history.pytest_gates", "targets", "targets.cuda",
                "harness.runner.__main__", "harness.runner.backend_torch", "harness.runner.sensors_nvml")


class CheckError(Exception):
    """The check itself cannot run (exit 2); the message says what to do."""


class Interrupted(Exception):
    """SIGTERM (e.g. the device tool's time limit): write what there is, then stop."""


# -- log, deadline, steps ------------------------------------------------------------------------
class Log:
    def __init__(self, path: Path) -> None:
        self.file = path.open("a", buffering=1)
        self.lock = threading.Lock()

    def __call__(self, text: str = "") -> None:
        with self.lock:
            print(text, flush=True)
            self.file.write(text + "\n")

    def quiet(self, text: str) -> None:
        """Into the log file only (long command output)."""
        with self.lock:
            self.file.write(text + "\n")


@dataclass
class Deadline:
    budget_s: float
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def timeout(self, cap: float) -> float:
        left = self.left() - SUMMARY_RESERVE_S
        if left < 5:
            raise CheckError(f"the check's budget of {self.budget_s:g} s is spent")
        return min(cap, left)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class StepResult:
    returncode: Optional[int]  # None: killed at its timeout
    output: str
    seconds: float


def run_step(log: Log, name: str, cmd: list[str], env: dict, timeout: float, echo: bool = True) -> StepResult:
    """Run one step in its own process group, its output streamed to the log; killed at `timeout`."""
    log(f"\n=== {name}: {' '.join(cmd)} (timeout {timeout:.0f} s)")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line)
            (log if echo else log.quiet)(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code: Optional[int] = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = None
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    reader.join(timeout=10)
    seconds = time.monotonic() - started
    log(f"=== {name}: {'timed out' if code is None else f'exit {code}'} after {seconds:.1f} s")
    return StepResult(code, "".join(lines), seconds)


# -- 1. wheels: a throwaway layer over this Python ------------------------------------------------
def _python_lines(python: str, code: str) -> str:
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout.strip()


def layer_wheels(log: Log, python: str, wheels: list[Path], work: Path) -> tuple[str, str]:
    """A venv over `python` holding the brought wheels; (its python, how). The runner gets no
    PYTHONPATH from the host (targets/local.py scrubs it), so the wheels must be in the
    interpreter's own site-packages for the runner processes to see them."""
    venv = work / "venv"
    try:
        subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True, text=True, timeout=120)
        layered = str(venv / "bin" / "python")
        site_dir = Path(_python_lines(layered, "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
        base_sites = json.loads(_python_lines(python, (
            "import json, site, sys; seen = list(site.getsitepackages()) + [p for p in sys.path if p.endswith(('site-packages', 'dist-packages'))]; "
            "print(json.dumps(list(dict.fromkeys(seen))))")))
        # An `import` line in a .pth runs at start-up; addsitedir also reads those directories' own .pth files.
        (site_dir / "_quantbench_gpu_check_base.pth").write_text(
            "import site; " + "; ".join(f"site.addsitedir({p!r})" for p in base_sites if Path(p).is_dir()) + "\n")
        target, how = site_dir, f"a venv layered over {python} ({venv}), its own packages through a .pth file"
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        log(f"wheels: no venv over {python} ({detail.strip()}); installing into a PYTHONPATH folder instead: "
            "the runner processes will not see these wheels")
        layered, target = python, work / "site"
        how = f"{target} on PYTHONPATH only (no venv could be made: the runner processes do not see them)"
    cmd = [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade",
           "--target", str(target), *map(str, wheels)]
    log(f"wheels: {' '.join(cmd)}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise CheckError(f"installing the brought wheels failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-1500:]}")
    return layered, how if layered != python else str(target)


# -- 2. host side: imports and the cuda target's probe (runs in the check's Python) -----------------------
def inspect(brought: list[str]) -> dict:
    """What the host side sees: imports, versions, the cuda target's probe, torch, nvidia-smi."""
    import importlib

    facts: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable, "host": platform.node()}
    for name in HOST_MODULES:
        importlib.import_module(name)
    facts["host_modules"] = list(HOST_MODULES)
    from harness import settings
    from harness.store import library_versions
    from targets.base import TargetConfig
    from targets.cuda import CudaTarget

    facts["versions"] = library_versions()
    facts["cpu_cores"] = os.cpu_count()
    cache = settings.cache_dir()
    facts["cuda_probe"] = CudaTarget(TargetConfig(name="cuda", kind="cuda"), cache).probe()
    import torch

    facts["torch"] = {"version": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
                      "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0}
    smi = shutil.which("nvidia-smi")
    if smi:
        proc = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
        facts["nvidia_smi"] = (proc.stdout or proc.stderr).strip()
    else:
        facts["nvidia_smi"] = None
    import importlib.metadata as metadata

    facts["brought"] = {}
    for name in brought:  # each brought distribution: its version, once its top-level modules import here
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            facts["brought"][name] = None
            continue
        tops = sorted({f.parts[0].removesuffix(".py") for f in dist.files or () if f.suffix == ".py" and len(f.parts) <= 2
                       and not f.parts[0].endswith((".dist-info", ".data"))})
        for top in tops:
            importlib.import_module(top)
        facts["brought"][name] = f"{dist.version} ({', '.join(tops)})"
    return facts


def gpu_present(facts: dict) -> tuple[bool, str]:
    """Whether any of NVML, torch or nvidia-smi sees a GPU, and what each said."""
    probe = facts.get("cuda_probe") or {}
    nvml = f"NVML sees {probe['gpu']['name']}" if "gpu" in probe else f"NVML: {probe.get('error', 'not probed')}"
    t = facts.get("torch") or {}
    torch_says = f"torch {t.get('version')} (CUDA build {t.get('cuda_build') or 'none'}): cuda available {t.get('cuda_available')}"
    smi = facts.get("nvidia_smi")
    smi_says = "nvidia-smi: not installed" if smi is None else f"nvidia-smi -L: {smi or '(nothing)'}"
    present = "gpu" in probe or bool(t.get("cuda_available")) or bool(smi and "GPU " in smi)
    return present, "; ".join((nvml, torch_says, smi_says))


# -- the modes ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mode:
    name: str  # gpu | cpu-rehearsal | self-check
    target: str  # the digits run's target
    require_gpu: bool  # QUANTBENCH_REQUIRE_GPU=1 for the tests; GPU columns required in the rows
    digits_filter: tuple[str, ...]  # extra pytest arguments for the digits run
    bench_args: tuple[str, ...]
    capped: bool = True  # each step within its own cap (GPU machine); else only within the budget

    def timeout(self, deadline: Deadline, cap: float) -> float:
        return deadline.timeout(cap if self.capped else deadline.budget_s)


GPU_MODE = Mode("gpu", "cuda", True, (), ("--device", "cuda", "--seconds", "1"))  # ~8 runner processes: ~70 s on the H200
REHEARSAL = Mode("cpu-rehearsal", "local", False,
                 ("-k", "digits-cnn-torch-fp32 or digits-cnn-torch-bf16 or digits-cnn-torch-fp16 or "
                        "digits-cnn-torch-dynamic-int8-torchao"),
                 ("--device", "cpu", "--width", "256", "--depth", "2", "--batch", "32", "--rounds", "1", "--seconds", "0.5",
                  "--threads", "1"),
                 capped=False)  # a CPU is far slower than the GPU machine (bf16 on a CPU without it: ~100 ms a call)
SELF_CHECK_BENCH = ("--device", "cpu", "--width", "64", "--depth", "1", "--batch", "8", "--rounds", "1", "--seconds", "0.1",
                    "--models", "chain", "--io", "device", "--threads", "1")  # one thread: no OpenMP spinning on a busy CPU


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


# -- main ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n")[0],
                                     epilog="Run it through scripts/gpu_check.sh; PYTHON=... picks the interpreter (default python3).")
    parser.add_argument("out", nargs="?", default=os.environ.get(OUT_ENV),
                        help=f"folder for the results (default ${OUT_ENV}, else results/gpu-check-<UTC time>)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--self-check", action="store_true", help="the no-GPU self-check even where a GPU is present")
    which.add_argument("--rehearse-on-cpu", action="store_true",
                       help="without a GPU: run the tests, the digits torch cases and the timing benchmark on the local CPU")
    parser.add_argument("--wheels", default=str(DEFAULT_WHEELS), help="folder of wheels brought along (default .whl/; absent is fine)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help=f"the whole check's time budget (default {DEFAULT_BUDGET_S:g})")
    parser.add_argument("--inspect", default=None, help=argparse.SUPPRESS)  # internal: write inspect() JSON to this file
    args = parser.parse_args(argv)
    if args.budget_s < 60:
        parser.error("--budget-s must be at least 60")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.inspect is not None:  # the host-side probe, run in the check's (layered) Python
        brought = [n for n in os.environ.get("QUANTBENCH_GPU_CHECK_BROUGHT", "").split(",") if n]
        Path(args.inspect).write_text(json.dumps(inspect(brought), indent=1, default=str))
        return 0
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = Path(args.out or REPO / "results" / f"gpu-check-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("summary.txt", "gpu_check.log", "run.json", "results.csv", "timing_sync.json", "gpu_check.tar.gz"):
        (out / name).unlink(missing_ok=True)  # a rerun into the same folder leaves no stale file
    log = Log(out / "gpu_check.log")
    work = Path(tempfile.mkdtemp(prefix="quantbench-gpu-check-"))
    deadline = Deadline(args.budget_s)

    def on_term(signum, frame):
        raise Interrupted(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    checks: list[Check] = []
    sections: list[tuple[str, list[str]]] = []
    facts: dict = {}
    gpu_says, how_wheels, mode_name = "not looked at", "none brought", "self-check"
    log(f"quantbench GPU check {started}: out {out}, work {work}, Python {sys.executable}, budget {args.budget_s:g} s")
    checks.append(Check("arguments and output folder", True, f"{out} (budget {args.budget_s:g} s)"))
    status = 0
    try:
        python = sys.executable
        wheels = sorted(Path(args.wheels).glob("*.whl")) if Path(args.wheels).is_dir() else []
        brought = sorted({w.name.split("-")[0].replace("_", "-").lower() for w in wheels})
        if wheels:
            python, where = layer_wheels(log, python, wheels, work)
            how_wheels = f"{', '.join(w.name for w in wheels)} into {where}"
        log(f"wheels: {how_wheels}")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               "PYTHONUNBUFFERED": "1", "QUANTBENCH_GPU_CHECK_BROUGHT": ",".join(brought)}
        if python == sys.executable and wheels:  # the fallback: a PYTHONPATH folder
            env["PYTHONPATH"] = os.pathsep.join([str(work / "site"), env["PYTHONPATH"]])

        step = run_step(log, "host side", [python, str(Path(__file__).resolve()), "--inspect", str(work / "inspect.json")], env,
                        deadline.timeout(240))
        if step.returncode != 0:
            raise CheckError(f"the host side does not import or probe under {python}: "
                             f"{' | '.join(step.output.strip().splitlines()[-4:])}")
        facts = json.loads((work / "inspect.json").read_text())
        missing = [n for n, v in facts["brought"].items() if v is None]
        checks.append(Check("wheels", not missing, how_wheels + (f"; NOT importable: {missing}" if missing else
                                                                  "".join(f"; {n} {v} imports" for n, v in facts["brought"].items()))))
        checks.append(Check("host side", True, f"{len(facts['host_modules'])} modules import under Python {facts['python']}, "
                                               f"torch {facts['torch']['version']}; the cuda target's probe ran"))
        present, gpu_says = gpu_present(facts)
        log(f"GPU: {'present' if present else 'none'}: {gpu_says}")

        if args.self_check or (not present and not args.rehearse_on_cpu):
            mode_name = "self-check" + ("" if present else " (no GPU found)")
            log("found no GPU: running the self-check" if not present else "--self-check: running the self-check despite the GPU")
            bench_json = work / "timing_sync.json"
            step = run_step(log, "timing benchmark rehearsal", [python, "benchmarks/cuda_timing_sync.py", *SELF_CHECK_BENCH,
                                                                 "--json", str(bench_json)], env, deadline.timeout(180))
            check, lines = timing_check(bench_json, step, gated=False)
            checks.append(check)
            sections.append(("timing rehearsal (CPU: not a synchronisation check)", lines))
            sections.append(("the GPU run is still to be done", [
                "on a machine with an NVIDIA GPU: scripts/gpu_check.sh OUT_DIR (docs/results/README.md has the device command)"]))
            status = 0 if all(c.ok for c in checks) else 2
            return status

        mode = GPU_MODE if present else REHEARSAL
        mode_name = mode.name
        gpu_name = (facts.get("cuda_probe") or {}).get("gpu", {}).get("name")
        if present and not gpu_name:
            checks.append(Check("GPU visible to quantbench", False, f"a GPU is present but the cuda target's probe failed: {gpu_says}"))

        # 4. the GPU tests
        junit = work / "tests_junit.xml"
        test_cmd = [python, "-m", "pytest", "tests/test_cuda_target.py", "-p", "no:cacheprovider", "-rA", "-q",
                    f"--junitxml={junit}"]
        deselected = why_deselect_ssh(python, env)
        if deselected:
            test_cmd += ["--deselect", SSH_TEST]
            sections.append(("deselected", [f"{SSH_TEST}: {deselected}"]))
        test_env = {**env, **({"QUANTBENCH_REQUIRE_GPU": "1"} if mode.require_gpu else {})}
        step = run_step(log, "GPU tests", test_cmd, test_env, mode.timeout(deadline, 240), echo=False)
        (work / "tests_output.txt").write_text(step.output)

        def tests_verdict(step=step) -> None:
            check, notes = junit_check(junit, step, mode.require_gpu)
            checks.append(check)
            sections.append(("tests: failures and skips", notes))

        analysed(log, checks, "GPU tests (tests/test_cuda_target.py)", tests_verdict)

        # 5. the digits suite on the target
        results_dir, run_id = work / "results", "gpu-check-digits"
        step = run_step(log, f"digits on {mode.target}",
                        [python, "-m", "pytest", "suites/test_digits.py", "-p", "no:cacheprovider", "-q", "-rs",
                         f"--target={mode.target}", "--results-db=off", f"--results-dir={results_dir}", f"--run-id={run_id}",
                         *mode.digits_filter], env, mode.timeout(deadline, 200))
        run_dir = results_dir / run_id
        analysed(log, checks, f"digits suite on {mode.target}",
                 lambda step=step: digits_verdict(run_dir, step, mode, gpu_name, out, checks, sections))

        # 6. timing synchronisation
        bench_json = work / "timing_sync.json"
        step = run_step(log, "timing synchronisation", [python, "benchmarks/cuda_timing_sync.py", *mode.bench_args,
                                                        "--json", str(bench_json)], env, mode.timeout(deadline, 200))

        def timing_verdict(step=step) -> None:
            check, lines = timing_check(bench_json, step, gated=mode.require_gpu)
            checks.append(check)
            sections.append(("timing (p50 of per-call times)", lines))

        analysed(log, checks, "timing synchronised (benchmarks/cuda_timing_sync.py)", timing_verdict)
        status = 0 if all(c.ok for c in checks) else 1  # a rehearsal that fails is a failure too
        return status
    except CheckError as exc:
        log(f"gpu_check: {exc}")
        checks.append(Check("the check itself", False, str(exc)))
        status = 2
        return status
    except (Interrupted, KeyboardInterrupt) as exc:
        log(f"gpu_check: interrupted ({exc}); writing what there is")
        checks.append(Check("the check itself", False, f"interrupted ({exc})"))
        status = 1
        return status
    except Exception as exc:  # a bug of the check or an unexpected state: the summary still gets written
        import traceback

        log(traceback.format_exc())
        checks.append(Check("the check itself", False, f"{type(exc).__name__}: {exc} (traceback in gpu_check.log)"))
        status = 2
        return status
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if (work / "timing_sync.json").is_file():
            shutil.copyfile(work / "timing_sync.json", out / "timing_sync.json")
        try:
            if (work / "inspect.json").is_file() or (work / "results").is_dir():
                write_tarball(out, work, log)
        except OSError as exc:
            log(f"gpu_check: no tarball: {exc}")
        elapsed = args.budget_s - deadline.left()
        # written last so that it lists every file, itself included
        (out / "summary.txt").write_text("")
        try:
            text = summary_text(mode_name, facts, gpu_says, how_wheels, checks, sections, started, elapsed, out)
        except Exception as exc:  # never leave without a summary: the checks as plain lines
            text = "\n".join([f"quantbench GPU check, {started}, mode {mode_name}: the summary failed ({exc!r})"]
                             + [f"  {'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}" for c in checks]) + "\n"
        (out / "summary.txt").write_text(text)
        log("\n" + text)
        log(f"gpu_check: exit {status}")
        shutil.rmtree(work, ignore_errors=True)


def why_deselect_ssh(python: str, env: dict) -> Optional[str]:
    """Why the ssh GPU-profile test cannot run here (it needs sshd and paramiko), or None."""
    from harness.testing.sshd import SSHD

    if not os.path.exists(SSHD):
        return f"no sshd here ({SSHD}: Debian's openssh-server)"
    proc = subprocess.run([python, "-c", "import paramiko"], env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return "paramiko does not import here (bring its wheels, with cryptography, bcrypt and pynacl, to run it)"
    return None


if __name__ == "__main__":  # through scripts/gpu_check.sh, which puts the repository on PYTHONPATH
    sys.exit(main(sys.argv[1:]))
