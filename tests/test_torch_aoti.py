"""AOTInductor packages on this CPU (issue 21): the digits fp32 and static-int8 packages built
for real (compiled with the host's C++ compiler, cached in the shared cache), run by the real
runner through a BenchSession, scored from the package itself, the int8 speedup against the AOTI
fp32 row, the ISA they were built for in the row; and the faults: a target whose CPU lacks that
ISA, a case batch the package was not compiled for, a build host without a C++ compiler.
Beside them the eager PT2E program of the same mode: reference numerics (issue 21, item 4), in
the row as such and never a candidate of the answer."""
from __future__ import annotations

import json
import platform
from dataclasses import replace

import numpy as np
import pytest

from harness import settings
from harness.artifacts import ArtifactCache
from harness.models import digits_cnn
from harness.models.digits_cnn import load_data
from harness.quantize import torch_aoti
from harness.quantize.base import BuildContext
from harness.session import BenchSession, SessionOptions
from harness.suite import Suite
from targets import TargetConfig
from targets.base import TargetInfo
from tests import case_files

CACHE = settings.cache_dir()
pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="the AOTI recipes build x86 CPU packages")
FP32 = "digits-cnn-torch-fp32-aoti-b1"
INT8 = "digits-cnn-torch-static-int8-pt2e-x86-aoti-b1"
EAGER = "digits-cnn-torch-static-int8-pt2e-x86-b1"  # the same quantizer's q/dq graph, run eagerly


def _cases(batch: int = 1):
    suite = Suite(model=digits_cnn, frameworks=("torch",), modes=("fp32", "static-int8"), name="digits-cnn",
                  budgets={"static-int8": 1.0}, batch_sizes=(batch,))
    return {c.case_id: c for c in suite.cases() if c.recipe is not None and c.recipe.execution in ("aoti", "")}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("aoti-run")
    options = SessionOptions(results_dir=work / "results", cache_dir=CACHE, min_runs=20, min_duration_s=0.1,
                             max_duration_s=1.0, warmup_runs=2, threads=1, run_id="aoti")
    session = BenchSession(TargetConfig(name="local", kind="local"), options)
    cases = _cases()
    try:
        rows = {case_id: session.run_case(cases[case_id]) for case_id in (FP32, INT8, EAGER)}
    finally:
        session.close()
    return session, rows


