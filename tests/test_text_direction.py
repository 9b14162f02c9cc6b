"""The pretrained vision model (PaddleOCR's text-direction classifier from rapidocr-onnxruntime):
its rendered data, its fp32 accuracy, and onnxruntime's recipes on a paddle2onnx graph."""
import textwrap

import numpy as np
import pytest

from harness.artifacts import BuiltModel
from harness.models import text_direction
from harness.quantize.host_check import BrokenArtifact, check_loads

pytestmark = pytest.mark.skipif(not text_direction.installed(), reason=text_direction.INSTALL_HINT)


def test_rendered_lines_are_deterministic_preprocessed_and_balanced():
    data = text_direction.load_data()
    x = data.eval_inputs["x"]
    assert x.shape == (500, 3, 48, 192) and x.dtype == np.float32
    assert data.calib_inputs["x"].shape == (100, 3, 48, 192)
    assert -1.0 <= x.min() and x.max() <= 1.0
    assert 0.4 < data.eval_labels.mean() < 0.6  # about half the lines are upside down
    sentences = ["The quick brown fox jumps over the lazy dog", "Return the number of items in a container"]
    first, labels = text_direction.text_lines(sentences, seed=7)
    again, labels_again = text_direction.text_lines(sentences, seed=7)
    assert np.array_equal(first, again) and np.array_equal(labels, labels_again)
    # a turned line is the same pixels in reverse order, before padding: the label is the turn
    image = text_direction.render("upside down", np.random.default_rng(0))
    turned = text_direction.preprocess(image.rotate(180))
    width = int(np.ceil(48 * image.width / image.height))
    assert np.allclose(turned[:, :, :width], text_direction.preprocess(image)[:, ::-1, :width][:, :, ::-1], atol=1e-6)


def test_the_packaged_model_reads_the_direction_of_rendered_lines():
    import onnxruntime as ort

    data = text_direction.load_data()
    session = ort.InferenceSession(str(text_direction.model_path()), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"x": data.eval_inputs["x"][:200]})[0]
    assert probabilities.shape == (200, 2)
    assert np.mean(probabilities.argmax(axis=1) == data.eval_labels[:200]) >= 0.9


def test_a_file_the_runtime_refuses_is_a_build_error_before_the_cache(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07not a graph")
    built = BuiltModel("model.onnx", (), (), "onnxruntime")
    with pytest.raises(BrokenArtifact, match="recipe-x built model.onnx, which onnxruntime cannot load on the host"):
        check_loads(built, tmp_path, "recipe-x")


SUITE = """
from harness import Suite
from harness.models import onnx_model, text_direction

suite = Suite(model=onnx_model("ppocr-textdir", text_direction.model_path(), data=text_direction.load_data),
              frameworks=("onnxruntime",), modes=("fp32", "dynamic-int8", "static-int8"))
test_case = suite.pytest_cases()
"""


def test_onnxruntime_recipes_hold_up_on_a_paddle2onnx_graph(run_suite, tmp_path):
    """The graph keeps its weights in Constant nodes, has opset 11 and names its input `x`:
    the data's `input` binds to it, dynamic int8 quantizes the weights offline (MatMul; Conv
    stays float) and static int8 loads (per-channel QDQ needs opset 13)."""
    (tmp_path / "test_ppocr.py").write_text(textwrap.dedent(SUITE))
    run = run_suite(tmp_path / "test_ppocr.py")
    assert run.returncode == 0, run.output
    fp32 = run.row("ppocr-textdir-onnxruntime-fp32-b1")
    assert fp32["accuracy"] >= 0.95 and fp32["f1_macro"] >= 0.95
    dynamic = run.row("ppocr-textdir-onnxruntime-dynamic-int8-dyn-b1")
    # the classifier's one MatMul (200 x 2) is all dynamic int8 quantizes: the file stays fp32-sized, not 1.12x
    assert dynamic["quantized_ops"] == "Conv 0/53, MatMul 1/1" and dynamic["size_ratio"] < 1.01
    static = run.row("ppocr-textdir-onnxruntime-static-int8-qdq-b1")
    assert static["quantized_ops"].startswith("Conv 53/53") and static["size_ratio"] < 0.6
    assert static["accuracy"] >= fp32["accuracy"] - 0.03


def test_the_onnx_graph_rebuilt_as_torch_matches_onnxruntime_and_exports_with_a_dynamic_batch():
    import torch

    module = text_direction.torch_module()  # raises when it differs from onnxruntime on 16 lines
    kinds = [type(layer).__name__ for layer in module.layers.values()]
    # the 35 BatchNormalization nodes follow convolutions: folded into them, as onnxruntime's optimizer does
    assert kinds.count("Conv2d") == 53 and kinds.count("BatchNorm2d") == 0 and kinds.count("Linear") == 1
    assert "Conv_0" in module.layers  # `Conv@0` in the ONNX graph: `mixed` names it layers.Conv_0
    x = torch.from_numpy(text_direction.load_data().eval_inputs["x"][:3])
    program = torch.export.export(module, (x[:2],), dynamic_shapes=(({0: torch.export.Dim("batch")},),))
    with torch.no_grad():
        assert torch.allclose(program.module()(x), module(x), atol=1e-6)


def test_an_op_the_rebuild_does_not_know_is_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from harness.models.onnx_torch import UnsupportedOnnx, onnx_to_torch

    graph = helper.make_graph([helper.make_node("Erf", ["x"], ["y"])], "erf",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "erf.onnx"))
    with pytest.raises(UnsupportedOnnx, match=r"ops \['Erf'\] are not rebuilt as torch"):
        onnx_to_torch(tmp_path / "erf.onnx")
