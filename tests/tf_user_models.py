"""A TensorFlow user's model as they save it, for the bring-your-own-model tests: a small Keras
MLP trained on scikit-learn's real digits, written as `mlp.keras`, a SavedModel directory
`mlp_savedmodel/`, an fp32 `mlp.tflite` (TFLiteConverter), and `digits.npz` (x_eval/y_eval,
x_calib, x_train/y_train). Run as `python -m tests.tf_user_models DIR` (TensorFlow stays out of
the pytest process); seeded, a few seconds."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def build(keras):
    """Three Dense layers, so `mixed` can keep the middle one float and still quantize others."""
    inputs = keras.Input(shape=(64,), name="pixels")
    x = keras.layers.Dense(48, activation="relu", name="hidden1")(inputs)
    x = keras.layers.Dense(32, activation="relu", name="hidden2")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="mlp")


def main(out: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from tests.onnx_models import digits_flat

    x_train, y_train, x_calib, x_eval, y_eval = digits_flat()
    keras.utils.set_random_seed(0)
    model = build(keras)
    model.compile(keras.optimizers.Adam(5e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=15, batch_size=32, verbose=0)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "mlp.keras")
    model.export(str(out / "mlp_savedmodel"), verbose=False)
    (out / "mlp.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    np.savez(out / "digits.npz", x_eval=x_eval, y_eval=y_eval, x_calib=x_calib, x_train=x_train, y_train=y_train)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
