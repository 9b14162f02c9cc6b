"""Keras quantization-aware training, run as `python -m harness.quantize.tflite_qat_keras JOB.json`.

tensorflow-model-optimization's quantize_model works on tf-keras (Keras 2) models only,
which TensorFlow 2.21 provides as tf.keras when TF_USE_LEGACY_KERAS=1 is set before it is
imported. That setting changes what tf.keras means for the whole process, so it lives only
here: tflite_keras.build_qat starts this process with it, and nothing else sets it.

The job names the architecture builder (quantbench's own models) or gives a user's Keras 3
model config (translated for tf-keras by tf_keras_config), the fp32 weights (from the Keras 3
model) and the train split; this rebuilds the model under tf-keras, wraps it with fake quantization,
fine-tunes, converts to a full-integer .tflite with int8 I/O and writes a small report.
A diverging fine-tune (NaN loss) exits non-zero with the reason on the last line.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np


# Keys Keras 3 writes that tf-keras layers do not take (quantization, LoRA, newer init options).
KERAS3_ONLY = ("module", "registered_name", "build_config", "compile_config", "quantization_config", "lora_rank",
               "lora_alpha", "input_axes", "output_axes", "optional", "synchronized")


def tf_keras_config(obj):
    """A Keras 3 serialized model config (model.to_json()) as tf-keras (Keras 2) reads it: dtype
    policies as dtype names, InputLayer's batch_shape as batch_input_shape, inbound nodes as
    [layer, node, tensor, kwargs] lists, Keras-3-only keys dropped. Covers Sequential and
    Functional models of standard layers; anything else fails in from_config with its name."""
    if isinstance(obj, list):
        return [tf_keras_config(o) for o in obj]
    if not isinstance(obj, dict):
        return obj
    if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
        return obj["config"]["name"]
    if obj.get("class_name") == "__keras_tensor__":
        history = obj["config"]["keras_history"]
        return [history[0], history[1], history[2], {}]
    out = {}
    for key, value in obj.items():
        if key in KERAS3_ONLY:
            continue
        if key == "batch_shape":
            out["batch_input_shape"] = value
        elif key == "inbound_nodes":
            out[key] = [_node_tensors(node.get("args", [])) for node in value]
        else:
            out[key] = tf_keras_config(value)
    return out


def _node_tensors(args) -> list:
    found = []
    if isinstance(args, dict) and args.get("class_name") == "__keras_tensor__":
        history = args["config"]["keras_history"]
        found.append([history[0], history[1], history[2], {}])
    elif isinstance(args, (list, tuple)):
        for arg in args:
            found.extend(_node_tensors(arg))
    return found


def from_keras3_config(keras, config: dict):
    translated = tf_keras_config(config)
    classes = {"Functional": keras.Model, "Model": keras.Model, "Sequential": keras.Sequential}
    if translated.get("class_name") not in classes:
        raise ValueError(f"a {translated.get('class_name')} model cannot be rebuilt under tf-keras for QAT "
                         "(Sequential and Functional models can)")
    return classes[translated["class_name"]].from_config(translated["config"])


def main(job_path: str) -> int:
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        print("this process must be started with TF_USE_LEGACY_KERAS=1 (tfmot needs tf-keras)", file=sys.stderr)
        return 2
    with open(job_path) as f:
        job = json.load(f)

    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    from harness.data import Dataset
    from harness.models.keras_factory import KerasFactory

    keras = tf.keras
    if not keras.__name__.startswith("tf_keras"):
        print(f"tf.keras is {keras.__name__}, not tf_keras: TF_USE_LEGACY_KERAS was set too late", file=sys.stderr)
        return 2
    if "factory" in job:
        factory = KerasFactory(**job["factory"])
        model = factory.build(keras)
    else:  # a user's Keras 3 model
        factory = KerasFactory(builder="", cache_name="", from_logits=bool(job["from_logits"]))
        model = from_keras3_config(keras, job["keras3_config"])
    with np.load(job["weights"]) as npz:
        model.set_weights([npz[f"w{i}"] for i in range(len(npz.files))])
    with np.load(job["train"]) as npz:
        train = {k.split("__", 1)[1]: npz[k] for k in npz.files if k.startswith("x__")}
        labels = npz["labels"]
    dataset = Dataset(name="train split", eval_inputs=train, calib_inputs=train, train_inputs=train, train_labels=labels)

    qat_model = tfmot.quantization.keras.quantize_model(model)
    try:
        losses = factory.train(keras, qat_model, dataset, int(job["epochs"]), float(job["learning_rate"]),
                               what="QAT fine-tuning")
    except RuntimeError as exc:  # divergence: the reason goes on the last line, for the error row
        print(str(exc), file=sys.stderr)
        return 3

    converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with open(job["out"], "wb") as f:
        f.write(converter.convert())
    import tf_keras

    report = {"keras": f"tf_keras {tf_keras.__version__}", "tfmot": tfmot.__version__, "tensorflow": tf.__version__,
              "epochs": int(job["epochs"]), "learning_rate": float(job["learning_rate"]),
              "loss_per_epoch": [round(v, 6) for v in losses]}
    with open(job["report"], "w") as f:
        json.dump(report, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
