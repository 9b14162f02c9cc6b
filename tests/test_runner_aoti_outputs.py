"""The runner's AOTInductor call returns what aoti_load_package's callable returns, as host
arrays, for every output structure a package can have: one tensor, a flat tuple, a dict (the
runner rebuilds only a nested structure: harness/runner/backend_torch.AOTIPackage), and a
bfloat16 output (as float32: numpy has no bfloat16). Real packages, compiled here for small
modules (a few seconds each)."""
from __future__ import annotations

import platform
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or not shutil.which("g++"),
                                reason="AOTInductor CPU packages built here need x86 and g++")


class One(torch.nn.Module):
    def forward(self, x):
        return torch.tanh(x) * 2


class Pair(torch.nn.Module):
    def forward(self, x):
        return x + 1, x.sum(dim=1)


class Named(torch.nn.Module):
    def forward(self, x):
        return {"scaled": x * 3, "pooled": x.mean(dim=1)}


class Half(torch.nn.Module):
    def forward(self, x):
        return (x * 2).to(torch.bfloat16)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    import torch._inductor

    root = tmp_path_factory.mktemp("aoti-outputs")
    built = {}
    example = (torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7,)
    for name, module in (("one", One()), ("pair", Pair()), ("named", Named()), ("half", Half())):
        program = torch.export.export(module.eval(), example)
        path = torch._inductor.aoti_compile_and_package(program, package_path=str(root / f"{name}.pt2"))
        built[name] = path
    return built, example[0]


def _manifest(x) -> dict:
    return {"inputs": [{"name": "x", "shape": list(x.shape), "dtype": "float32"}], "outputs": [],
            "notes": {"torch_load": {"format": "aoti"}}}


@pytest.mark.parametrize("name", ["one", "pair", "named", "half"])
def test_the_runner_call_returns_the_package_outputs_as_host_arrays(packages, name):
    import torch._inductor

    from harness.runner.backend_torch import Backend

    paths, x = packages
    backend = Backend(paths[name], _manifest(x), 1, {})
    try:
        got = backend.run(backend.prepare({"x": x.numpy()}))
    finally:
        backend.close()
    want = torch._inductor.aoti_load_package(paths[name])(x)
    if isinstance(want, torch.Tensor):
        want = (want,)
    elif isinstance(want, dict):
        want = tuple(want.values())
    assert isinstance(got, list) and len(got) == len(want)
    for g, w in zip(got, want):
        assert isinstance(g, np.ndarray)
        expected = w.float().numpy() if w.dtype == torch.bfloat16 else w.numpy()
        assert g.dtype == expected.dtype and g.shape == expected.shape
        np.testing.assert_array_equal(g, expected)
    if name == "half":
        assert got[0].dtype == np.float32  # bfloat16 outputs reach the host as float32
