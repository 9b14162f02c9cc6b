"""The installed size of each runtime on this machine (MB on disk): edge users choose a runtime
by it as much as by its latency (a CPU torch wheel is hundreds of MB, executorch-numpy-runtime a
few). The size of a distribution is the sum of the files its installed RECORD lists
(importlib.metadata), its own package only: not its dependencies (torch's beside the ExecuTorch
bindings, numpy beside every one). Standard library only, Python 3.8+.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

# the row's `runtime` (a backend's runtime name) -> the distributions that provide it
RUNTIME_DISTRIBUTIONS = {
    "torch": ("torch",),
    "executorch": ("executorch",),
    "executorch-numpy-runtime": ("executorch-numpy-runtime",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino"),
    "ai_edge_litert": ("ai-edge-litert",),
    "tflite_runtime": ("tflite-runtime",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
}
REPORTED = ("torch", "executorch", "executorch-numpy-runtime", "ai_edge_litert", "tflite_runtime", "onnxruntime")


def distribution_mb(dist: str) -> Optional[float]:
    """MB on disk of an installed distribution's files, or None when it is not installed."""
    try:
        from importlib import metadata
    except ImportError:  # Python < 3.8
        return None
    try:
        found = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return None
    total = 0
    for entry in found.files or ():
        try:
            total += os.stat(str(entry.locate())).st_size
        except OSError:
            continue
    return round(total / (1024.0 * 1024.0), 1)


def runtime_mb(runtime: str) -> Optional[float]:
    """The installed size of the runtime a row names (its first installed distribution)."""
    for dist in RUNTIME_DISTRIBUTIONS.get(runtime, (runtime,)):
        size = distribution_mb(dist)
        if size is not None:
            return size
    return None


def footprints() -> Dict[str, float]:
    """runtime -> MB on disk, for each runtime installed here (`targets check`)."""
    found = {}
    for runtime in REPORTED:
        size = runtime_mb(runtime)
        if size is not None:
            found[runtime] = size
    return found
