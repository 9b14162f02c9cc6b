"""A speedup compares quantization, not file formats: with two models as users bring them
(`torch_model()`: an LSTM classifier and a MobileNet-style CNN), every row names the fp32 baseline
it is compared with, and that baseline runs the same way (TorchScript for the torch.ao recipe,
a torch.export program for torchao, a compiled program for the inductor recipe); an fp32 artifact
far slower than its eager module says so; onnxruntime's qat-int8 file stores int8 weights, or
says why it is not smaller."""
from __future__ import annotations

import json

import pytest

from harness import Suite
from harness.baselines import SLOWER_THAN_EAGER
from harness.quantize import fp32_recipe, recipes_for
from harness import settings
from harness.session import BenchSession, SessionOptions
from targets import TargetConfig
from tests.user_models import lstm, mobilenet

CACHE = settings.cache_dir()
X86 = __import__("platform").machine() in ("x86_64", "AMD64")


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> dict[str, dict]:
    """Both models: torch fp32 (both formats) and dynamic-int8 (torch.ao TorchScript, torchao
    export), onnxruntime fp32 and qat-int8; one thread, short loops (behaviour, not speed)."""
    options = SessionOptions(results_dir=tmp_path_factory.mktemp("formats"), cache_dir=CACHE, threads=1, min_runs=20,
                             min_duration_s=0.1, max_duration_s=2, warmup_runs=2, run_id="formats")
    session = BenchSession(TargetConfig(name="local", kind="local"), options)
    done = {}
    try:
        for model in (lstm, mobilenet):
            suite = Suite(model=model, frameworks=("torch", "onnxruntime"), modes=("fp32", "dynamic-int8", "qat-int8"),
                          name="formats")
            for case in suite.cases():
                if case.recipe is None or case.recipe.slug in ("ao-qnnpack", "pt2e-arm") or "inductor" in case.recipe.slug:
                    continue
                if case.framework == "onnxruntime" and case.mode == "dynamic-int8" or case.framework == "torch" and case.mode == "qat-int8":
                    continue
                done[case.case_id] = session.run_case(case)
    finally:
        session.close()
    return done


def _manifest(row: dict) -> dict:
    return json.loads((CACHE / "artifacts" / row["artifact_key"] / "manifest.json").read_text())


@pytest.mark.skipif(not X86, reason="torch.ao's x86 engine is the TorchScript recipe checked here")
@pytest.mark.parametrize("model", ["digits-lstm", "digits-mobilenet"])
def test_each_speedup_names_a_baseline_run_the_same_way(rows, model):
    ao = rows[f"{model}-torch-dynamic-int8-ao-x86-b1"]
    assert ao["status"] == "ok", ao["reason"]
    assert ao["baseline_case"] == f"{model}-torch-fp32-torchscript-b1"  # TorchScript against TorchScript
    baseline = rows[ao["baseline_case"]]
    assert baseline["status"] == "ok", baseline["reason"]
    assert _manifest(baseline)["notes"]["torch_load"]["format"] == _manifest(ao)["notes"]["torch_load"]["format"] == "torchscript"
    assert ao["baseline_recipe"] == baseline["recipe"] and ao["speedup"] == pytest.approx(
        baseline["latency_p50_ms"] / ao["latency_p50_ms"])
    torchao = rows[f"{model}-torch-dynamic-int8-torchao-b1"]
    assert torchao["status"] == "ok", torchao["reason"]
    assert torchao["baseline_case"] == f"{model}-torch-fp32-b1"  # a torch.export program against one
    assert _manifest(rows[torchao["baseline_case"]])["notes"]["torch_load"]["format"] == "torch.export"
    qat = rows[f"{model}-onnxruntime-qat-int8-qdq-b1"]
    assert qat["baseline_case"] == f"{model}-onnxruntime-fp32-b1"
    # the AOTInductor package against the AOTI fp32 package
    aoti = rows[f"{model}-torch-dynamic-int8-pt2e-x86-aoti-b1"]
    assert aoti["status"] == "ok", aoti["reason"]
    assert aoti["baseline_case"] == f"{model}-torch-fp32-aoti-b1" and aoti["execution"] == "deployed"
    # what each row is: the eager programs are reference numerics; the legacy torch.ao recipe is
    # deployed TorchScript, labelled deprecated with the torch version that warned at its build
    assert torchao["execution"] == rows[torchao["baseline_case"]]["execution"] == "reference"
    assert ao["execution"] == baseline["execution"] == qat["execution"] == "deployed"
    import torch

    assert "torch.ao.quantization is deprecated" in ao["deprecated"] and f"torch {torch.__version__}" in ao["deprecated"]
    assert "deprecated" not in aoti and "deprecated" not in qat


def test_the_compiled_recipe_is_compared_with_fp32_compiled_alike():
    [compiled] = [r for r in recipes_for("torch", "static-int8") if r.slug == "pt2e-x86-inductor"]
    baseline = fp32_recipe("torch", compiled)
    assert baseline.slug == "inductor" and baseline.params["compile"] == compiled.params["compile"] == "inductor"
    assert fp32_recipe("torch", [r for r in recipes_for("torch", "dynamic-int8") if r.slug == "torchao"][0]).slug == "fp32"


@pytest.mark.parametrize("model", ["digits-lstm", "digits-mobilenet"])
def test_an_fp32_artifact_far_slower_than_its_eager_module_says_so(rows, model):
    for case_id in (f"{model}-torch-fp32-b1", f"{model}-torch-fp32-torchscript-b1"):
        row = rows[case_id]
        measured = _manifest(row)["notes"]["versus_eager"]
        assert measured["eager_ms"] > 0 and measured["artifact_ms"] > 0
        if measured["ratio"] >= SLOWER_THAN_EAGER:  # whatever this machine measured, the row agrees with it
            assert f"ran {measured['ratio']:.1f}x slower than the eager module" in row["execution_note"]
            dependents = [r for r in rows.values() if r.get("baseline_case") == case_id and r["case_id"] != case_id]
            assert dependents and all(r["execution_note"].startswith(f"baseline {case_id}: ") for r in dependents)
        else:
            assert row.get("execution_note") is None


def test_qat_int8_onnx_files_store_int8_weights_or_say_why_not(rows):
    cnn = rows["digits-mobilenet-onnxruntime-qat-int8-qdq-b1"]
    assert cnn["status"] == "ok", cnn["reason"]
    storage = _manifest(cnn)["notes"]["weight_storage"]
    assert storage["float_weight_bytes"] == 0 and storage["integer_weight_bytes"] > 0
    assert cnn["size_ratio"] < 1.0 and cnn.get("size_note") is None
    lstm_row = rows["digits-lstm-onnxruntime-qat-int8-qdq-b1"]
    assert lstm_row["status"] == "ok", lstm_row["reason"]
    # the PT2E x86 quantizer leaves the LSTM float: the row says so instead of implying int8
    assert "LSTM" in lstm_row["size_note"] and "not quantized by this recipe" in lstm_row["size_note"]
