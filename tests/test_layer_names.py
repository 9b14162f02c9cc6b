"""Layer names in every framework: one user-facing name per quantizable layer (the torch module
path, the Keras layer name) beside the framework's own, and a name that maps to no layer is
an error naming it with its close matches, never ignored."""
from __future__ import annotations

import pytest

from harness.quantize.layer_names import Layer, UnknownLayer, resolve

DIGITS_LAYERS = ["conv1", "conv2", "fc1", "fc2"]


def test_resolve_by_name_native_name_alias_and_enclosing_module():
    layers = [Layer("bert.encoder.layer.0.output.dense", ("node_linear_5",), "MatMul", ("bert.encoder.0.output.dense",)),
              Layer("bert.encoder.layer.1.output.dense", ("node_linear_11",), "MatMul")]
    assert resolve(["node_linear_11"], layers, "m") == [layers[1]]
    assert resolve(["bert.encoder.0.output.dense"], layers, "m") == [layers[0]]
    assert resolve(["bert.encoder", "bert.encoder.layer.0.output.dense"], layers, "m") == layers  # each once
    with pytest.raises(UnknownLayer) as info:
        resolve(["bert.encoder.layer.1.output.dens"], layers, "minilm in onnxruntime")
    message = str(info.value)
    assert "'bert.encoder.layer.1.output.dens'" in message and "minilm in onnxruntime" in message
    assert "close matches: bert.encoder.layer.1.output.dense, bert.encoder.layer.0.output.dense" in message
    with pytest.raises(UnknownLayer, match="no close match"):
        resolve(["classifier"], layers, "m")


@pytest.fixture(scope="module")
def digits():
    from harness.artifacts import ArtifactCache
    from harness.data import resolve_data
    from harness.models import digits_cnn
    from harness.quantize.base import BuildContext
    from harness import settings

    return BuildContext(digits_cnn, resolve_data(digits_cnn.data), ArtifactCache(settings.cache_dir() / "artifacts"),
                        settings.cache_dir() / "models")


def _unknown(resolve_names, wrong: str, close: list[str]) -> None:
    with pytest.raises(UnknownLayer) as info:
        resolve_names([wrong])
    message = str(info.value)
    assert f"layer {wrong!r}" in message
    if close:
        listed = message.split("close matches: ", 1)[1].split(". ", 1)[0].split(", ")
        assert sorted(listed) == sorted(close), message
    else:
        assert "no close match" in message, message
    assert "Its quantizable layers: conv1, conv2, fc1, fc2" in message


def test_every_framework_names_digits_layers_by_their_source_layers(digits):
    from harness.quantize import onnx_graph, onnxruntime, pt2e_torch, tflite_graph, tflite_keras, tflite_torch

    onnx_path = digits.artifact(onnxruntime.FP32)[0].model_file
    onnx_layers = onnx_graph.layers(onnx_path)
    assert [layer.name for layer in onnx_layers] == DIGITS_LAYERS
    assert onnx_layers[2].native == ("node_linear",) and onnx_layers[2].op == "Gemm"
    assert onnx_graph.resolve_nodes(onnx_path, ["fc2", "node_conv2d"], "digits") == ["node_linear_1", "node_conv2d"]
    _unknown(lambda names: onnx_graph.resolve_nodes(onnx_path, names, "digits-cnn in onnxruntime"), "fc3", ["fc2", "fc1"])

    torch_layers = pt2e_torch.layers(digits.torch_module)
    assert [layer.name for layer in torch_layers] == DIGITS_LAYERS and torch_layers[0].op == "Conv2d"
    _unknown(lambda names: resolve(names, torch_layers, "digits-cnn in torch"), "conv_1", ["conv1", "conv2"])

    litert = digits.artifact(tflite_torch.FP32)[0].model_file
    litert_layers = tflite_graph.layers(litert, tflite_torch.source_layers(digits))
    assert [layer.name for layer in litert_layers] == DIGITS_LAYERS
    assert litert_layers[0].native[0].endswith("torch.nn.modules.conv.Conv2d_conv1;")  # the op's location
    kept = tflite_graph.resolve_layers(litert, ["fc1"], "digits", tflite_torch.source_layers(digits))
    assert [op.op for op in kept] == ["FULLY_CONNECTED"] and "Linear_fc1" in kept[0].weight
    _unknown(lambda names: tflite_graph.resolve_layers(litert, names, "digits", tflite_torch.source_layers(digits)),
             "fc", ["fc1", "fc2"])

    keras = digits.artifact(tflite_keras.FP32)[0].model_file
    keras_layers = tflite_graph.layers(keras, tflite_keras.source_layers(digits))
    assert [layer.name for layer in keras_layers] == DIGITS_LAYERS
    assert keras_layers[3].native == ("digits_cnn_1/fc2_1/MatMul",)
    _unknown(lambda names: tflite_graph.resolve_layers(keras, names, "digits", tflite_keras.source_layers(digits)),
             "dense", [])


def test_a_litert_weight_is_its_module_s_up_to_layout_and_a_folded_scale():
    """litert-torch folds a LayerNorm's gamma (and attention's 1/sqrt(d)) into the next linear's
    input columns, and its op locations are fused (all-MiniLM-L6-v2's `value` weight is named
    `...Linear_value;;...Linear_query`): ops are matched to modules by their weights."""
    import numpy as np

    from harness.quantize.tflite_graph import same_up_to_scale

    rng = np.random.default_rng(0)
    linear, other = rng.normal(size=(8, 6)), rng.normal(size=(8, 6))
    gamma = rng.uniform(0.2, 2.0, size=6)
    assert same_up_to_scale(linear * gamma, linear)  # torch Linear [out, in], gamma folded per input
    assert same_up_to_scale((linear * gamma).T, linear)  # a Keras Dense kernel [in, out]
    assert not same_up_to_scale(linear * gamma, other)
    conv = rng.normal(size=(4, 3, 3, 3))  # torch OIHW; TFLite holds OHWI, a BatchNorm scales outputs
    assert same_up_to_scale(conv.transpose(0, 2, 3, 1) * rng.uniform(0.5, 1.5, size=(4, 1, 1, 1)), conv)
    assert not same_up_to_scale(conv.transpose(0, 2, 3, 1) + 0.1, conv)
