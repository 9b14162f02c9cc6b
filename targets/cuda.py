"""The cuda target: the runner in a fresh subprocess on this machine, on one NVIDIA GPU.

    [targets.gpu]
    kind = "cuda"
    gpu = 0                    # NVML index (nvidia-smi's numbering) or a UUID "GPU-..."; default 0
    inputs_on_device = false   # true: inputs copied to the GPU before the timed region, outputs left there
    # profile defaults to "nvidia-gpu" (GPU energy through NVML); cuda_provider_options = {...}
    # are passed to onnxruntime's CUDAExecutionProvider

It is the local target (same subprocess machinery) with three additions: the runner sees
only the chosen board (CUDA_VISIBLE_DEVICES=<its UUID>, so `cuda:0` in every runtime is
the board NVML measures), the backends get GPU options (gpu_options), and the sensors
get that UUID. The GPU's facts come from a probe run with the target's own Python.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from typing import Any, Callable, Mapping, Optional

from harness.runner.protocol import RunnerConfig
from targets.base import RunnerJob, RunnerOutcome, TargetError, TargetInfo
from targets.local import LocalTarget

DEFAULT_PROFILE = "nvidia-gpu"
# Profiles of ssh targets whose runner uses the same GPU paths remotely (gpu_options).
GPU_PROFILES = ("nvidia-gpu", "jetson-orin", "jetson-nano")
PROBE_TIMEOUT_S = 180.0
_PROBED: dict = {}  # (python, gpu selector) -> probe facts: one probe per process, however many sessions
# Frameworks a cuda target cannot run on its GPU, and why (their cases are n/a).
UNSUPPORTED_FRAMEWORKS = {
    "tflite": ("LiteRT has no CUDA path: its GPU delegate targets mobile GPUs (OpenCL, OpenGL ES, Metal), "
               "so a tflite case on a cuda target would only measure the host CPU; run tflite on a local or ssh target"),
}


def onnxruntime_reason(facts: Mapping[str, Any], python: str) -> Optional[str]:
    """Why onnxruntime cannot run on the GPU of a cuda target whose probe saw these facts, or None.

    The CPU build (the plain `onnxruntime` wheel) has no CUDAExecutionProvider: a case would
    either fail in the runner or, worse, measure the host CPU under a GPU target's name."""
    providers = facts.get("onnxruntime_providers")
    if providers is None or "CUDAExecutionProvider" in providers:
        return None
    have = f"it has {', '.join(providers)}" if providers else "onnxruntime does not import there"
    return (f"onnxruntime for {python} is not the GPU build: it has no CUDAExecutionProvider ({have}); "
            "install onnxruntime-gpu in place of onnxruntime (requirements/gpu.txt) to run onnxruntime on this GPU")

# Runs in the target's Python with the staged runner on PYTHONPATH; prints one JSON line.
PROBE = r"""
import ctypes, importlib.util, json, sys
from runner import sensors_nvml
facts = {}
try:
    nv = sensors_nvml.nvml()
    facts["gpu"] = sensors_nvml.describe(nv, sensors_nvml.device_handle(nv, json.loads(sys.argv[1])))
except Exception as exc:  # NoSensor says why; anything else NVML raised names itself
    facts["error"] = str(exc) if isinstance(exc, sensors_nvml.NoSensor) else f"{type(exc).__name__}: {exc}"
try:
    import onnxruntime
    facts["onnxruntime_providers"] = onnxruntime.get_available_providers()
except ImportError:
    facts["onnxruntime_providers"] = []
try:
    ctypes.CDLL("libnvinfer.so.10")
    facts["tensorrt"] = {"loadable": True}
except OSError as exc:
    facts["tensorrt"] = {"loadable": False, "reason": str(exc)}
if importlib.util.find_spec("torch") is not None:
    import torch
    facts["torch"] = {"version": torch.__version__, "cuda_build": torch.version.cuda,
                      "cuda_available": torch.cuda.is_available()}
print(json.dumps(facts))
"""


def on_gpu(kind: str, profile: str) -> bool:
    """Whether a target of this kind and profile runs the frameworks' GPU paths."""
    return kind == "cuda" or (kind == "ssh" and profile in GPU_PROFILES)


