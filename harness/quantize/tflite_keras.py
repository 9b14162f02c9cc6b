"""TFLite artifacts from the model's Keras source, through tf.lite.TFLiteConverter.

The TensorFlow user's path: the spec's Keras model (Keras 3, trained on the same split as
the torch weights) is converted in this process. Calibration data is the dataset's
calibration split, one sample per step. qat-int8 runs in a subprocess with tf-keras, see
tflite_qat_keras.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from harness import settings
from harness.artifacts import BuiltModel
from harness.quantize import tflite_aeq
from harness.quantize.base import BuildContext, NotApplicable, Recipe
from harness.quantize.tflite_graph import MODEL_FILE, check_kept_float, describe, kept_layers

SLUG = "keras"
SOURCE = "keras"
LIBS = ("tensorflow", "keras", "ai-edge-litert")
QAT_LIBS = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert")
QAT_EPOCHS = 5  # fine-tuning epochs from the fp32 weights
QAT_LEARNING_RATE = 5e-4  # a quarter of digits-cnn's training rate


def import_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, not errors
    import tensorflow as tf

    return tf


def layout(ctx: BuildContext) -> str:
    return getattr(ctx.spec.keras_factory, "input_layout", "as the model takes it")


def input_order(ctx: BuildContext) -> list[str]:
    """The model's input names in its own order (a SavedModel's: its serving signature's)."""
    if ctx.spec.saved_model is not None:
        return list(ctx.dataset.input_names)  # bound to the signature's names (harness.data.bind_inputs)
    return [t.name.split(":")[0] for t in ctx.keras_model.inputs]


def source_layers(ctx: BuildContext) -> dict[str, Optional[np.ndarray]]:
    """The Keras layer names (nested models' layers too) TFLite ops are named by, with each
    layer's kernel (an op is matched to its layer by its weight values, else by name)."""
    if ctx.spec.saved_model is not None:
        return {}  # a SavedModel has no layers to name: its ops are named by their tensor names
    found, stack = {}, list(ctx.keras_model.layers)
    while stack:
        layer = stack.pop(0)
        weights = layer.get_weights()
        found[layer.name] = np.asarray(weights[0]) if weights else None
        stack.extend(getattr(layer, "layers", []))
    return found


def representative_dataset(ctx: BuildContext, limit: Optional[int] = None):
    """The calibration split (its first `limit` samples), one sample per step, in the model's input order."""
    names = input_order(ctx)
    calib = ctx.dataset.calib_inputs

    def generate() -> Iterator[list[np.ndarray]]:
        for i in range(min(len(calib[names[0]]), limit or len(calib[names[0]]))):
            yield [np.ascontiguousarray(calib[n][i:i + 1], dtype=np.float32) for n in names]

    return generate


def converter(ctx: BuildContext):
    """TensorFlow's own converter: from_saved_model for a SavedModel directory, else from_keras_model."""
    tf = import_tensorflow()
    if ctx.spec.saved_model is not None:
        return tf.lite.TFLiteConverter.from_saved_model(str(ctx.spec.saved_model))
    return tf.lite.TFLiteConverter.from_keras_model(ctx.keras_model)


def _source_note(ctx: BuildContext) -> str:
    import keras

    if ctx.spec.saved_model is not None:
        return f"TensorFlow SavedModel {ctx.spec.saved_model} (TFLiteConverter.from_saved_model)"
    builder = getattr(ctx.spec.keras_factory, "builder", None)
    return f"Keras {keras.__version__} model from {builder or ctx.spec.description}"


def _write(ctx: BuildContext, out: Path, content: bytes, notes: dict) -> BuiltModel:
    path = out / MODEL_FILE
    path.write_bytes(content)
    import keras

    notes = {"source": _source_note(ctx), **notes}
    return describe(path, {n: n for n in input_order(ctx)}, layout(ctx), notes)


def convert(ctx: BuildContext, what: str, setup=None) -> bytes:
    conv = converter(ctx)
    if setup:
        setup(conv)
    ctx.progress(f"tf.lite.TFLiteConverter: {what}")
    return conv.convert()


def build_fp32(ctx: BuildContext, out: Path) -> BuiltModel:
    return _write(ctx, out, convert(ctx, "float32"), {})


def build_dynamic(ctx: BuildContext, out: Path) -> BuiltModel:
    tf = import_tensorflow()

    def setup(conv):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: dynamic range

    return _write(ctx, out, convert(ctx, "dynamic range int8", setup), {"weights": "int8", "activations": "float, quantized at run time"})


def build_fp16(ctx: BuildContext, out: Path) -> BuiltModel:
    tf = import_tensorflow()

    def setup(conv):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]

    return _write(ctx, out, convert(ctx, "float16 weights", setup), {"weights": "float16", "compute": "float32 (weights dequantized at load)"})


