"""NVIDIA GPU energy, power, memory and state through NVML (nvidia-ml-py: `import pynvml`).

The energy figure comes from nvmlDeviceGetTotalEnergyConsumption (a millijoule counter of
the whole board since the driver loaded; Volta and newer), read at the start and end of
the timed window. Older GPUs only report power (nvmlDeviceGetPowerUsage, milliwatts),
which the window samples and averages. The counter updates about every 100 ms and power
readings are 1 s averages on Ampere and newer, so these sensors ask for a window of at
least MIN_WINDOW_S (the runner extends a shorter timed loop and the row says so).

The GPU is chosen by settings["gpu"]: an NVML index (nvidia-smi's numbering) or a UUID
("GPU-..."); the cuda target passes the UUID it gave the runner in CUDA_VISIBLE_DEVICES,
so NVML and the runtime look at the same board. pynvml is imported on first use only.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, List, Optional

from .sensors_base import NoSensor, Probe, Sensor

MIN_WINDOW_S = 1.0
MIB = 1024.0 * 1024.0

# nvmlClocksEventReason* bits (the older name is "throttle reasons"), as NVML defines them.
CLOCK_EVENT_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# The reasons that mean the clocks were held down by power or heat (idle and
# application clocks are not throttling).
THROTTLING = ("sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")
# The clock-event reasons are what holds the clocks *now*: read at the window's ends, they miss
# a slowdown in between. NVML also keeps, per performance policy, the total time the GPU ran
# below its requested clocks for that reason (nvmlDeviceGetViolationStatus, nanoseconds,
# cumulative): the difference across the window is the throttling inside it.
VIOLATION_POLICIES = {"NVML_PERF_POLICY_POWER": "power", "NVML_PERF_POLICY_THERMAL": "thermal",
                      "NVML_PERF_POLICY_BOARD_LIMIT": "board_limit", "NVML_PERF_POLICY_RELIABILITY": "reliability"}

_state: Dict[str, Any] = {}


def nvml():
    """pynvml, initialised once per process; NoSensor with the exact reason when unusable."""
    if "error" in _state:
        raise NoSensor(_state["error"])
    if "module" not in _state:
        try:
            import pynvml
        except ImportError:
            _state["error"] = f"nvidia-ml-py is not installed for {sys.executable} (pip install nvidia-ml-py)"
            raise NoSensor(_state["error"])
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            _state["error"] = f"NVML cannot start: {exc} (is the NVIDIA driver installed and loaded on this host?)"
            raise NoSensor(_state["error"])
        _state["module"] = pynvml
    return _state["module"]


def device_handle(pynvml, selector: Any):
    """The NVML handle of one GPU: an NVML index or a UUID string."""
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            raise NoSensor("NVML sees no GPU on this host")
        if isinstance(selector, str) and selector.startswith(("GPU-", "MIG-")):
            return pynvml.nvmlDeviceGetHandleByUUID(selector)
        index = int(selector or 0)
        if not 0 <= index < count:
            raise NoSensor(f"there is no GPU {index}: NVML sees {count} GPU(s), numbered from 0")
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except pynvml.NVMLError as exc:
        raise NoSensor(f"NVML cannot open GPU {selector!r}: {exc}")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(pynvml, fn: Callable[[], Any]) -> Any:
    """fn() or None where this GPU or driver does not support the query."""
    try:
        return fn()
    except pynvml.NVMLError:
        return None


def _cuda_version(code: Optional[int]) -> Optional[str]:
    return None if not code else f"{code // 1000}.{(code % 1000) // 10}"


def describe(pynvml, handle) -> Dict[str, Any]:
    """Static facts of one GPU and its driver."""
    opt = lambda fn: _optional(pynvml, fn)  # noqa: E731
    cc = opt(lambda: pynvml.nvmlDeviceGetCudaComputeCapability(handle))
    memory = opt(lambda: pynvml.nvmlDeviceGetMemoryInfo(handle))
    limit = opt(lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    return {
        "name": _text(pynvml.nvmlDeviceGetName(handle)),
        "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
        "index": opt(lambda: pynvml.nvmlDeviceGetIndex(handle)),
        "driver_version": opt(lambda: _text(pynvml.nvmlSystemGetDriverVersion())),
        "cuda_driver_version": _cuda_version(opt(pynvml.nvmlSystemGetCudaDriverVersion)),
        "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
        "memory_total_mb": memory.total / MIB if memory else None,
        "power_limit_w": limit / 1000.0 if limit else None,
        "max_sm_clock_mhz": opt(lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)),
    }


def clock_event_reasons(bits: Optional[int]) -> Optional[List[str]]:
    if bits is None:
        return None
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if bits & bit]
    unknown = bits & ~sum(CLOCK_EVENT_REASONS)
    return names + ([f"0x{unknown:x}"] if unknown else [])


class NvmlEnergy(Sensor):
    kind = "energy"
    min_window_s = MIN_WINDOW_S

    def __init__(self, pynvml, handle, gpu: str) -> None:
        self._nvml, self._handle = pynvml, handle
        self.name = "nvml:energy"
        self.source = f"NVML total energy counter of the {gpu} (whole board, nvmlDeviceGetTotalEnergyConsumption)"

    def read(self) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0  # mJ -> J


class NvmlPower(Sensor):
    kind = "power"
    min_window_s = MIN_WINDOW_S

    def __init__(self, pynvml, handle, gpu: str) -> None:
        self._nvml, self._handle = pynvml, handle
        self.name = "nvml:power"
        self.source = (f"NVML board power of the {gpu}, sampled (nvmlDeviceGetPowerUsage; "
                       "this GPU has no energy counter)")

    def read(self) -> float:
        return self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0  # mW -> W


def find_nvml(root: str, settings: dict) -> List[Sensor]:
    """The GPU's energy counter, else its power reading; NoSensor with the reason otherwise."""
    pynvml = nvml()
    handle = device_handle(pynvml, settings.get("gpu", 0))
    try:
        gpu = _text(pynvml.nvmlDeviceGetName(handle))
    except pynvml.NVMLError as exc:
        raise NoSensor(f"NVML cannot name GPU {settings.get('gpu', 0)!r}: {exc}")
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return [NvmlEnergy(pynvml, handle, gpu)]
    except pynvml.NVMLError:
        pass  # pre-Volta boards have no energy counter: fall back to power readings
    try:
        pynvml.nvmlDeviceGetPowerUsage(handle)
    except pynvml.NVMLError as exc:
        raise NoSensor(f"the {gpu} reports neither an energy counter nor power through NVML ({exc})")
    return [NvmlPower(pynvml, handle, gpu)]


