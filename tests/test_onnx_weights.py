"""ONNX weight storage: folding weight QuantizeLinear nodes into int8 initializers computes the
same outputs in onnxruntime from a smaller file, debug metadata goes but module paths stay, and
the weight bytes by storage type explain an int8 file that is not smaller."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.quantize.onnx_weights import fold_weight_quantize, size_note, strip_debug_metadata, weight_storage


def qdq_conv_model(per_channel: bool) -> onnx.ModelProto:
    """x -> Conv(x, Dequantize(Quantize(W))) -> MatMul(., Dequantize(Quantize(M))): float weights
    quantized at every call, as a QAT export with unfolded weights stores them."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)
    m = rng.normal(size=(8 * 6 * 6, 10)).astype(np.float32)
    w_scale = (np.abs(w).reshape(8, -1).max(axis=1) / 127).astype(np.float32) if per_channel else np.float32(np.abs(w).max() / 127)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.asarray(w_scale, np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(np.shape(w_scale), np.int8), "w_zp"),
             numpy_helper.from_array(m, "M"), numpy_helper.from_array(np.float32(np.abs(m).max() / 255), "m_scale"),
             numpy_helper.from_array(np.uint8(128), "m_zp"), numpy_helper.from_array(np.array([-1, 8 * 6 * 6], np.int64), "shape")]
    nodes = [
        helper.make_node("QuantizeLinear", ["W", "w_scale", "w_zp"], ["Wq"], axis=0),
        helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zp"], ["Wd"], axis=0),
        helper.make_node("Conv", ["x", "Wd"], ["c"]),
        helper.make_node("Reshape", ["c", "shape"], ["flat"]),
        helper.make_node("QuantizeLinear", ["M", "m_scale", "m_zp"], ["Mq"]),
        helper.make_node("DequantizeLinear", ["Mq", "m_scale", "m_zp"], ["Md"]),
        helper.make_node("MatMul", ["flat", "Md"], ["y"]),
    ]
    nodes[2].metadata_props.add(key="pkg.torch.onnx.stack_trace", value="File x.py, line 1 " * 50)
    nodes[2].metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'features', 'conv']")
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("per_channel", [True, False])
def test_folded_weights_compute_the_same_from_a_smaller_file(per_channel):
    model = qdq_conv_model(per_channel)
    x = np.random.default_rng(1).normal(size=(3, 4, 8, 8)).astype(np.float32)
    before, size_before = run(model, x), model.ByteSize()
    assert weight_storage(model)["integer_weight_bytes"] == 0

    folded = fold_weight_quantize(model)
    onnx.checker.check_model(model)
    assert sorted(folded) == ["M", "W"]
    assert [n.op_type for n in model.graph.node].count("QuantizeLinear") == 0
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert types["Wq"] == TensorProto.INT8 and types["Mq"] == TensorProto.UINT8 and "W" not in types and "M" not in types
    np.testing.assert_array_equal(run(model, x), before)  # the very numbers onnxruntime computed before
    assert model.ByteSize() < 0.4 * size_before
    storage = weight_storage(model)
    assert storage["float_weight_bytes"] == 0 and storage["integer_weight_bytes"] == 8 * 4 * 9 + 288 * 10


def test_debug_metadata_goes_and_module_paths_stay():
    model = qdq_conv_model(True)
    assert strip_debug_metadata(model) == 1
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert [(p.key, p.value) for p in conv.metadata_props] == [("pkg.torch.onnx.name_scopes", "['', 'features', 'conv']")]


def test_float_weights_left_by_a_recipe_are_named_in_the_size_note():
    model = qdq_conv_model(True)
    storage = weight_storage(model)  # unfolded: both weights float, re-quantized at every call
    assert storage["float_weight_bytes_by_op"] == {"Conv": 8 * 4 * 9 * 4, "MatMul": 288 * 10 * 4}
    note = size_note("qat-int8", storage, 0.96)
    assert "as float: 12.4 KiB (MatMul 11.2 KiB, Conv 1.1 KiB: not quantized by this recipe)" in note
    assert "the file is 0.96x fp32" in note
    fold_weight_quantize(model)
    assert size_note("qat-int8", weight_storage(model), 0.3) is None  # int8 and smaller: nothing to say
    assert "graph structure" in size_note("qat-int8", weight_storage(model), 1.05)
    assert size_note("fp32", storage, 1.0) is None and size_note("mixed", storage, 1.0) is None
