"""Model specs. `MODELS` maps a model name to its spec."""
from harness.models.digits_cnn import digits_cnn
from harness.models.spec import ModelContext, ModelSpec
from harness.models.user import onnx_model, torch_model

MODELS: dict[str, ModelSpec] = {
    digits_cnn.name: digits_cnn,
}

__all__ = ["MODELS", "ModelContext", "ModelSpec", "digits_cnn", "onnx_model", "torch_model"]
