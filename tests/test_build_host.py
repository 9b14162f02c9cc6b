"""The AOTInductor packages' ISA key is probed once per build host (harness/quantize/build_host.py)
and probed again when what decides it changes; a run that finds it remembered imports no
Inductor to compute a package's key."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")

from harness.artifacts import ArtifactCache  # noqa: E402
from harness.quantize import build_host, inductor_cache  # noqa: E402
from harness.quantize.torch_aoti import host_isa, isa_key  # noqa: E402


def fresh_probe(cache_root) -> dict:
    """What Inductor picks on this host now (the oracle: no remembering)."""
    with inductor_cache.probing(cache_root):
        isa = host_isa()
    return {"vec_isa": isa["vec_isa"], "compile_flags": isa["compile_flags"]}


def never_probe() -> dict:
    raise AssertionError("probed again although this host's identity was remembered")


def test_isa_key_is_remembered_per_identity_and_probed_again_when_it_changes(tmp_path, monkeypatch):
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    ctx = SimpleNamespace(cache=ArtifactCache(tmp_path / "artifacts"))
    first = isa_key(ctx)
    assert first == fresh_probe(tmp_path)
    remembered, probed = build_host.remembered(tmp_path, never_probe)
    assert not probed and {k: remembered[k] for k in first} == first

    # Inductor reads ATEN_CPU_CAPABILITY when it picks the ISA ("default": no vector ISA):
    # another identity, probed anew, and the answer is what Inductor now picks
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    with pytest.raises(AssertionError, match="probed again"):
        build_host.remembered(tmp_path, never_probe)
    assert isa_key(ctx) == fresh_probe(tmp_path)
    assert len(list((tmp_path / "inductor" / build_host.FOLDER).glob("*.json"))) == 2

    monkeypatch.delenv("ATEN_CPU_CAPABILITY")  # back to the first identity: its answer, unprobed
    assert build_host.remembered(tmp_path, never_probe)[1] is False
    assert isa_key(ctx) == first


WARM_KEY = """
import json, sys
from types import SimpleNamespace
from harness.artifacts import ArtifactCache
from harness.quantize.torch_aoti import isa_key
key = isa_key(SimpleNamespace(cache=ArtifactCache(sys.argv[1])))
print(json.dumps({"key": key, "inductor": "torch._inductor" in sys.modules}))
"""


def test_a_remembered_isa_key_imports_no_inductor(tmp_path):
    def key_in_fresh_process() -> dict:
        done = subprocess.run([sys.executable, "-c", WARM_KEY, str(tmp_path / "artifacts")], capture_output=True,
                              text=True, timeout=300, check=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        return json.loads(done.stdout.strip().splitlines()[-1])

    cold = key_in_fresh_process()
    assert cold["inductor"]  # the first process probed
    warm = key_in_fresh_process()
    assert warm == {"key": cold["key"], "inductor": False}
