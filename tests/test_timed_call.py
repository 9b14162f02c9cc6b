"""The timed call is the same work in every backend: host inputs in the model's own dtypes go
in, every output comes back as a host numpy array in the model's own dtype (docs/architecture.md,
"What one timed call is"). Checked on the real backends with digits-cnn's fp32 artifacts."""
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

    def make(framework: str):
        ctx = BuildContext(digits_cnn, data, ArtifactCache(CACHE / "artifacts"), CACHE / "models")
        recipe = next(r for r in recipes_for(framework, "fp32") if not r.execution and r.source in ("", "keras"))
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


def test_torch_enters_inference_mode_once_not_per_call(backend):
    import torch

    session = backend("torch")
    assert torch.is_inference_mode_enabled()  # entered when the backend was made, for the whole process
    session.close()
    assert not torch.is_inference_mode_enabled()
