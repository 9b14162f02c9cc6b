"""quantbench: which quantization mode should we ship on this device?"""
from harness.suite import Case, Suite, SuiteError, Timing

__all__ = ["Case", "Suite", "SuiteError", "Timing"]
