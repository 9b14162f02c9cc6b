"""The GPU check's side of this machine (scripts/gpu_check.py loads this file): the errors that stop
it, its log and time budget, each step as a process of its own, the wheels' layer over this
Python, and the host-side probe (imports, versions, the cuda target's probe, torch, nvidia-smi).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent.parent
SUMMARY_RESERVE_S = 15.0  # kept back from the steps for the summary and the tarball
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