def gpu_options(framework: str, settings: Mapping[str, Any]) -> dict:
    """Runner options that put `framework` on the GPU (also for ssh targets with a GPU profile)."""
    io = "device" if settings.get("inputs_on_device", False) else "host"
    if framework == "onnxruntime":
        cuda = {"device_id": 0, **dict(settings.get("cuda_provider_options", {}))}
        return {"providers": [["CUDAExecutionProvider", cuda], "CPUExecutionProvider"], "io": io}
    if framework == "torch":
        return {"device": "cuda", "io": io}
    return {}


class CudaTarget(LocalTarget):
    def __init__(self, config, cache_dir) -> None:
        super().__init__(config, cache_dir)
        self._check_settings()

    def _check_settings(self) -> None:
        where = f"target {self.config.name} (kind cuda)"
        gpu = self.config.settings.get("gpu", 0)
        if not (isinstance(gpu, int) and gpu >= 0) and not (isinstance(gpu, str) and gpu.startswith(("GPU-", "MIG-"))):
            raise TargetError(f"{where}: gpu must be an NVML index (0, 1, ...) or a UUID like 'GPU-...', not {gpu!r}")
        if not isinstance(self.config.settings.get("inputs_on_device", False), bool):
            raise TargetError(f"{where}: inputs_on_device must be true or false")

    @property
    def profile(self) -> str:
        # An inventory entry without a profile gets generic-linux; a GPU's sensors are NVML's.
        return DEFAULT_PROFILE if self.config.profile == "generic-linux" else self.config.profile

    def _probe_key(self) -> tuple:
        return self.config.python or sys.executable, json.dumps(self.config.settings.get("gpu", 0))

    def probe(self) -> dict:
        """The GPU, onnxruntime's providers, TensorRT and torch as the target's Python sees them."""
        python, selector = key = self._probe_key()
        if key not in _PROBED:
            try:
                proc = subprocess.run([python, "-c", PROBE, selector], env=self.environment(), capture_output=True,
                                      text=True, timeout=PROBE_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise TargetError(f"target {self.config.name} (kind cuda): the GPU probe did not run with {python}: {exc}") from exc
            lines = proc.stdout.strip().splitlines()
            if proc.returncode != 0 or not lines:
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                raise TargetError(f"target {self.config.name} (kind cuda): the GPU probe failed with {python}: {tail}")
            _PROBED[key] = json.loads(lines[-1])
        return _PROBED[key]

    def info(self) -> TargetInfo:
        facts = self.probe()
        base = super().info()
        if "error" in facts:
            raise TargetError(
                f"target {self.config.name} (kind cuda): no CUDA device: {facts['error']}. Check that `nvidia-smi` "
                f"lists a GPU on {base.host} and that the gpu extra is installed for {self.config.python or sys.executable}")
        gpu = facts["gpu"]
        extra = {key: facts[key] for key in ("onnxruntime_providers", "tensorrt", "torch") if key in facts}
        unsupported = dict(UNSUPPORTED_FRAMEWORKS)
        ort = onnxruntime_reason(facts, self.config.python or sys.executable)
        if ort:
            unsupported["onnxruntime"] = ort
        return replace(base, profile=self.profile, device=gpu["name"],
                       facts={**base.facts, **extra, "gpu": gpu, "unsupported_frameworks": unsupported})

    def environment(self) -> dict:
        env = super().environment()
        uuid = _PROBED.get(self._probe_key(), {}).get("gpu", {}).get("uuid")
        if uuid:  # the runtimes see only this board, as cuda:0
            env["CUDA_VISIBLE_DEVICES"] = uuid
        return env

    def run(self, job: RunnerJob, progress: Callable[[str], None] = lambda m: None) -> RunnerOutcome:
        gpu = self.probe().get("gpu") or {}
        config = RunnerConfig.of(job.config)
        options = {**gpu_options(config.framework, self.config.settings), **dict(config.options or {})}
        sensing = dict(config.sensors or {})
        sensing["profile"] = self.profile
        sensing["settings"] = {**dict(sensing.get("settings") or {}), "gpu": gpu.get("uuid", self.config.settings.get("gpu", 0))}
        return super().run(replace(job, config=replace(config, options=options, sensors=sensing)), progress)
