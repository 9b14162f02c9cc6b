"""The names used everywhere: code, columns, CLI, docs (see ../shared/design.md)."""
from __future__ import annotations

FRAMEWORKS: tuple[str, ...] = ("torch", "onnxruntime", "tflite")

MODES: tuple[str, ...] = (
    "fp32",          # baseline
    "fp16",
    "bf16",
    "dynamic-int8",  # int8 weights, activations quantized at run time
    "static-int8",   # post-training, calibrated on real data
    "qat-int8",      # fine-tuned with fake quantization, then converted
    "mixed",         # int8 with sensitive layers kept in float
    "int16x8",       # TFLite: int16 activations, int8 weights
)

BASELINE_MODE = "fp32"

# Suite(keep_float="auto"): `mixed` finds its float layers itself (harness/sensitivity/),
# the smallest set it finds within the mode's budget; a list of names keeps those layers.
KEEP_FLOAT_AUTO = "auto"
# What `mixed` keeps its float layers in: float32, or float16 weights where the framework can
# (ai-edge-quantizer's float_casting; elsewhere that case is n/a with the reason).
KEPT_PRECISIONS: tuple[str, ...] = ("float32", "float16")

TARGET_KINDS: tuple[str, ...] = ("local", "cuda", "ssh")

PROFILES: tuple[str, ...] = (
    "generic-linux",
    "raspberry-pi-4",
    "raspberry-pi-5",
    "jetson-orin",
    "jetson-nano",
    "x86-rapl",
    "nvidia-gpu",
)

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_NA = "n/a"
