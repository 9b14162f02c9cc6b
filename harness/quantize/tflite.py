"""TFLite (LiteRT) recipes from three sources, told apart by their recipe names and slugs:

- keras (tflite_keras.py): the spec's Keras model through tf.lite.TFLiteConverter, the
  TensorFlow user's path; case ids end in `-keras`.
- litert-torch (tflite_torch.py): the spec's torch module through litert-torch, quantized
  by ai-edge-quantizer, the PyTorch user's path; case ids end in `-litert-torch`.

- file (tflite_file.py): a user's own fp32 .tflite, quantized by ai-edge-quantizer; its fp32
  row is the file itself; case ids end in `-file`.

Each source has its own fp32 baseline (Recipe.source), since they are different models. A
suite gets the recipes of the sources its model has (Suite.cases).
"""
from __future__ import annotations

from harness.quantize import tflite_file, tflite_keras, tflite_torch
from harness.quantize.base import Recipe

RECIPES: tuple[Recipe, ...] = tflite_keras.RECIPES + tflite_torch.RECIPES + tflite_file.RECIPES

# Modes with no tflite recipe, and why (they appear as n/a rows, never silently dropped).
UNAVAILABLE: dict[str, str] = {
    "bf16": "TFLite has no bfloat16 mode: TFLiteConverter ignores target_spec.supported_types=[tf.bfloat16] "
            "(tensorflow 2.21 writes an all-float32 model) and ai-edge-quantizer casts weights to float16 only",
}