def _full_integer(ctx: BuildContext, activations) -> bytes:
    tf = import_tensorflow()
    int16 = activations == "int16"

    def setup(conv):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative_dataset(ctx)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
                                          if int16 else tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int16 if int16 else tf.int8
        conv.inference_output_type = tf.int16 if int16 else tf.int8

    n = len(next(iter(ctx.dataset.calib_inputs.values())))
    return convert(ctx, f"full integer ({activations} activations), calibrating on {n} samples", setup)


def build_static(ctx: BuildContext, out: Path) -> BuiltModel:
    return _write(ctx, out, _full_integer(ctx, "int8"), {"weights": "int8 per-channel", "activations": "int8", "io": "int8"})


def build_int16x8(ctx: BuildContext, out: Path) -> BuiltModel:
    return _write(ctx, out, _full_integer(ctx, "int16"), {"weights": "int8", "activations": "int16", "io": "int16"})


def debugger(ctx: BuildContext, denylist: list[str]):
    """TensorFlow's QuantizationDebugger on the int8 converter: it calibrates once on the
    calibration split; `denylisted_nodes` (op output names) stay float in its non-debug model."""
    tf = import_tensorflow()
    conv = converter(ctx)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative_dataset(ctx)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(denylist), fully_quantize=False)
    return tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=representative_dataset(ctx),
                                                     debug_options=options)


# Why the QuantizationDebugger's `mixed` keeps float32 only: the build's and the search's reason.
DEBUGGER_FLOAT32_ONLY = "TensorFlow's QuantizationDebugger keeps denylisted ops in float32"


def build_mixed(ctx: BuildContext, out: Path) -> BuiltModel:
    """Full integer, with the sensitive layers' ops on the quantization debugger's deny list."""
    if ctx.spec.saved_model is not None:
        return _mixed_saved_model(ctx, out)
    ctx.only_float32_kept(DEBUGGER_FLOAT32_ONLY)
    float_model = convert(ctx, "float32 (to find the layers to keep in float)")
    names, how = ctx.float_layers(MIXED)
    kept, kept_names = kept_layers(float_model, names, f"{ctx.spec.name} in tflite (keras)", source_layers(ctx))
    denylist = [op.outputs[0] for op in kept]
    ctx.progress(f"tf.lite QuantizationDebugger: int8 with {len(kept)} ops denylisted")
    content = debugger(ctx, denylist).get_nondebug_quantized_model()
    facts = check_kept_float(float_model, content, kept, "QuantizationDebugger(denylisted_nodes)")
    return _write(ctx, out, content, {"layers": names if names is not None else "first and last weighted op",
                                      "kept_float_layers": kept_names, "kept_float_precision": "float32",
                                      "denylisted_nodes": denylist, "io": "float32", **facts, **how})


def _outputs_logits(ctx: BuildContext) -> bool:
    """Whether the model outputs logits (not probabilities: rows in [0, 1] that sum to 1), which
    decides the QAT loss (SparseCategoricalCrossentropy(from_logits=...))."""
    from harness.models.keras_factory import model_inputs

    sample = {k: v[:32] for k, v in ctx.dataset.calib_inputs.items()}
    out = np.asarray(ctx.keras_model(model_inputs(ctx.keras_model, sample), training=False))
    probabilities = out.min() >= 0 and out.max() <= 1 and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3)
    return not probabilities


def saved_model_source(ctx: BuildContext):
    """A SavedModel's fp32 conversion (the keras fp32 artifact) as the .tflite ai-edge-quantizer starts from."""
    from harness.quantize import tflite_file

    def fp32(c: BuildContext) -> bytes:
        return c.artifact(FP32)[0].model_file.read_bytes()

    return tflite_aeq.FloatTflite(source=SOURCE, slug=SLUG, fp32=fp32, signature=lambda c: {n: n for n in input_order(c)},
                                  notes=lambda c: {"source": _source_note(c)}, layout=layout(ctx),
                                  known_layers=lambda c: tflite_file.scope_layers(fp32(c)), where="tflite (SavedModel)")


def _mixed_saved_model(ctx: BuildContext, out: Path) -> BuiltModel:
    """A SavedModel's `mixed`: the QuantizationDebugger refuses converters made by
    from_saved_model ("Please check if the quantized model is in debug mode"), so ai-edge-quantizer's
    static int8 with no_quantize on the kept ops runs on the fp32 conversion (the keras fp32 artifact)."""
    from dataclasses import replace

    built = tflite_aeq.build_mixed(saved_model_source(ctx), ctx, out)
    recipe = "tf.lite.TFLiteConverter(saved_model, float32) + ai_edge_quantizer(static_wi8_ai8, no_quantize)"
    return replace(built, notes={**built.notes, "recipe": recipe})