class NvmlProbe(Probe):
    """GPU state before and after the window: clocks, temperature, clock-event (throttle)
    reasons, power, and memory in use by this process and by the whole board."""

    name = "nvml"
    sees_throttling = True  # clock-event reasons: power cap, thermal and hardware slowdowns

    def __init__(self, settings: dict) -> None:
        self.error = ""
        try:
            self._nvml = nvml()
            self._handle = device_handle(self._nvml, settings.get("gpu", 0))
            try:
                self.facts = describe(self._nvml, self._handle)
            except self._nvml.NVMLError as exc:
                raise NoSensor(f"NVML cannot describe GPU {settings.get('gpu', 0)!r}: {exc}")
            # Board memory in use before this process loads its model (the runner discovers
            # sensors first): the fallback for this process's use when NVML hides its PID.
            self.used_at_start_mb = self._used_mb()
        except NoSensor as exc:
            self.error = str(exc)

    def _used_mb(self) -> Optional[float]:
        memory = _optional(self._nvml, lambda: self._nvml.nvmlDeviceGetMemoryInfo(self._handle))
        return memory.used / MIB if memory else None

    def _process_mb(self) -> Optional[float]:
        """Memory NVML attributes to this process; None when it is not listed (inside a
        container NVML reports host PIDs) or the driver does not account per process."""
        pynvml, pid = self._nvml, os.getpid()
        for query in (pynvml.nvmlDeviceGetComputeRunningProcesses, pynvml.nvmlDeviceGetGraphicsRunningProcesses):
            for proc in _optional(pynvml, lambda: query(self._handle)) or ():
                if proc.pid == pid and proc.usedGpuMemory is not None:
                    return proc.usedGpuMemory / MIB
        return None

    def _reasons(self) -> Optional[int]:
        pynvml, h = self._nvml, self._handle
        getter = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
        return _optional(pynvml, lambda: getter(h))

    def _violations(self) -> Dict[str, int]:
        """Cumulative ns below the requested clocks per throttling policy (those this GPU reports)."""
        pynvml, h, out = self._nvml, self._handle, {}
        for constant, name in VIOLATION_POLICIES.items():
            if hasattr(pynvml, constant):
                status = _optional(pynvml, lambda: pynvml.nvmlDeviceGetViolationStatus(h, getattr(pynvml, constant)))
                if status is not None:
                    out[name] = int(status.violationTime)
        return out

    def snapshot(self) -> Dict[str, object]:
        if self.error:
            return {"unavailable": self.error}
        pynvml, h = self._nvml, self._handle
        opt = lambda fn: _optional(pynvml, fn)  # noqa: E731
        power = opt(lambda: pynvml.nvmlDeviceGetPowerUsage(h))
        reasons = clock_event_reasons(self._reasons())
        return {
            "gpu": self.facts,
            "temp_c": opt(lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
            "sm_clock_mhz": opt(lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
            "mem_clock_mhz": opt(lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)),
            "power_w": power / 1000.0 if power is not None else None,
            "clock_event_reasons": reasons,
            "throttled": None if reasons is None else any(r in THROTTLING for r in reasons),
            "violation_ns": self._violations(),
            "process_mem_mb": self._process_mb(),
            "device_mem_used_mb": self._used_mb(),
            "device_mem_used_at_start_mb": self.used_at_start_mb,
        }


    def throttled(self, before: Dict[str, object], after: Dict[str, object]) -> Optional[List[str]]:
        """The power and thermal clock-event reasons active at the start or end of the window,
        and the violation time each throttling policy gained inside it. Without violation
        counters a window with no reason at either end cannot be called unthrottled: None."""
        seen = [(when, snap.get("clock_event_reasons")) for when, snap in (("start", before), ("end", after))]
        start, end = before.get("violation_ns") or {}, after.get("violation_ns") or {}
        counted = sorted(set(start) & set(end))
        if all(reasons is None for _, reasons in seen) and not counted:
            return None
        said = [f"nvml: {reason} at the {when} of the window" for when, reasons in seen
                for reason in (reasons or []) if reason in THROTTLING]
        said += [f"nvml: {policy} violation for {(end[policy] - start[policy]) / 1e6:.3g} ms during the window"
                 for policy in counted if end[policy] > start[policy]]
        if not said and not counted:
            return None
        return said

    def unknown(self, before: Dict[str, object], after: Dict[str, object]) -> str:
        if any(snap.get("clock_event_reasons") is not None for snap in (before, after)):
            return ("clock-event reasons are read only at the window's ends (no power or thermal reason at either), and "
                    "this GPU reports no violation counters (nvmlDeviceGetViolationStatus) to show a slowdown in between")
        return super().unknown(before, after)


def nvml_probes(root: str, settings: dict) -> List[Probe]:
    return [NvmlProbe(settings)]
