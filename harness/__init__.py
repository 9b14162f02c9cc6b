"""quantbench: which quantization mode should we ship on this device?"""
from harness.history.gates import Gates
from harness.suite import Case, Suite, SuiteError, Timing

__all__ = ["Case", "Gates", "Suite", "SuiteError", "Timing"]
