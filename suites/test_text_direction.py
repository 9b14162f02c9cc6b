"""PaddleOCR's pretrained text-direction classifier (a MobileNetV3 exported by paddle2onnx,
shipped in the PyPI wheel rapidocr-onnxruntime) on rendered text lines, declared exactly as a
user declares an ONNX file: `onnx_model(name, path, data=loader)`.

harness/models/text_direction.py says how the 500 evaluation and 100 calibration lines are
made and preprocessed. top-1 is the fraction of lines whose direction (upright / upside down)
is right; the rows also carry macro precision, recall and F1.
"""
from harness import Suite
from harness.models import onnx_model, text_direction

MODEL = "ppocr-textdir"
onnx_suite = Suite(
    name="text-direction",
    model=(onnx_model(MODEL, text_direction.model_path(), data=text_direction.load_data, metric="top1")
           if text_direction.installed() else text_direction.unavailable(MODEL)),
    frameworks=("onnxruntime",),
    modes=("fp32", "fp16", "dynamic-int8", "static-int8", "mixed"),
    keep_float=("Conv@0",),  # `mixed`: the stem convolution, by its node name in the ONNX graph
    budgets={"dynamic-int8": 1.0, "static-int8": 1.0, "mixed": 1.0},
    eval_samples={"quick": 200},  # the quick profile scores a seeded 200 of the 500 lines; nightly all
)
test_onnx = onnx_suite.pytest_cases()
