"""Delegation in the row (issue 21, item 3): which operators a LiteRT interpreter's XNNPACK
delegate took on the device and which ran on builtin kernels, and which heavy calls of an
AOTInductor package Inductor fused into oneDNN int8 kernels and which stayed float.

Real artifacts of the digits CNN (built into the shared cache), the real LiteRT interpreter
through the runner's backend and a BenchSession (fresh runner process), the real packages'
generated C++. Expectations come from the artifacts themselves: the ops a model holds, the
ops its interpreter reports, the calls its wrapper makes."""
from __future__ import annotations

import platform
import re

import pytest

from harness import settings
from harness.artifacts import ArtifactCache
from harness.models import digits_cnn
from harness.models.digits_cnn import load_data
from harness.quantize import RECIPES, aoti_kernels, torch_aoti
from harness.quantize.base import BuildContext
from harness.quantize.tflite_graph import op_names
from harness.runner.backend_tflite import Backend
from harness.session import BenchSession, SessionOptions
from harness.suite import Suite
from targets import TargetConfig

CACHE = settings.cache_dir()


@pytest.fixture(scope="module")
def ctx() -> BuildContext:
    return BuildContext(digits_cnn, load_data(), ArtifactCache(CACHE / "artifacts"), CACHE / "models")


def _tflite(mode: str):
    return next(r for r in RECIPES["tflite"] if r.mode == mode and r.slug == "litert-torch")


def _listed(summary: str) -> dict[str, int]:
    tail = summary.split("builtin kernels: ", 1)[1] if "builtin kernels: " in summary else ""
    return {name: int(n) for name, n in re.findall(r"(\w+) x(\d+)", tail)}


@pytest.mark.parametrize("mode", ["fp32", "static-int8", "int16x8"])
def test_litert_rows_say_which_ops_xnnpack_took_and_which_ran_on_builtin_kernels(ctx, mode):
    artifact, _ = ctx.artifact(_tflite(mode))
    ops = [op["op_name"] for op in __import__("ai_edge_litert.interpreter", fromlist=["Interpreter"])
           .Interpreter(model_path=str(artifact.model_file))._get_ops_details()]
    with_xnnpack = Backend(str(artifact.model_file), artifact.manifest, 1, {}).details["delegation"]
    taken, total, parts = map(int, re.match(r"xnnpack (\d+)/(\d+) ops in (\d+) partition", with_xnnpack["summary"]).groups())
    rest = _listed(with_xnnpack["summary"])
    assert total == len(ops) and taken + sum(rest.values()) == total  # every op of the model, once
    assert set(rest) <= set(ops)
    assert with_xnnpack["complete"] == (parts > 0 and taken == total)
    if mode == "int16x8":  # XNNPACK has no int16-activation kernels: the heavy ops stay on builtin ones
        assert not with_xnnpack["complete"] and {"CONV_2D", "FULLY_CONNECTED"} & set(rest), with_xnnpack
    without = Backend(str(artifact.model_file), artifact.manifest, 1, {"xnnpack": False}).details["delegation"]
    assert without["summary"].startswith(f"xnnpack not requested: {len(ops)} ops") and not without["complete"]
    assert set(op_names(artifact.model_file)) == set(ops)


def test_a_litert_row_carries_the_delegation_its_runner_reported(tmp_path):
    suite = Suite(model=digits_cnn, frameworks=("tflite",), modes=("fp32", "int16x8"), name="digits-cnn")
    case = next(c for c in suite.cases() if c.case_id == "digits-cnn-tflite-int16x8-litert-torch-b1")
    options = SessionOptions(results_dir=tmp_path / "results", cache_dir=CACHE, min_runs=5, min_duration_s=0.05,
                             max_duration_s=1.0, warmup_runs=1, threads=1, run_id="delegation")
    session = BenchSession(TargetConfig(name="local", kind="local"), options)
    try:
        row = session.run_case(case)
    finally:
        session.close()
    assert row["status"] == "ok", row["reason"]
    result = __import__("json").loads((session.store.dir / "work" / row["case_id"] / "result.json").read_text())
    reported = result["runtime_details"]["delegation"]
    assert row["delegated_ops"] == reported["summary"] and row["delegation_complete"] == reported["complete"]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the AOTI recipes build x86 CPU packages")
def test_aoti_int8_packages_say_which_heavy_calls_are_int8_kernels_and_which_stayed_float(ctx):
    by_slug = {(r.mode, r.slug): r for r in torch_aoti.RECIPES}
    for key in (("static-int8", "pt2e-x86-aoti"), ("dynamic-int8", "pt2e-x86-aoti"), ("fp32", "aoti")):
        artifact, _ = ctx.artifact(by_slug[key])
        notes = artifact.manifest["notes"]
        calls = aoti_kernels.census(artifact.model_file)
        assert calls and notes["kernel_calls"] == dict(sorted(calls.items()))
        if key[0] == "fp32":
            assert "delegation" not in notes  # nothing was to be quantized
            continue
        found = notes["delegation"]
        done, total = map(int, re.match(r"inductor int8 (\d+)/(\d+) ", found["summary"]).groups())
        heavy = {n: c for n, c in calls.items() if aoti_kernels.HEAVY.search(n)}
        assert total == sum(heavy.values()) and found["complete"] == (done == total)
        assert done == sum(c for n, c in heavy.items() if aoti_kernels.INT8.search(n))
        if key[0] == "dynamic-int8":  # X86InductorQuantizer(is_dynamic) covers Linear layers: the convs stay float
            assert not found["complete"] and "; float: " in found["summary"] and "conv" in found["summary"].split("; float: ")[1]
