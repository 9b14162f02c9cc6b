"""`python -m runner.facts [--workdir DIR] [--profile P] [--settings JSON]`: what a user needs
to know about a device before a long run, as one JSON object on stdout.

Architecture, OS, Python, numpy and each runtime with its version (or "missing"), memory,
free disk in the work directory, the power sensors and probes the profile finds, the CPU
clock governor, the ExecuTorch runtime the runner would use and the program formats it reads
(executorch_runtime.py), the installed size of each runtime (footprint.py), and with `--gpu INDEX` the GPU as the device reports it (gpu_facts.py:
NVML, the CUDA driver API, or the Tegra SoC in the device tree). Runtimes are looked up, not imported (importing TensorFlow on a Pi takes
seconds), so a runtime that is installed but broken shows up in the first case instead.
Standard library only, Python 3.8+ (the runner ships to devices).
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import re
import sys
from typing import Dict, List, Optional

from . import executorch_runtime, footprint, gpu_facts, sensors, system

# module -> distributions that provide it (the first one installed gives the version)
DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino"),
    "ai_edge_litert": ("ai-edge-litert",),
    "torch": ("torch",),
}


def runtime_modules() -> Dict[str, str]:
    """framework -> the module its backend imports (from the runner's own table)."""
    try:
        from .__main__ import RUNTIME_MODULES
    except ImportError:  # numpy missing: the runner itself cannot start; report that first
        return {}
    return dict(RUNTIME_MODULES)


def version_of(module: str) -> str:
    if importlib.util.find_spec(module) is None:
        return "missing"
    try:
        from importlib import metadata
    except ImportError:  # Python < 3.8
        return "installed"
    for dist in DISTRIBUTIONS.get(module, (module.replace("_", "-"),)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "installed"


def torch_export_schema() -> str:
    """The torch.export schema version the installed torch reads ('major.minor'), from its sources
    (importing torch takes seconds on a board); '' when torch is missing or does not say."""
    spec = importlib.util.find_spec("torch")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        text = _read(os.path.join(folder, "_export", "serde", "schema.py"))
        match = re.search(r"^SCHEMA_VERSION\s*=\s*\((\d+),\s*(\d+)\)", text, re.M)
        if match:
            return f"{match.group(1)}.{match.group(2)}"
    return ""


def onnx_max_ir() -> int:
    """The newest ONNX IR version the installed onnxruntime loads (0 when it is missing or does not
    say): a model stamped with IR 99 (an empty graph, opset 18) makes it name its maximum."""
    if importlib.util.find_spec("onnxruntime") is None:
        return 0
    try:
        import onnxruntime

        onnxruntime.InferenceSession(b"\x08\x63\x3a\x00\x42\x02\x10\x12", providers=["CPUExecutionProvider"])
    except Exception as exc:  # "Unsupported model IR version: 99, max supported IR version: 10"
        match = re.search(r"max supported IR version: (\d+)", str(exc))
        return int(match.group(1)) if match else 0
    return 0


def formats() -> Dict[str, object]:
    """Which artifact format versions this device's runtimes read (see harness/compat.py)."""
    found: Dict[str, object] = {}
    schema = torch_export_schema()
    if schema:
        found["torch_export_schema"] = schema
    max_ir = onnx_max_ir()
    if max_ir:
        found["onnx_max_ir"] = max_ir
    return found


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip().strip("\x00")
    except OSError:
        return ""


def os_release(path: str = "/etc/os-release") -> str:
    """The distribution and release, e.g. 'Debian GNU/Linux 12 (bookworm)' ('' when unknown)."""
    values = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"')
    if not values and path == "/etc/os-release":
        return os_release("/usr/lib/os-release")
    return values.get("PRETTY_NAME") or " ".join(v for v in (values.get("NAME"), values.get("VERSION")) if v)


def memory_mb() -> Dict[str, float]:
    found = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, value = line.partition(":")
        if key in ("MemTotal", "MemAvailable") and value.split():
            found["total_mb" if key == "MemTotal" else "available_mb"] = round(int(value.split()[0]) / 1024.0, 1)
    return found


def governors() -> List[str]:
    return sorted({_read(p) for p in glob.glob("/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor")} - {""})


def free_disk_mb(path: str) -> float:
    st = os.statvfs(path)
    return round(st.f_bavail * st.f_frsize / (1024.0 * 1024.0), 1)


def sensor_facts(profile: str, root: str, settings: dict) -> dict:
    found, probes, none_reason = sensors.discover(profile, root, settings)
    try:
        return {"power": [s.source or s.name for s in found], "power_none": none_reason,
                "probes": [p.name for p in probes]}
    finally:
        for s in found:
            s.close()


def collect(workdir: str, profile: str, root: str, settings: dict, gpu: Optional[int] = None) -> dict:
    facts = dict(system.describe())
    facts.update(
        python=sys.executable,
        os_release=os_release(),
        device_model=_read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model"),
        memory=memory_mb(),
        workdir=workdir,
        free_disk_mb=free_disk_mb(workdir) if os.path.isdir(workdir) else None,
        governors=governors(),
    )
    facts["runtimes"] = {"numpy": version_of("numpy")}
    facts["runtimes"].update({fw: version_of(module) for fw, module in runtime_modules().items()})
    # an ExecuTorch-only device (numpy runtime, no bindings) still says it has a runtime
    numpy_runtime = executorch_runtime.describe(executorch_runtime.NUMPY_RUNTIME)
    if numpy_runtime:
        facts["runtimes"][executorch_runtime.NUMPY_RUNTIME] = numpy_runtime["version"]
    facts["formats"] = formats()
    facts["executorch"] = executorch_runtime.facts()  # the runtime the runner uses, the program formats it reads
    facts["footprint_mb"] = footprint.footprints()  # MB on disk of each runtime installed
    facts["sensors"] = sensor_facts(profile, root, settings)
    if gpu is not None:
        facts["gpu"] = gpu_facts.describe_gpu(root, gpu)
    return facts


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.facts")
    parser.add_argument("--workdir", default=".")
    parser.add_argument("--profile", default="generic-linux")
    parser.add_argument("--settings", default="{}", help="the target's sensors settings, as JSON")
    parser.add_argument("--gpu", type=int, default=None, help="also describe this GPU (targets with a GPU profile)")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    print(json.dumps(collect(args.workdir, args.profile, settings.get("root", "/"), settings, args.gpu)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