def build_qat(ctx: BuildContext, out: Path) -> BuiltModel:
    """tfmot's quantize_model needs tf-keras: fine-tune and convert in a subprocess with
    TF_USE_LEGACY_KERAS=1, the only process that ever gets that variable."""
    from harness.models.keras_factory import KerasFactory

    if ctx.spec.saved_model is not None:
        raise NotApplicable("qat-int8 fine-tunes a Keras model with tfmot, and a SavedModel is a TensorFlow graph, not "
                            "a Keras model; bring the .keras file (model.save('model.keras')) for QAT")
    factory = ctx.spec.keras_factory
    model = ctx.keras_model
    dataset = ctx.dataset
    if dataset.qat_params():
        raise NotApplicable(f"dataset {dataset.name!r} sets its own QAT ({dataset.qat_label()}), and the Keras QAT "
                            "(tfmot) fine-tunes a classifier on the train split's labels at its own settings only; the "
                            "torch source's QAT recipes follow the dataset's")
    if dataset.train_inputs is None or dataset.train_labels is None:
        raise NotApplicable(f"qat-int8 fine-tunes on a train split and dataset {dataset.name!r} has none "
                            "(give x_train/y_train in the .npz, or train_inputs/train_labels in the Dataset)")
    if not np.issubdtype(np.asarray(dataset.train_labels).dtype, np.integer):
        raise NotApplicable(f"qat-int8 here fine-tunes a classifier with cross-entropy on integer labels; dataset "
                            f"{dataset.name!r} has {np.asarray(dataset.train_labels).dtype} train labels")
    if isinstance(factory, KerasFactory):  # quantbench's own models: the builder runs under tf-keras
        how = {"factory": {k: getattr(factory, k) for k in factory.__dataclass_fields__}}
    else:  # a user's Keras 3 model: its config, translated for tf-keras in the subprocess
        how = {"keras3_config": json.loads(model.to_json()), "from_logits": _outputs_logits(ctx)}
    with tempfile.TemporaryDirectory(prefix="quantbench-qat-") as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "weights.npz", **{f"w{i}": w for i, w in enumerate(model.get_weights())})
        np.savez(tmp / "train.npz", labels=dataset.train_labels, **{f"x__{k}": v for k, v in dataset.train_inputs.items()})
        job = {**how,
               "weights": str(tmp / "weights.npz"), "train": str(tmp / "train.npz"), "epochs": QAT_EPOCHS,
               "learning_rate": QAT_LEARNING_RATE, "out": str(out / MODEL_FILE), "report": str(tmp / "report.json")}
        (tmp / "job.json").write_text(json.dumps(job))
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(settings.IMPORT_ROOT), os.environ.get("PYTHONPATH")])))
        ctx.progress(f"QAT: tfmot.quantize_model + {QAT_EPOCHS} epochs under tf-keras (subprocess)")
        proc = subprocess.run([sys.executable, "-m", "harness.quantize.tflite_qat_keras", str(tmp / "job.json")],
                              env=env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0 or not (tmp / "report.json").is_file():
            lines = [line for line in (proc.stdout + proc.stderr).strip().splitlines() if line.strip()]
            raise RuntimeError(f"Keras QAT subprocess failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")
        report = json.loads((tmp / "report.json").read_text())
    content = (out / MODEL_FILE).read_bytes()
    return _write(ctx, out, content, {"qat": report, "io": "int8"})


def _recipe(mode: str, name: str, build, params: dict, libraries=LIBS) -> Recipe:
    return Recipe("tflite", mode, name, SLUG, build, params, libraries, source=SOURCE)


FP32 = _recipe("fp32", "tf.lite.TFLiteConverter(keras, float32)", build_fp32, {})
# A SavedModel's `mixed` is ai-edge-quantizer's on its conversion (tflite_aeq.build_mixed), keyed by this recipe.
MIXED = tflite_aeq.register_mixed(SOURCE, SLUG, _recipe(
    "mixed", "tf.lite.QuantizationDebugger(keras, int8, denylisted_nodes)", build_mixed,
    {"supported_ops": "TFLITE_BUILTINS_INT8", "fully_quantize": False, "calibration": "calib split, batch 1"}))
RECIPES: tuple[Recipe, ...] = (
    FP32,
    _recipe("fp16", "tf.lite.TFLiteConverter(keras, float16 weights)", build_fp16, {"supported_types": "float16"}),
    _recipe("dynamic-int8", "tf.lite.TFLiteConverter(keras, Optimize.DEFAULT dynamic range)", build_dynamic,
            {"optimizations": "DEFAULT"}),
    _recipe("static-int8", "tf.lite.TFLiteConverter(keras, full int8, int8 I/O)", build_static,
            {"supported_ops": "TFLITE_BUILTINS_INT8", "io": "int8", "calibration": "calib split, batch 1"}),
    _recipe("int16x8", "tf.lite.TFLiteConverter(keras, int16x8, int16 I/O)", build_int16x8,
            {"supported_ops": "EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8", "io": "int16",
             "calibration": "calib split, batch 1"}),
    MIXED,
    _recipe("qat-int8", "tfmot.quantize_model + tf.lite.TFLiteConverter(keras, int8 I/O)", build_qat,
            {"epochs": QAT_EPOCHS, "learning_rate": QAT_LEARNING_RATE, "io": "int8"}, QAT_LIBS),
)
