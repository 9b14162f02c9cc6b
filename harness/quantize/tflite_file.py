"""TFLite artifacts from a user's own fp32 `.tflite` file: ai-edge-quantizer recipes on it.

The LiteRT user's path: a model already converted (by tf.lite.TFLiteConverter, litert-torch,
or any other tool) is brought as the file itself. Its fp32 row is that file, unchanged; fp16,
dynamic-int8, static-int8 (calibrated on the data's calibration split), int16x8 and mixed are
the same ai-edge-quantizer recipes the litert-torch source uses (tflite_aeq.aeq_recipes).
qat-int8 needs the trainable model, which a .tflite file is not: n/a with the reason.

The data is bound to the file's signature inputs by name (harness.data.bind_inputs: a
one-input model takes the data's one input whatever it is called), so the runner feeds each
signature input its own array. `mixed` names are the file's op locations or tensor names.
"""
from __future__ import annotations

from pathlib import Path

from harness.artifacts import BuiltModel
from harness.quantize.base import BuildContext, NotApplicable, Recipe
from harness.quantize.tflite_graph import MODEL_FILE, describe
from harness.quantize.tflite_aeq import ATTENTION_STATIC_OPS, FloatTflite, aeq_recipes  # noqa: F401

SOURCE = "tflite"
SLUG = "file"
LIBS = ("ai-edge-litert",)
AEQ_LIBS = LIBS + ("ai-edge-quantizer",)


def _path(ctx: BuildContext) -> Path:
    if ctx.spec.tflite_file is None:
        raise NotApplicable(f"model {ctx.spec.name} has no .tflite file (it is {', '.join(ctx.spec.sources) or 'empty'})")
    return ctx.spec.tflite_file


def fp32_content(ctx: BuildContext) -> bytes:
    return _path(ctx).read_bytes()


def scope_layers(content: bytes) -> dict[str, None]:
    """Layer names a converted graph's weight tensors carry, for `mixed`: TFLiteConverter writes
    Keras scopes (`functional_1/hidden_1/MatMul`: layer `hidden`). litert-torch locations need
    nothing here (tflite_graph names them by their module path)."""
    import re

    from harness.quantize.tflite_graph import weighted_ops

    found: dict[str, None] = {}
    for op in weighted_ops(content):
        segments = op.weight.split(";")[0].split("/")
        if len(segments) >= 2 and "." not in segments[-2]:
            found[re.sub(r"_\d+$", "", segments[-2])] = None
    return found


def _notes(ctx: BuildContext) -> dict:
    return {"source": f"user .tflite file {_path(ctx)}"}


FILE = FloatTflite(source=SOURCE, slug=SLUG, fp32=fp32_content,
                   signature=lambda ctx: {name: name for name in ctx.dataset.input_names},
                   notes=_notes, layout="as the file takes it", known_layers=lambda ctx: scope_layers(fp32_content(ctx)),
                   where="tflite (the .tflite file)")


def build_fp32(ctx: BuildContext, out: Path) -> BuiltModel:
    """The file itself: the fp32 baseline is exactly what the user ships today."""
    path = out / MODEL_FILE
    path.write_bytes(fp32_content(ctx))
    return describe(path, FILE.signature(ctx), FILE.layout, {**_notes(ctx), "recipe": "the .tflite file as given"})


def build_qat(ctx: BuildContext, out: Path) -> BuiltModel:
    _path(ctx)
    raise NotApplicable("qat-int8 fine-tunes the trainable model, and a .tflite file is an inference graph; "
                        "bring the Keras model (keras_model) or the torch module (torch_model) for QAT")


FP32 = Recipe("tflite", "fp32", "user .tflite (float32)", SLUG, build_fp32, {}, LIBS, source=SOURCE)
RECIPES: tuple[Recipe, ...] = (
    FP32,
    *aeq_recipes(FILE, "user .tflite", AEQ_LIBS, {}),
    Recipe("tflite", "qat-int8", "user .tflite: no QAT", SLUG, build_qat, {}, LIBS, source=SOURCE),
)
