"""The local target: the runner in a fresh subprocess on this machine, one per case,
so peak memory belongs to that case alone."""
from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from typing import Callable

import numpy as np

from dataclasses import replace

from harness.runner import system
from harness.runner.protocol import FormatError, RunnerConfig, RunnerResult
from harness.runner_bundle import stage_runner
from targets.base import RunnerJob, RunnerOutcome, Target, TargetInfo
from targets.runner_registry import RunnerRegistry

# Variables that would change what the runner measures if inherited from the host.
SCRUBBED_ENV = ("TF_USE_LEGACY_KERAS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONPATH")


def runner_env(runner_parent) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["PYTHONPATH"] = str(runner_parent)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def failed(reason: str, log: str = "") -> RunnerOutcome:
    """An outcome for a runner that left no result the host can read."""
    return RunnerOutcome(RunnerResult.failed(reason).to_dict(), None, log)


def read_result(path) -> RunnerResult:
    """A result.json, of this format version or an older one (FormatError for a newer one)."""
    return RunnerResult.from_json(path.read_text(), f"the runner's {path}")


def collect(job: RunnerJob, log: str, timed_out_after: float = 0.0) -> RunnerOutcome:
    """Read the result and outputs the runner left in the job's work directory."""
    result_path = job.work_dir / "result.json"
    if timed_out_after:
        return failed(f"runner exceeded the case timeout of {timed_out_after:g} s and was killed", log)
    if not result_path.is_file():
        tail = " | ".join(log.strip().splitlines()[-3:]) or "no output"
        return failed(f"runner died without a result ({tail})", log)
    try:
        result = read_result(result_path)
    except FormatError as exc:
        return failed(str(exc), log)
    outputs = None
    if result.ok:
        with np.load(job.work_dir / "outputs.npz", allow_pickle=False) as npz:
            outputs = {k: npz[k] for k in npz.files}
    return RunnerOutcome(result.to_dict(), outputs, log)


class LocalTarget(Target):
    def __init__(self, config, cache_dir) -> None:
        super().__init__(config, cache_dir)
        self.registry = RunnerRegistry(self.cache_dir)
        self._reaped = False

    def environment(self) -> dict:
        """The runner's environment (the cuda target adds CUDA_VISIBLE_DEVICES)."""
        return runner_env(stage_runner(self.cache_dir / "runner"))

    def info(self) -> TargetInfo:
        facts = system.describe()
        return TargetInfo(
            name=self.config.name,
            kind=self.config.kind,
            profile=self.config.profile,
            threads=self.config.threads or facts["physical_cores"],
            arch=platform.machine(),
            device=facts["cpu_model"],
            host=facts["host"],
            facts=facts,
        )

    def run(self, job: RunnerJob, progress: Callable[[str], None] = lambda m: None) -> RunnerOutcome:
        job.work_dir.mkdir(parents=True, exist_ok=True)
        config = replace(
            RunnerConfig.of(job.config),
            artifact=str(job.artifact_dir / job.model_file),
            manifest=dict(job.manifest),
            inputs=str(job.inputs_file),
            outputs=str(job.work_dir / "outputs.npz"),
            result=str(job.work_dir / "result.json"),
        )
        (job.work_dir / "result.json").unlink(missing_ok=True)
        config_path = job.work_dir / "config.json"
        config_path.write_text(config.to_json(indent=1))
        python = self.config.python or sys.executable
        leftovers = "" if self._reaped else "".join(f"[{self.config.name}] {line}\n" for line in self.registry.reap())
        self._reaped = True  # once per run: before its first case is timed
        proc = subprocess.Popen(
            [python, "-m", "runner", str(config_path)],
            cwd=job.work_dir,
            env=self.environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # own process group: Ctrl-C does not reach it; we end it ourselves
        )
        self.registry.add(proc.pid, job.case_id, job.work_dir)
        try:
            log, _ = proc.communicate(timeout=self.config.case_timeout_s)
            return collect(job, leftovers + log)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            log, _ = proc.communicate()
            return collect(job, leftovers + log, timed_out_after=self.config.case_timeout_s)
        except BaseException:  # Ctrl-C, SIGTERM (the plugin raises it), anything else: no runner outlives its run
            kill_group(proc)
            proc.wait()
            raise
        finally:
            self.registry.remove(proc.pid)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the runner's process group (the runner and anything it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
