"""Target adapters, one per kind of place to run. `KINDS` maps a kind to its class."""
from __future__ import annotations

from pathlib import Path

from targets.base import RunnerJob, RunnerOutcome, Target, TargetConfig, TargetError, TargetInfo
from targets.cuda import CudaTarget
from targets.inventory import load_inventory
from targets.local import LocalTarget
from targets.ssh import SshTarget

KINDS: dict[str, type[Target]] = {
    "local": LocalTarget,
    "cuda": CudaTarget,  # this machine's NVIDIA GPU
    "ssh": SshTarget,  # a remote device over SSH (Raspberry Pi, Jetson, any Linux box)
}


def open_target(config: TargetConfig, cache_dir: Path) -> Target:
    if config.kind not in KINDS:
        raise TargetError(f"target {config.name}: kind {config.kind!r} is not supported by this version (known: {', '.join(KINDS)})")
    return KINDS[config.kind](config, cache_dir)


__all__ = ["KINDS", "RunnerJob", "RunnerOutcome", "Target", "TargetConfig", "TargetError", "TargetInfo", "load_inventory", "open_target"]