def _run_alone(case, tmp_path, run_id: str) -> tuple[BenchSession, dict]:
    """(the closed session, the row) of one case run in a session of its own, with an empty
    artifact cache under tmp_path: whatever it builds is built for it."""
    options = SessionOptions(results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", run_id=run_id)
    session = BenchSession(TargetConfig(name="local", kind="local"), options)
    try:
        return session, session.run_case(case)
    finally:
        session.close()


def _context(cache_dir=CACHE) -> BuildContext:
    return BuildContext(digits_cnn, load_data(), ArtifactCache(cache_dir / "artifacts"), CACHE / "models")


def test_packages_run_in_the_runner_and_int8_is_compared_with_the_aoti_fp32(run):
    session, rows = run
    fp32, int8 = rows[FP32], rows[INT8]
    for row in (fp32, int8):
        assert row["status"] == "ok", row["reason"]
        assert row["built_isa"] and "needs" in row["built_isa"]
        result = json.loads((session.store.dir / "work" / row["case_id"] / "result.json").read_text())
        assert result["runtime_details"]["format"] == "aoti"
        assert row["init_ms"] > 0 and row["first_ms"] > 0
        # a fresh process's time to its first result: importing torch, loading the package, the first call
        assert row["cold_start_ms"] == pytest.approx(1000 * result["phases_s"]["runtime_import"] + row["init_ms"]
                                                     + row["first_ms"])
    assert fp32["accuracy"] >= 0.95 and int8["accuracy"] >= fp32["accuracy"] - 0.01
    assert int8["baseline_case"] == FP32
    assert int8["speedup"] == pytest.approx(fp32["latency_p50_ms"] / int8["latency_p50_ms"])
    manifest = case_files.artifact(int8).manifest
    assert manifest["notes"]["torch_load"]["format"] == "aoti"
    assert manifest["notes"]["fused_int8_kernels"], "the int8 package must call oneDNN's int8 kernels"
    # the row says which heavy calls became int8 kernels (the fp32 package has nothing to say)
    assert int8["delegated_ops"] == manifest["notes"]["delegation"]["summary"].strip()
    assert int8["delegated_ops"].startswith("inductor int8 ") and isinstance(int8["delegation_complete"], bool)
    assert "delegated_ops" not in fp32


def test_eager_rows_are_reference_numerics_never_a_candidate_and_packages_are_deployed(run):
    from harness.history.candidate import candidate
    from harness.history.recommend import recommend
    from harness.profiles import QUICK
    from harness.quantize import RECIPES

    session, rows = run
    eager = rows[EAGER]
    assert eager["status"] == "ok", eager["reason"]
    assert eager["execution"] == "reference" and rows[FP32]["execution"] == rows[INT8]["execution"] == "deployed"
    judged = candidate(eager, 100.0)  # whatever its accuracy and speed
    assert not judged.eligible and "reference numerics, not a deployment format" in judged.why
    assert candidate(rows[INT8], 100.0).eligible
    import pandas as pd

    [answer] = recommend(pd.DataFrame([rows[FP32], rows[INT8], eager]), 100.0)
    assert answer.choice.row["case_id"] in (FP32, INT8)
    assert any(line.startswith("excluded torch/static-int8 (pt2e-x86): reference numerics") for line in answer.evidence())
    # the registry: eager torch programs are nightly-only references, the AOTI packages the quick torch rows
    for recipe in RECIPES["torch"]:
        if recipe.execution == "":
            assert recipe.reference and QUICK not in recipe.profiles, recipe.name
        if recipe.execution == "aoti" and recipe.slug != "torchao-aoti" and recipe.mode != "fp16":  # both nightly
            assert not recipe.reference and QUICK in recipe.profiles, recipe.name


def test_a_case_batch_the_package_was_not_compiled_for_is_na_at_collection(tmp_path):
    cases = _cases(batch=8)
    case = cases["digits-cnn-torch-static-int8-pt2e-x86-aoti-b8"]
    assert "static input shapes for batch 1" in case.na_reason and "runs batch 8" in case.na_reason
    assert cases["digits-cnn-torch-static-int8-pt2e-x86-b8"].na_reason == ""  # the eager program takes any batch
    session, row = _run_alone(case, tmp_path, "batch8")
    assert row["status"] == "n/a" and row["reason"] == case.na_reason
    assert not list((tmp_path / "cache").rglob("manifest.json")), "nothing is built for a case that cannot run"
    assert not (session.store.dir / "work").exists() or not any((session.store.dir / "work").iterdir()), \
        "no runner (neither the case's nor its fp32 baseline's) ran"


def test_accuracy_is_the_package_own(run):
    """The runner's evaluation outputs are the package's: loading it here gives the same logits."""
    import torch._inductor

    session, rows = run
    for case_id in (FP32, INT8):
        inputs, got = case_files.runner_io(session, case_id)
        package = torch._inductor.aoti_load_package(str(case_files.artifact(rows[case_id]).model_file))
        want = np.concatenate([package(torch.from_numpy(inputs[i:i + 1])).numpy() for i in range(len(inputs))])
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-5)


def _target(flags: str) -> TargetInfo:
    return TargetInfo(name="avx2-box", kind="ssh", profile="generic", threads=1, arch="x86_64",
                      device="an AVX2-only CPU", host="avx2-box", facts={"cpu_flags": flags})


def test_a_package_built_for_an_isa_the_target_lacks_is_na_before_it_runs():
    ctx = _context()
    artifact, _ = ctx.artifact(torch_aoti.FP32)
    needs = artifact.manifest["notes"]["built_isa"]["requires"]
    # the ISA is part of the cache key: a shared cache never hands this host's package to another build host
    assert ctx.key_parts(torch_aoti.FP32)["build_host"]["vec_isa"] == artifact.manifest["notes"]["built_isa"]["vec_isa"]
    if not any(f.startswith(("avx512", "amx")) for f in needs):
        pytest.skip(f"this host builds for {needs}: no AVX-512 to lack")
    reason = torch_aoti.FP32.artifact_reason(artifact, _target("fpu sse sse2 sse4_2 avx avx2 fma f16c"), 1)
    assert reason and "lacks" in reason and "avx512f" in reason and "avx2-box" in reason
    assert torch_aoti.FP32.artifact_reason(artifact, _target(" ".join(needs)), 1) is None
    unknown = replace(_target(""), facts={})
    assert "does not report its CPU flags" in torch_aoti.FP32.artifact_reason(artifact, unknown, 1)
    batch = torch_aoti.FP32.artifact_reason(artifact, _target(" ".join(needs)), 8)
    assert batch and "compiled for batch 1" in batch and "batch 8" in batch


