"""Model specs. `MODELS` maps a model name to its spec."""
from harness.models.digits_cnn import digits_cnn
from harness.models.minilm import minilm_l6_s32, minilm_l6_s128
from harness.models.spec import ModelContext, ModelSpec
from harness.models import text_direction
from harness.models.user import keras_model, onnx_model, tflite_model, torch_export_model, torch_model

MODELS: dict[str, ModelSpec] = {
    digits_cnn.name: digits_cnn,
    minilm_l6_s128.name: minilm_l6_s128,
    minilm_l6_s32.name: minilm_l6_s32,
}

__all__ = ["MODELS", "ModelContext", "ModelSpec", "digits_cnn", "minilm_l6_s128", "minilm_l6_s32", "keras_model", "onnx_model", "tflite_model", "torch_export_model", "torch_model"]
