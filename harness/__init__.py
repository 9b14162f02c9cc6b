"""quantbench: which quantization mode should we ship on this device?"""
from harness.history.gates import Gates
from harness.limits import Limits
from harness.suite import Case, Suite, SuiteError, Timing

__all__ = ["Case", "Gates", "Limits", "Suite", "SuiteError", "Timing"]