def test_a_build_host_without_a_compiler_gets_one_line_naming_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++, c++ or clang++ anywhere
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(torch_aoti.CompilerMissing) as caught:
        _context(tmp_path).artifact(torch_aoti.FP32)  # an empty cache: it must build
    message = str(caught.value)
    assert "no C++ compiler" in message and "install g++" in message and "apt-get install g++" in message
    assert "\n" not in message and not list((tmp_path / "artifacts").glob("*/manifest.json"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    assert "$CXX=" in torch_aoti.compiler_missing()


def test_a_cold_build_compiles_under_its_cache_not_in_tmp(tmp_path):
    """Inductor compiles a package under the cache it is built for (quantize/inductor_cache.py),
    not in /tmp/torchinductor_<user>: an empty cache is a cold build. The headers every package
    shares are precompiled there, and the build's own sources and objects are gone once the
    package holds them."""
    import os

    artifact, built = _context(tmp_path).artifact(torch_aoti.FP32)
    inductor = tmp_path / "inductor"
    assert built and artifact.model_file.is_file()
    assert list((inductor / "precompiled_headers").glob("*.h.gch")), "the shared headers are precompiled in the cache"
    assert not list(inductor.glob("build-*")), "the build's own directory is removed"
    # and the process's Inductor cache is no longer the build's (torch itself may have set its default since)
    assert str(tmp_path) not in os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")


def test_a_user_model_with_an_op_inductor_cannot_lower_gets_a_row_naming_it_and_the_run_goes_on(tmp_path):
    """A user's model (torch_model()) whose torch.sparse.mm Inductor leaves to AOTInductor's proxy
    executor, where the package fails (torch 2.13): its AOTI row is n/a naming the op; the next
    case of the same run (the TorchScript fp32 of the same model) still runs."""
    from tests.user_models import sparse_head

    suite = Suite(model=sparse_head, frameworks=("torch",), modes=("fp32",), name="lowering")
    cases = {c.case_id: c for c in suite.cases()}
    options = SessionOptions(results_dir=tmp_path / "results", cache_dir=CACHE, min_runs=5, min_duration_s=0.05,
                             max_duration_s=1.0, warmup_runs=1, threads=1, run_id="lowering")
    session = BenchSession(TargetConfig(name="local", kind="local"), options)
    try:
        aoti = session.run_case(cases["digits-sparse-head-torch-fp32-aoti-b1"])
        after = session.run_case(cases["digits-sparse-head-torch-fp32-torchscript-b1"])
    finally:
        session.close()
    assert aoti["status"] == "n/a", aoti["reason"]
    assert "aten::_sparse_addmm" in aoti["reason"] and "Inductor" in aoti["reason"]
    assert "\n" not in aoti["reason"]
    assert after["status"] == "ok", after["reason"]


def test_a_user_model_calling_its_own_custom_op_is_na_naming_it(tmp_path):
    """The package would call the model's torch.library op by name on the target, where the
    runner loads none of the model's code: n/a at build, naming the op, not a failed runner."""
    from tests.user_models import custom_op_mlp

    [case] = [c for c in Suite(model=custom_op_mlp, frameworks=("torch",), modes=("fp32",), name="custom").cases()
              if c.case_id == "digits-custom-op-torch-fp32-aoti-b1"]
    _, row = _run_alone(case, tmp_path, "custom")
    assert row["status"] == "n/a" and "quantbench_user::soft_clip" in row["reason"], row["reason"]
    assert not list((tmp_path / "cache").rglob("manifest.json"))


def test_the_runner_loads_a_package_without_importing_inductor(run):
    """Loading is the package's C++ loader: importing torch._inductor (seconds) is no part of init_ms."""
    import subprocess
    import sys

    session, rows = run
    folder = case_files.artifact(rows[INT8]).path
    code = ("import json, sys; from harness.runner.backend_torch import Backend; "
            f"b = Backend({str(folder / 'model.pt2')!r}, json.load(open({str(folder / 'manifest.json')!r})), 1, {{}}); "
            "print('inductor' if 'torch._inductor' in sys.modules else 'no inductor')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "no inductor", out.stdout + out.stderr
