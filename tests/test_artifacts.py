from pathlib import Path

import numpy as np
import pytest

from harness.artifacts import ArtifactCache, BuiltModel, TensorSpec, content_key
from harness.data import Dataset
from harness.models.spec import ModelSpec
from harness.quantize import BuildContext, recipes_for
from tests.onnx_models import gemm_model


def test_content_key_is_stable_and_order_independent():
    a = content_key({"model": "m", "params": {"x": 1, "y": [1, 2]}, "libraries": {"onnx": "1"}})
    b = content_key({"libraries": {"onnx": "1"}, "params": {"y": [1, 2], "x": 1}, "model": "m"})
    assert a == b


def test_content_key_changes_with_every_part():
    base = {"model": "m", "model_fingerprint": "f", "recipe": "r", "params": {"p": 1}, "libraries": {"onnx": "1.0"}}
    keys = {content_key(base)}
    for field, value in (("model", "n"), ("model_fingerprint", "g"), ("recipe", "s"), ("params", {"p": 2}),
                         ("libraries", {"onnx": "1.1"})):
        keys.add(content_key({**base, field: value}))
    assert len(keys) == 6


def _built(out: Path) -> BuiltModel:
    (out / "model.bin").write_bytes(b"weights")
    return BuiltModel("model.bin", (TensorSpec("input", ("batch", 3), "float32"),), (), "onnxruntime")


def test_cache_builds_once_and_records_a_manifest(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls = []

    def build(out):
        calls.append(out)
        return _built(out)

    first, built = cache.get_or_build({"k": 1}, build, {"framework": "onnxruntime"})
    again, built_again = cache.get_or_build({"k": 1}, build, {"framework": "onnxruntime"})
    assert built and not built_again and len(calls) == 1
    assert again.path == first.path and again.manifest["sha256"] == first.manifest["sha256"]
    assert first.manifest["size_bytes"] == len(b"weights")
    assert first.manifest["inputs"][0]["name"] == "input"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_failed_build_leaves_nothing_behind(tmp_path):
    cache = ArtifactCache(tmp_path)

    def broken(out):
        (out / "half.onnx").write_bytes(b"x")
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError, match="converter crashed"):  # the build's own error reaches the caller
        cache.get_or_build({"k": 2}, broken, {})
    assert list(tmp_path.iterdir()) == []


def test_key_follows_the_model_weights_and_data(tmp_path):
    """Same recipe, different fp32 model or data => different cache key."""
    x = np.zeros((4, 3), np.float32)
    data_a = Dataset("a", {"input": x}, {"input": x}, np.zeros(4, np.int64))
    data_b = Dataset("b", {"input": x + 1}, {"input": x}, np.zeros(4, np.int64))
    onnx_a = gemm_model(tmp_path / "a.onnx", np.ones((3, 2)), np.zeros(2))
    onnx_b = gemm_model(tmp_path / "b.onnx", np.ones((3, 2)), np.ones(2))
    recipe = recipes_for("onnxruntime", "static-int8")[0]
    cache = ArtifactCache(tmp_path / "cache")

    def key(path, data):
        spec = ModelSpec(name="m", data=data, onnx_file=path)
        return content_key(BuildContext(spec, data, cache, tmp_path).key_parts(recipe))

    assert len({key(onnx_a, data_a), key(onnx_b, data_a), key(onnx_a, data_b)}) == 3
    assert key(onnx_a, data_a) == key(onnx_a, data_a)
