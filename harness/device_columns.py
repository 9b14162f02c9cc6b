"""The device section of a result (`Device`): the device a case ran on, beyond the design card's
core set (GPU memory is the size/memory section's: `gpu_memory`).

From the runner's result: the GPU (identity, clocks, temperature and clock-event reasons
before/after the timed window, from the NVML probe), GPU memory, where the runtime ran
each node, whether host-device copies were inside the timed region, and a note when the
timed loop was extended for an energy sensor. A column that cannot be measured stays
None; gpu_mem_source then says why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from harness.sections import UNSET, Section

THROTTLE_FREE = "none"


def _reasons(snapshot: Mapping[str, Any]) -> Optional[str]:
    reasons = snapshot.get("clock_event_reasons")
    return None if reasons is None else (", ".join(reasons) or THROTTLE_FREE)


def placement_text(placement: Mapping[str, Mapping[str, int]]) -> str:
    """'CUDAExecutionProvider: 12 nodes; CPUExecutionProvider: 2 nodes (ConvInteger x2)':
    op types are listed for every provider but the one that ran most nodes."""
    counts = {provider: sum(ops.values()) for provider, ops in placement.items()}
    main = max(counts, key=counts.get) if counts else None
    parts = []
    for provider in sorted(counts, key=lambda p: (p != main, p)):
        ops = "" if provider == main else " (" + ", ".join(f"{op} x{n}" for op, n in sorted(placement[provider].items())) + ")"
        parts.append(f"{provider}: {counts[provider]} nodes{ops}")
    return "; ".join(parts)


def _gpu_memory(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[Optional[float], str]:
    if after.get("process_mem_mb") is not None:
        return after["process_mem_mb"], "nvml: memory NVML attributes to the runner process after the timed window"
    used, start = after.get("device_mem_used_mb"), after.get("device_mem_used_at_start_mb")
    if used is not None and start is not None:
        return used - start, ("nvml: board memory in use after the timed window minus before the model loaded "
                              "(NVML lists no memory for the runner's PID, e.g. inside a container; other "
                              "processes on the GPU would be counted)")
    return None, "none: NVML reports no memory use for this GPU"


def _nvml(result: Mapping[str, Any]) -> tuple[Optional[dict], Optional[dict]]:
    power = result.get("power") or {}
    return (power.get("probes_before") or {}).get("nvml"), (power.get("probes_after") or {}).get("nvml")


def gpu_memory(result: Mapping[str, Any]) -> dict[str, Any]:
    """The size/memory section's GPU fields: NVML's memory figure and how it was measured (or
    why not), and the framework allocator's peak."""
    before, after = _nvml(result)
    details = result.get("runtime_details") or {}
    values: dict[str, Any] = {}
    if before is not None or after is not None:
        before, after = before or {}, after or {}
        unavailable = before.get("unavailable") or after.get("unavailable")
        if unavailable:
            values["gpu_mem_source"] = f"none: {unavailable}"
        else:
            values["gpu_mem_mb"], values["gpu_mem_source"] = _gpu_memory(before, after)
    if details.get("gpu_mem_peak_allocated_mb") is not None:
        values["gpu_mem_peak_allocated_mb"] = details["gpu_mem_peak_allocated_mb"]
    return values


@dataclass(frozen=True)
class Device(Section):
    """The GPU a case ran on (NVML, before/after the timed window), where the runtime ran each
    node, and whether host-device copies were inside the timed region."""

    NAME = "device"
    EXTRA = ("gpu_uuid", "gpu_driver_version", "gpu_cuda_version", "gpu_compute_capability", "gpu_power_limit_w",
             "gpu_temp_before_c", "gpu_temp_after_c", "gpu_sm_clock_before_mhz", "gpu_sm_clock_after_mhz",
             "gpu_mem_clock_before_mhz", "gpu_mem_clock_after_mhz", "gpu_clock_events_before",
             "gpu_clock_events_after", "providers_requested", "providers_used", "node_placement",
             "host_device_copies_timed")

    gpu_uuid: Any = UNSET
    gpu_driver_version: Any = UNSET
    gpu_cuda_version: Any = UNSET
    gpu_compute_capability: Any = UNSET
    gpu_power_limit_w: Any = UNSET
    gpu_temp_before_c: Any = UNSET
    gpu_temp_after_c: Any = UNSET
    gpu_sm_clock_before_mhz: Any = UNSET
    gpu_sm_clock_after_mhz: Any = UNSET
    gpu_mem_clock_before_mhz: Any = UNSET
    gpu_mem_clock_after_mhz: Any = UNSET
    gpu_clock_events_before: Any = UNSET
    gpu_clock_events_after: Any = UNSET
    providers_requested: Any = UNSET
    providers_used: Any = UNSET
    node_placement: Any = UNSET
    host_device_copies_timed: Any = UNSET  # None on a CPU: no copies to time
    gpu_name: Any = field(default=None, repr=False)  # the identity's device, when NVML names the GPU

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> "Device":
        details = result.get("runtime_details") or {}
        before, after = _nvml(result)
        values: dict[str, Any] = {}
        if before is not None or after is not None:
            before, after = before or {}, after or {}
            if not (before.get("unavailable") or after.get("unavailable")):
                gpu = before.get("gpu") or after.get("gpu") or {}
                values.update(
                    gpu_name=gpu.get("name"), gpu_uuid=gpu.get("uuid"),
                    gpu_driver_version=gpu.get("driver_version"), gpu_cuda_version=gpu.get("cuda_driver_version"),
                    gpu_compute_capability=gpu.get("compute_capability"), gpu_power_limit_w=gpu.get("power_limit_w"),
                    gpu_temp_before_c=before.get("temp_c"), gpu_temp_after_c=after.get("temp_c"),
                    gpu_sm_clock_before_mhz=before.get("sm_clock_mhz"), gpu_sm_clock_after_mhz=after.get("sm_clock_mhz"),
                    gpu_mem_clock_before_mhz=before.get("mem_clock_mhz"), gpu_mem_clock_after_mhz=after.get("mem_clock_mhz"),
                    gpu_clock_events_before=_reasons(before), gpu_clock_events_after=_reasons(after),
                )
                # `throttled` itself comes from the probes through sensors.measure (NvmlProbe.throttled)
        if details.get("providers_requested"):
            values["providers_requested"] = ", ".join(details["providers_requested"])
            values["providers_used"] = ", ".join(details.get("providers_used") or [])
        if details.get("node_placement"):
            values["node_placement"] = placement_text(details["node_placement"])
        if "host_device_copies_timed" in details:
            values["host_device_copies_timed"] = details["host_device_copies_timed"]
        return cls(**values)
