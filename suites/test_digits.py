"""digits-cnn across frameworks and modes: the plumbing suite, small and fast.

The quick profile (the default) scores a seeded subset of 200 of the 500 evaluation digits
(the row's eval_samples and accuracy_ci_low/high say how many and how precise); the nightly
profile scores all 500.
"""
from harness import Suite
from harness.models import digits_cnn
from harness.profiles import NIGHTLY_ONLY

suite = Suite(
    model=digits_cnn,
    frameworks=("torch", "onnxruntime", "tflite"),  # tflite: a keras and a litert-torch row per mode
    modes=("fp32", "fp16", "bf16", "dynamic-int8", "static-int8", "qat-int8", "mixed", "int16x8"),
    # accuracy points vs fp32; qat-int8 may lose no more than static-int8 + 0.5
    budgets={"dynamic-int8": 1.0, "static-int8": 1.0, "qat-int8": 1.5, "mixed": 0.5},
    eval_samples={"quick": 200},
)
test_case = suite.pytest_cases()

# `mixed` with the float layers found per framework within the same budget (nightly: the first
# search takes minutes on a small machine, then it is cached); beside the hand-picked row above.
auto = Suite(name="digits-auto", model=digits_cnn, frameworks=("torch", "onnxruntime", "tflite"), modes=("mixed",),
             keep_float="auto", budgets={"mixed": 0.5}, profiles=NIGHTLY_ONLY)
test_auto = auto.pytest_cases()
