"""Facts about the machine and this process (standard library only)."""
from __future__ import annotations

import os
import platform
import resource
import socket
import sys


def peak_rss_mb() -> float:
    """Peak resident set size of this process since it started its program.

    Linux: VmHWM, the high-water mark of this program's own memory. Not ru_maxrss: the kernel
    carries ru_maxrss across execve, so a runner started by a large host process (vfork + exec,
    as subprocess does) reported the host's peak whenever it was the larger (a 140 MB digits
    runner read 211 MB under a pytest that had loaded a history baseline). Elsewhere ru_maxrss
    (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _cpuinfo_value(*keys: str) -> str:
    """The first /proc/cpuinfo value under any of `keys` ('' when none or unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> str:
    """The CPU's feature flags, space-separated (x86 `flags`, ARM `Features`); '' if unknown."""
    return _cpuinfo_value("flags", "Features")


def cpu_model() -> str:
    model = _cpuinfo_value("model name", "Model", "Hardware")
    if model:
        return model
    try:  # arm64 boards without a model line in /proc/cpuinfo (Jetson): the device tree names the board
        with open("/proc/device-tree/model") as f:
            model = f.read().strip().strip("\x00")
        if model:
            return model
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int:
    """Distinct (physical id, core id) pairs from /proc/cpuinfo, else the logical count."""
    cores = set()
    try:
        with open("/proc/cpuinfo") as f:
            phys = core = None
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not line.strip():
                    if core is not None:
                        cores.add((phys, core))
                    phys = core = None
            if core is not None:
                cores.add((phys, core))
    except OSError:
        pass
    return len(cores) or (os.cpu_count() or 1)


def describe() -> dict:
    return {
        "host": socket.gethostname(),
        "python_version": platform.python_version(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "cpu_flags": cpu_flags(),  # what recipes check (e.g. float16 arithmetic) on any target
    }
