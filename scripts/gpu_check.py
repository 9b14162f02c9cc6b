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
  5. digits     suites/test_digits.py --target=cuda --qb-results-db=off --qb-profile=nightly
                (one round; not the mixed "auto" search): torch on the GPU (eager: reference
                numerics, nightly-only since issue 21); onnxruntime's CPU build and tflite are
                n/a with their reasons;
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
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WHEELS = REPO / ".whl"
OUT_ENV = "QUANTBENCH_GPU_CHECK_OUT"
DEFAULT_BUDGET_S = 450.0  # the whole check, installs included; the device allows a 10-minute command
SSH_TEST = "tests/test_cuda_target.py::test_ssh_target_with_a_gpu_profile_runs_the_gpu_paths"
OUT_FILES = ("summary.txt", "gpu_check.log", "run.json", "results.csv", "timing_sync.json", "gpu_check.tar.gz")


def _load(name: str, path: Path):
    """A part of this script from its file: scripts/ is a folder of scripts, not a package (and the
    tests load this script from its file too)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


host = _load("quantbench_gpu_check_host", REPO / "scripts" / "gpu_check" / "host.py")  # log, budget, processes, probe
verdicts = _load("quantbench_gpu_check_verdicts", REPO / "scripts" / "gpu_check" / "verdicts.py")  # checks, summary
CheckError, Interrupted, Log, Deadline, StepResult, run_step = (
    host.CheckError, host.Interrupted, host.Log, host.Deadline, host.StepResult, host.run_step)
Check, analysed, digits_verdict = verdicts.Check, verdicts.analysed, verdicts.digits_verdict


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


GPU_MODE = Mode("gpu", "cuda", True, ("-k", "not test_auto"), ("--device", "cuda", "--seconds", "1"))  # ~8 runner processes: ~70 s on the H200
REHEARSAL = Mode("cpu-rehearsal", "local", False,
                 ("-k", "digits-cnn-torch-fp32 or digits-cnn-torch-bf16 or digits-cnn-torch-fp16 or "
                        "digits-cnn-torch-dynamic-int8-torchao"),
                 ("--device", "cpu", "--width", "256", "--depth", "2", "--batch", "32", "--rounds", "1", "--seconds", "0.5",
                  "--threads", "1"),
                 capped=False)  # a CPU is far slower than the GPU machine (bf16 on a CPU without it: ~100 ms a call)
SELF_CHECK_BENCH = ("--device", "cpu", "--width", "64", "--depth", "1", "--batch", "8", "--rounds", "1", "--seconds", "0.1",
                    "--models", "chain", "--io", "device", "--threads", "1")  # one thread: no OpenMP spinning on a busy CPU


# -- the check's state, and its steps in the order of the summary above ----------------------------------
@dataclass
class Run:
    """One check: where it writes, what it found so far, and the checks and sections of its summary."""

    out: Path
    work: Path
    log: Log
    deadline: Deadline
    started: str
    checks: list[Check] = field(default_factory=list)
    sections: list[tuple[str, list[str]]] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    gpu_says: str = "not looked at"
    how_wheels: str = "none brought"
    mode_name: str = "self-check"
    python: str = sys.executable
    env: dict = field(default_factory=dict)

    def step(self, name: str, cmd: list[str], timeout: float, echo: bool = True, env: Optional[dict] = None) -> StepResult:
        return run_step(self.log, name, cmd, self.env if env is None else env, timeout, echo=echo)

    def passed(self) -> bool:
        return all(c.ok for c in self.checks)


def start(args: argparse.Namespace) -> Run:
    """OUT_DIR (emptied of a previous run's files), the log, a work folder, the budget, SIGTERM."""
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = Path(args.out or REPO / "results" / f"gpu-check-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in OUT_FILES:
        (out / name).unlink(missing_ok=True)  # a rerun into the same folder leaves no stale file
    run = Run(out, Path(tempfile.mkdtemp(prefix="quantbench-gpu-check-")), Log(out / "gpu_check.log"), Deadline(args.budget_s),
              started)

    def on_term(signum, frame):
        raise Interrupted(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    run.log(f"quantbench GPU check {started}: out {out}, work {run.work}, Python {sys.executable}, budget {args.budget_s:g} s")
    run.checks.append(Check("arguments and output folder", True, f"{out} (budget {args.budget_s:g} s)"))
    return run


def bring_wheels(run: Run, folder: str) -> list[str]:
    """1. The brought wheels in a layer over this Python; the steps' Python and environment. Returns
    the brought distributions' names."""
    wheels = sorted(Path(folder).glob("*.whl")) if Path(folder).is_dir() else []
    brought = sorted({w.name.split("-")[0].replace("_", "-").lower() for w in wheels})
    if wheels:
        run.python, where = host.layer_wheels(run.log, run.python, wheels, run.work)
        run.how_wheels = f"{', '.join(w.name for w in wheels)} into {where}"
    run.log(f"wheels: {run.how_wheels}")
    run.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               "PYTHONUNBUFFERED": "1", "QUANTBENCH_GPU_CHECK_BROUGHT": ",".join(brought)}
    if run.python == sys.executable and wheels:  # the fallback: a PYTHONPATH folder
        run.env["PYTHONPATH"] = os.pathsep.join([str(run.work / "site"), run.env["PYTHONPATH"]])
    return brought


def host_side(run: Run) -> bool:
    """2 and 3. The host side imports and probes under the steps' Python; whether a GPU is present."""
    step = run.step("host side", [run.python, str(Path(__file__).resolve()), "--inspect", str(run.work / "inspect.json")],
                    run.deadline.timeout(240))
    if step.returncode != 0:
        raise CheckError(f"the host side does not import or probe under {run.python}: "
                         f"{' | '.join(step.output.strip().splitlines()[-4:])}")
    facts = run.facts = json.loads((run.work / "inspect.json").read_text())
    missing = [n for n, v in facts["brought"].items() if v is None]
    run.checks.append(Check("wheels", not missing, run.how_wheels + (f"; NOT importable: {missing}" if missing else
                                                                     "".join(f"; {n} {v} imports" for n, v in facts["brought"].items()))))
    run.checks.append(Check("host side", True, f"{len(facts['host_modules'])} modules import under Python {facts['python']}, "
                                               f"torch {facts['torch']['version']}; the cuda target's probe ran"))
    present, run.gpu_says = host.gpu_present(facts)
    run.log(f"GPU: {'present' if present else 'none'}: {run.gpu_says}")
    return present


def self_check(run: Run, present: bool) -> int:
    """No GPU (or --self-check): a CPU rehearsal of the timing benchmark; 0 when it passed, else 2."""
    run.mode_name = "self-check" + ("" if present else " (no GPU found)")
    run.log("found no GPU: running the self-check" if not present else "--self-check: running the self-check despite the GPU")
    bench_json = run.work / "timing_sync.json"
    step = run.step("timing benchmark rehearsal", [run.python, "benchmarks/cuda_timing_sync.py", *SELF_CHECK_BENCH,
                                                   "--json", str(bench_json)], run.deadline.timeout(180))
    check, lines = verdicts.timing_check(bench_json, step, gated=False)
    run.checks.append(check)
    run.sections.append(("timing rehearsal (CPU: not a synchronisation check)", lines))
    run.sections.append(("the GPU run is still to be done", [
        "on a machine with an NVIDIA GPU: scripts/gpu_check.sh OUT_DIR (docs/results/README.md has the device command)"]))
    return 0 if run.passed() else 2


def gpu_tests(run: Run, mode: Mode) -> None:
    """4. tests/test_cuda_target.py, GPU tests failing instead of skipping (QUANTBENCH_REQUIRE_GPU=1)."""
    junit = run.work / "tests_junit.xml"
    test_cmd = [run.python, "-m", "pytest", "tests/test_cuda_target.py", "-p", "no:cacheprovider", "-rA", "-q",
                f"--junitxml={junit}"]
    deselected = why_deselect_ssh(run.python, run.env)
    if deselected:
        test_cmd += ["--deselect", SSH_TEST]
        run.sections.append(("deselected", [f"{SSH_TEST}: {deselected}"]))
    test_env = {**run.env, **({"QUANTBENCH_REQUIRE_GPU": "1"} if mode.require_gpu else {})}
    step = run.step("GPU tests", test_cmd, mode.timeout(run.deadline, 240), echo=False, env=test_env)
    (run.work / "tests_output.txt").write_text(step.output)

    def tests_verdict(step=step) -> None:
        check, notes = verdicts.junit_check(junit, step, mode.require_gpu)
        run.checks.append(check)
        run.sections.append(("tests: failures and skips", notes))

    analysed(run.log, run.checks, "GPU tests (tests/test_cuda_target.py)", tests_verdict)


def digits(run: Run, mode: Mode, gpu_name: Optional[str]) -> None:
    """5. suites/test_digits.py on the mode's target; its rows checked, run.json and results.csv kept."""
    results_dir, run_id = run.work / "results", "gpu-check-digits"
    step = run.step(f"digits on {mode.target}",
                    [run.python, "-m", "pytest", "suites/test_digits.py", "-p", "no:cacheprovider", "-q", "-rs",
                     f"--target={mode.target}", "--qb-results-db=off", f"--qb-results-dir={results_dir}", f"--qb-run-id={run_id}",
                     # the eager torch rows (the GPU's torch rows until AOTI CUDA packages exist) are
                     # reference numerics, nightly-only (issue 21): one round of the nightly set
                     "--qb-profile=nightly", "--qb-rounds=1", *mode.digits_filter], mode.timeout(run.deadline, 200))
    run_dir = results_dir / run_id
    analysed(run.log, run.checks, f"digits suite on {mode.target}",
             lambda step=step: digits_verdict(run_dir, step, mode, gpu_name, run.out, run.checks, run.sections))


def timing(run: Run, mode: Mode) -> None:
    """6. benchmarks/cuda_timing_sync.py: quantbench's p50 against bare loops with and without a sync."""
    bench_json = run.work / "timing_sync.json"
    step = run.step("timing synchronisation", [run.python, "benchmarks/cuda_timing_sync.py", *mode.bench_args,
                                               "--json", str(bench_json)], mode.timeout(run.deadline, 200))

    def timing_verdict(step=step) -> None:
        check, lines = verdicts.timing_check(bench_json, step, gated=mode.require_gpu)
        run.checks.append(check)
        run.sections.append(("timing (p50 of per-call times)", lines))

    analysed(run.log, run.checks, "timing synchronised (benchmarks/cuda_timing_sync.py)", timing_verdict)


def finish(run: Run, budget_s: float, status: int) -> None:
    """7. OUT_DIR: timing_sync.json, the tarball, and summary.txt last (it lists every file, itself included)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    out, work, log = run.out, run.work, run.log
    if (work / "timing_sync.json").is_file():
        shutil.copyfile(work / "timing_sync.json", out / "timing_sync.json")
    try:
        if (work / "inspect.json").is_file() or (work / "results").is_dir():
            verdicts.write_tarball(out, work, log)
    except OSError as exc:
        log(f"gpu_check: no tarball: {exc}")
    elapsed = budget_s - run.deadline.left()
    (out / "summary.txt").write_text("")
    try:
        text = verdicts.summary_text(run.mode_name, run.facts, run.gpu_says, run.how_wheels, run.checks, run.sections,
                                     run.started, elapsed, out)
    except Exception as exc:  # never leave without a summary: the checks as plain lines
        text = "\n".join([f"quantbench GPU check, {run.started}, mode {run.mode_name}: the summary failed ({exc!r})"]
                         + [f"  {'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}" for c in run.checks]) + "\n"
    (out / "summary.txt").write_text(text)
    log("\n" + text)
    log(f"gpu_check: exit {status}")
    shutil.rmtree(work, ignore_errors=True)


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
        Path(args.inspect).write_text(json.dumps(host.inspect(brought), indent=1, default=str))
        return 0
    run = start(args)
    status = 0
    try:
        bring_wheels(run, args.wheels)  # 1
        present = host_side(run)  # 2, 3
        if args.self_check or (not present and not args.rehearse_on_cpu):
            status = self_check(run, present)
            return status
        mode = GPU_MODE if present else REHEARSAL
        run.mode_name = mode.name
        gpu_name = (run.facts.get("cuda_probe") or {}).get("gpu", {}).get("name")
        if present and not gpu_name:
            run.checks.append(Check("GPU visible to quantbench", False,
                                    f"a GPU is present but the cuda target's probe failed: {run.gpu_says}"))
        gpu_tests(run, mode)  # 4
        digits(run, mode, gpu_name)  # 5
        timing(run, mode)  # 6
        status = 0 if run.passed() else 1  # a rehearsal that fails is a failure too
        return status
    except CheckError as exc:
        run.log(f"gpu_check: {exc}")
        run.checks.append(Check("the check itself", False, str(exc)))
        status = 2
        return status
    except (Interrupted, KeyboardInterrupt) as exc:
        run.log(f"gpu_check: interrupted ({exc}); writing what there is")
        run.checks.append(Check("the check itself", False, f"interrupted ({exc})"))
        status = 1
        return status
    except Exception as exc:  # a bug of the check or an unexpected state: the summary still gets written
        import traceback

        run.log(traceback.format_exc())
        run.checks.append(Check("the check itself", False, f"{type(exc).__name__}: {exc} (traceback in gpu_check.log)"))
        status = 2
        return status
    finally:
        finish(run, args.budget_s, status)  # 7


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
