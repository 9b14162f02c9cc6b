"""The timed call is the same work in every backend: host arrays of real values go in, every
output comes back as a host numpy array of real values, quantizing and dequantizing included
(docs/architecture.md, "What one timed call is"). Checked on the real backends with digits-cnn's
fp32 artifacts, and on TFLite's full-integer (int8 I/O) one."""
from __future__ import annotations


import numpy as np
import pytest

from harness.artifacts import ArtifactCache
from harness.data import resolve_data
from harness.models import digits_cnn
from harness.quantize import BuildContext, recipes_for
from harness import settings

CACHE = settings.cache_dir()
BACKENDS = {"onnxruntime": "backend_onnxruntime", "torch": "backend_torch", "tflite": "backend_tflite"}


@pytest.fixture(scope="module")
def data():
    return resolve_data(digits_cnn.data)


@pytest.fixture
def backend(data):
    """backend(framework): the runner's backend on digits-cnn's fp32 artifact, in this process."""
    import importlib

    made = []

    def make(framework: str, mode: str = "fp32"):
        ctx = BuildContext(digits_cnn, data, ArtifactCache(CACHE / "artifacts"), CACHE / "models")
        recipe = next(r for r in recipes_for(framework, mode) if not r.execution and r.source in ("", "keras"))
        artifact, _ = ctx.artifact(recipe)
        module = importlib.import_module(f"harness.runner.{BACKENDS[framework]}")
        made.append(module.Backend(str(artifact.model_file), artifact.manifest, 1, {}))
        return made[-1]

    yield make
    for session in made:  # torch's inference mode must not leak into the other tests of this process
        getattr(session, "close", lambda: None)()


@pytest.mark.parametrize("framework", sorted(BACKENDS))
def test_a_timed_call_takes_prepared_inputs_and_returns_host_arrays(framework, data, backend):
    session = backend(framework)
    batch = {"input": data.eval_inputs["input"][:4]}
    prepared = session.prepare(batch)
    outputs = session.run(prepared)
    assert isinstance(outputs, list) and len(outputs) == len(session.output_names)
    assert all(type(o) is np.ndarray for o in outputs)  # host numpy arrays, nothing left to fetch
    assert outputs[0].shape == (4, 10) and outputs[0].dtype == np.float32  # the model's own output dtype
    # the same numbers as the evaluation path (fetch only dequantizes integer outputs)
    fetched = getattr(session, "fetch", lambda o: o)(session.run(session.prepare(batch)))
    np.testing.assert_allclose(fetched[0], outputs[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("framework", sorted(BACKENDS))
def test_every_call_hands_its_inputs_to_the_runtime(framework, data, backend):
    """A call reads its prepared inputs afresh: nothing is staged once and skipped later (the
    TFLite backend used to set the inputs on the first call only and time invoke() alone)."""
    session = backend(framework)
    first = session.prepare({"input": data.eval_inputs["input"][:1]})
    second = session.prepare({"input": data.eval_inputs["input"][1:2]})
    a, b, a_again = session.run(first), session.run(second), session.run(first)
    assert not np.allclose(a[0], b[0])  # two different digits
    np.testing.assert_allclose(a_again[0], a[0], rtol=1e-6, atol=1e-6)


def test_a_full_integer_tflite_model_quantizes_and_dequantizes_inside_the_timed_call(data, backend):
    """ONNX Runtime's QDQ graphs and torch's int8 modules run their Quantize/Dequantize ops inside
    the timed call; a full-integer TFLite model's input quantization and output dequantization
    are inside it too (they were in prepare() and fetch(), outside the timed region)."""
    session = backend("tflite", "static-int8")  # tf.lite.TFLiteConverter(keras, full int8, int8 I/O)
    interpreter = session.interpreter
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert np.dtype(inp["dtype"]) == np.int8 and np.dtype(out["dtype"]) == np.int8  # the premise: int8 I/O
    batch = {"input": data.eval_inputs["input"][:4]}
    prepared = session.prepare(batch)
    # what the runner times is run(prepared): its inputs are still real values, not int8 ...
    assert all(np.issubdtype(value.dtype, np.floating) for _, value, *_ in prepared.arrays)
    calls = []
    for name in ("_set_tensor", "_invoke", "_get_tensor"):  # record what the timed call hands the interpreter
        real = getattr(session, name)
        setattr(session, name, lambda *a, _real=real, _name=name: calls.append((_name, a)) or _real(*a))
    outputs = session.run(prepared)
    (set_call,) = [args for name, args in calls if name == "_set_tensor"]
    assert set_call[1].dtype == np.int8  # ... quantized inside the call, and handed over as int8
    assert [name for name, _ in calls] == ["_set_tensor", "_invoke", "_get_tensor"]
    # ... and its outputs come back as real values (dequantized inside it): nothing is left for scoring to do
    assert outputs[0].dtype == np.float32 and outputs[0].shape == (4, 10)
    # the same numbers as the interpreter gives with TFLite's affine quantization done by hand
    scale, zero = inp["quantization"]
    q = np.clip(np.rint(batch["input"].astype(np.float32) / np.float32(scale)) + zero, -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], q)
    interpreter.invoke()
    out_scale, out_zero = out["quantization"]
    expected = (interpreter.get_tensor(out["index"]).astype(np.float32) - out_zero) * np.float32(out_scale)
    np.testing.assert_allclose(outputs[0], expected, rtol=1e-6, atol=1e-6)
    assert (outputs[0].argmax(axis=1) == data.eval_labels[:4]).mean() >= 0.5  # real digits, scored as such


def test_torch_enters_inference_mode_once_not_per_call(backend):
    import torch

    session = backend("torch")
    assert torch.is_inference_mode_enabled()  # entered when the backend was made, for the whole process
    session.close()
    assert not torch.is_inference_mode_enabled()
