"""PaddleOCR's pretrained text-direction classifier (a MobileNetV3 exported by paddle2onnx,
shipped in the PyPI wheel rapidocr-onnxruntime) on rendered text lines, declared exactly as
users declare their models: the ONNX file with `onnx_model(name, path, data=loader)` for
onnxruntime, and for torch and LiteRT a function returning the torch module with
`torch_model(name, factory, data=loader)` (the ONNX graph rebuilt as torch by
harness/models/onnx_torch.py, checked against onnxruntime).

The quick profile (the default) runs onnxruntime's modes and LiteRT's fp32/dynamic/static on a
seeded 200 lines; nightly adds torch (AOTInductor packages and ExecuTorch programs, which the
cold quick job has no build time for), LiteRT's mixed and all 500 lines.

harness/models/text_direction.py says how the 500 evaluation and 100 calibration lines are
made and preprocessed. top-1 is the fraction of lines whose direction (upright / upside down)
is right; the rows also carry macro precision, recall and F1.
"""
from harness import Suite
from harness.models import onnx_model, text_direction, torch_model
from harness.profiles import NIGHTLY_ONLY

INSTALLED = text_direction.installed()
BUDGETS = {"dynamic-int8": 1.0, "static-int8": 1.0, "mixed": 1.0}  # top-1 points vs fp32
QUICK = {"quick": 200}  # the quick profile scores a seeded 200 of the 500 lines; nightly all

onnx_suite = Suite(
    name="text-direction",
    model=(onnx_model("ppocr-textdir", text_direction.model_path(), data=text_direction.load_data)
           if INSTALLED else text_direction.unavailable("ppocr-textdir")),
    frameworks=("onnxruntime",),
    modes=("fp32", "fp16", "dynamic-int8", "static-int8", "mixed"),
    keep_float=("Conv@0",),  # `mixed`: the stem convolution, by its node name in the ONNX graph
    budgets=BUDGETS,
    eval_samples=QUICK,
)
TORCH_MODEL = (torch_model("ppocr-textdir-torch", text_direction.torch_module, data=text_direction.load_data)
               if INSTALLED else text_direction.unavailable("ppocr-textdir-torch"))
# Quick: LiteRT's fp32 and int8 rows (a few ms a call). Nightly adds torch (its deployed AOTI
# packages and .pte programs: C++ compiles and XNNPACK lowering the cold quick job, at its
# 5-minute goal on a 2-vCPU host, has no room for; digits and MiniLM carry the quick job's
# deployed torch rows) and LiteRT's `mixed`.
tflite_suite = Suite(
    name="text-direction",
    model=TORCH_MODEL,
    frameworks=("tflite",),
    modes=("fp32", "dynamic-int8", "static-int8"),
    budgets={mode: BUDGETS[mode] for mode in ("dynamic-int8", "static-int8")},
    eval_samples=QUICK,
)
torch_suite = Suite(
    name="text-direction",
    model=TORCH_MODEL,
    frameworks=("torch", "tflite"),
    modes=("fp32", "bf16", "dynamic-int8", "static-int8", "mixed"),
    keep_float=("layers.Conv_0",),  # the same stem convolution, by its torch module path
    budgets=BUDGETS,
    profiles=NIGHTLY_ONLY,
)
test_onnx = onnx_suite.pytest_cases()
test_tflite = tflite_suite.pytest_cases()
test_torch = torch_suite.pytest_cases()
