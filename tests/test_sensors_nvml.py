"""The NVML probe's throttling verdict from its two snapshots (the window's start and end). The
GPU cannot exist here, so the snapshots are written out; their fields are the probe's own
(clock-event reason names, and nvmlDeviceGetViolationStatus's cumulative violationTime in ns)."""
from __future__ import annotations

from harness.runner.sensors_nvml import NvmlProbe


def snap(reasons=(), violations=None):
    return {"clock_event_reasons": list(reasons), "violation_ns": violations or {}}


def probe() -> NvmlProbe:
    return NvmlProbe({})  # no GPU here: it notes why, and judges snapshots all the same


def test_a_slowdown_between_the_ends_is_seen_by_the_violation_counters():
    before = snap(["gpu_idle"], {"power": 4_000_000_000, "thermal": 0})
    after = snap([], {"power": 4_350_000_000, "thermal": 0})  # power-capped for 350 ms inside the window, not at its ends
    assert probe().throttled(before, after) == ["nvml: power violation for 350 ms during the window"]
    assert probe().throttled(before, snap([], {"power": 4_000_000_000, "thermal": 0})) == []  # it saw the window: no


def test_reasons_at_the_ends_only_cannot_say_not_throttled():
    """Without violation counters a window with no reason at either end is unknown, not False
    (the probe used to answer [] here: 'not throttled' from two instants)."""
    p = probe()
    assert p.throttled(snap(), snap()) is None
    assert p.unknown(snap(), snap()).startswith("clock-event reasons are read only at the window's ends")
    # what it can see it says: a reason active at an end is throttling
    assert p.throttled(snap(["sw_power_cap"]), snap()) == ["nvml: sw_power_cap at the start of the window"]
