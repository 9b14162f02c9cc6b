"""The GPU of a device, as the device itself reports it (standard library only, Python 3.8+).

Asked by `runner.facts --gpu` on targets whose profile has a GPU (an ssh nvidia-gpu host, a
Jetson). Three sources, in order, each adding its reason when it cannot answer:
  - NVML (nvidia-ml-py), the full description of a discrete GPU (sensors_nvml.describe);
  - the CUDA driver API through ctypes (libcuda.so.1: cuDeviceGetAttribute), which is also
    there on a Jetson, where NVML is not;
  - the SoC in the device tree (`/proc/device-tree/compatible`): each Tegra SoC has one GPU
    with a fixed compute capability (NVIDIA's CUDA GPU list), for a Jetson whose CUDA driver
    cannot be loaded by this Python.
The answer has `compute_capability` ("8.7") and `source`; with none, {"error": the reasons}.
A replayed tree (root other than "/") is read for the device tree only: the live driver APIs
describe this machine, not the recorded one.
"""
from __future__ import annotations

import ctypes
import os
from typing import Any, Dict, List, Optional

# Tegra SoC (device-tree compatible) -> (GPU, compute capability)
TEGRA_GPUS = {
    "nvidia,tegra234": ("Orin (nvgpu)", "8.7"),  # Jetson AGX Orin, Orin NX, Orin Nano
    "nvidia,tegra194": ("Xavier (nvgpu)", "7.2"),  # Jetson AGX Xavier, Xavier NX
    "nvidia,tegra186": ("TX2 (nvgpu)", "6.2"),
    "nvidia,tegra210": ("TX1/Nano (nvgpu)", "5.3"),  # Jetson Nano, TX1
}
CU_DEVICE_ATTRIBUTE_INTEGRATED = 18
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76


def from_nvml(index: int) -> Dict[str, Any]:
    from . import sensors_nvml

    nv = sensors_nvml.nvml()  # NoSensor with the reason
    facts = sensors_nvml.describe(nv, sensors_nvml.device_handle(nv, index))
    facts["source"] = "NVML"
    return facts


def from_cuda_driver(index: int) -> Dict[str, Any]:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise LookupError(f"the CUDA driver library cannot be loaded ({exc})")

    def check(result: int, what: str) -> None:
        if result != 0:
            raise LookupError(f"the CUDA driver API failed in {what} (CUresult {result})")

    check(cuda.cuInit(0), "cuInit")
    count, device, value = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    check(cuda.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
    if not 0 <= index < count.value:
        raise LookupError(f"the CUDA driver sees {count.value} GPU(s), not a GPU {index}")
    check(cuda.cuDeviceGet(ctypes.byref(device), index), "cuDeviceGet")

    def attribute(code: int) -> int:
        check(cuda.cuDeviceGetAttribute(ctypes.byref(value), code, device), "cuDeviceGetAttribute")
        return value.value

    name = ctypes.create_string_buffer(256)
    check(cuda.cuDeviceGetName(name, 256, device), "cuDeviceGetName")
    total = ctypes.c_size_t()
    memory = total.value / (1024.0 * 1024.0) if cuda.cuDeviceTotalMem_v2(ctypes.byref(total), device) == 0 else None
    driver = ctypes.c_int()
    version = driver.value if cuda.cuDriverGetVersion(ctypes.byref(driver)) == 0 else 0
    major = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
    minor = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
    return {"name": name.value.decode(errors="replace"), "index": index, "compute_capability": f"{major}.{minor}",
            "integrated": bool(attribute(CU_DEVICE_ATTRIBUTE_INTEGRATED)), "memory_total_mb": memory,
            "cuda_driver_version": f"{version // 1000}.{(version % 1000) // 10}" if version else None,
            "source": "CUDA driver API (libcuda.so.1)"}


def from_device_tree(root: str) -> Dict[str, Any]:
    path = os.path.join(root, "proc/device-tree/compatible")
    try:
        with open(path, "rb") as f:
            compatible = [c.decode(errors="replace") for c in f.read().split(b"\0") if c]
    except OSError as exc:
        raise LookupError(f"no device tree to name the SoC ({path}: {exc.strerror or exc})")
    for entry in compatible:
        if entry in TEGRA_GPUS:
            gpu, capability = TEGRA_GPUS[entry]
            return {"name": f"NVIDIA Tegra {gpu}", "compute_capability": capability, "integrated": True,
                    "soc": entry, "board": compatible[0],
                    "source": f"device tree ({entry} in {path}; NVIDIA's compute capability of that SoC)"}
    raise LookupError(f"the device tree names no Tegra SoC with a known GPU ({', '.join(compatible) or 'empty'})")


def describe_gpu(root: str = "/", index: int = 0) -> Dict[str, Any]:
    """The GPU's facts from the first source that answers, else {"error": every source's reason}."""
    live = root in ("", "/")
    reasons: List[str] = []
    sources = ([("NVML", lambda: from_nvml(index)), ("CUDA driver", lambda: from_cuda_driver(index))] if live else [])
    sources.append(("device tree", lambda: from_device_tree(root or "/")))
    for name, read in sources:
        try:
            return read()
        except Exception as exc:  # NoSensor, LookupError, or whatever a driver raised: the next source
            reasons.append(f"{name}: {exc}")
    if not live:
        reasons.insert(0, f"NVML and the CUDA driver are not asked for a replayed tree ({root})")
    return {"error": "; ".join(reasons)}


def gpu_index(settings: Optional[dict]) -> int:
    value = (settings or {}).get("gpu", 0)
    return value if isinstance(value, int) and value >= 0 else 0
