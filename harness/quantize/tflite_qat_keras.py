"""Keras quantization-aware training, run as `python -m harness.quantize.tflite_qat_keras JOB.json`.

tensorflow-model-optimization's quantize_model works on tf-keras (Keras 2) models only,
which TensorFlow 2.21 provides as tf.keras when TF_USE_LEGACY_KERAS=1 is set before it is
imported. That setting changes what tf.keras means for the whole process, so it lives only
here: tflite_keras.build_qat starts this process with it, and nothing else sets it.

The job names the architecture builder and gives the fp32 weights (from the Keras 3 model)
and the train split; this rebuilds the model under tf-keras, wraps it with fake quantization,
fine-tunes, converts to a full-integer .tflite with int8 I/O and writes a small report.
A diverging fine-tune (NaN loss) exits non-zero with the reason on the last line.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np


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
    factory = KerasFactory(**job["factory"])
    model = factory.build(keras)
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
