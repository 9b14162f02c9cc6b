"""TFLite end to end on digits-cnn: every mode from both sources (Keras through
tf.lite.TFLiteConverter, PyTorch through litert-torch + ai-edge-quantizer) in one pytest
run of a suite, then the runner's TFLite backend on its own: shapes that do not match,
the interpreter fallback, XNNPACK off."""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.artifacts import load_artifact
from harness.models.digits_cnn import load_data
from harness.runner_bundle import stage_runner
from targets.local import runner_env
from tests.conftest import FAST_TIMING, SuiteRun

SOURCES = {"keras": "keras", "litert-torch": "litert_torch"}  # case-id slug -> what its recipe names say
MODES = ("fp32", "fp16", "dynamic-int8", "static-int8", "qat-int8", "mixed", "int16x8")
INT8_WEIGHTS = ("dynamic-int8", "static-int8", "qat-int8", "mixed", "int16x8")
BUDGETS = {"fp16": 0.5, "dynamic-int8": 1.0, "static-int8": 1.5, "qat-int8": 1.0, "mixed": 1.0, "int16x8": 1.0}
# (mode, case-id slug, source): every mode from both sources, plus ai-edge-quantizer's legacy dynamic recipe
CASES = [(m, s, s) for s in SOURCES for m in MODES] + [("dynamic-int8", "litert-torch-legacy", "litert-torch")]

SUITE = f"""
from harness import Suite
from harness.models import digits_cnn

suite = Suite(model=digits_cnn, frameworks=("tflite",), modes={MODES + ("bf16",)!r}, budgets={BUDGETS!r})
test_case = suite.pytest_cases()
"""


def case_id(mode: str, source: str, batch: int = 1) -> str:
    return f"digits-cnn-tflite-{mode}-{source}-b{batch}"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> SuiteRun:
    """The suite in a fresh pytest process, as a user runs it; the artifact cache is the shared one."""
    work = tmp_path_factory.mktemp("tflite")
    (work / "test_tflite_digits.py").write_text(SUITE)
    results = work / "results"
    cmd = [sys.executable, "-m", "pytest", str(work / "test_tflite_digits.py"), "-p", "harness.pytest_plugin",
           "-p", "no:cacheprovider", "-q", f"--qb-results-dir={results}", "--qb-run-id=tflite", f"--rootdir={work}", *FAST_TIMING,
           "--qb-profile=nightly", "--qb-rounds=1"]  # the legacy dynamic recipe is nightly-only; rounds are tested elsewhere
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1800, env=dict(os.environ))
    return SuiteRun(proc.returncode, proc.stdout + proc.stderr, results / "tflite")


def result_json(run: SuiteRun, case: str) -> dict:
    return json.loads((run.run_dir / "work" / case / "result.json").read_text())


def artifact_of(run: SuiteRun, case: str):
    config = json.loads((run.run_dir / "work" / case / "config.json").read_text())
    return load_artifact(Path(config["artifact"]).parent)


def test_every_mode_from_both_sources_is_ok_and_bf16_is_na(run):
    assert run.returncode == 0, run.output[-3000:]
    assert len(run.results) == len(CASES) + 1
    for mode, slug, source in CASES:
        row = run.row(case_id(mode, slug))
        assert row["status"] == "ok", (row["case_id"], row["reason"])
        other = next(p for s, p in SOURCES.items() if s != source)
        assert SOURCES[source] in row["recipe"] and other not in row["recipe"], row["recipe"]  # the recipe tells the sources apart
        assert row["runtime"] == "ai_edge_litert.interpreter"
        assert row["runtime_version"] == importlib.metadata.version("ai-edge-litert")
    bf16 = run.row("digits-cnn-tflite-bf16-b1")
    assert bf16["status"] == "n/a" and "bfloat16" in bf16["reason"]


def test_accuracy_within_budget_against_the_same_source_fp32(run):
    for mode, slug, source in CASES:
        fp32 = run.row(case_id("fp32", source))
        assert 0.95 <= fp32["accuracy"] <= 1.0, (source, fp32["accuracy"])
        if mode in BUDGETS:
            row = run.row(case_id(mode, slug))
            loss = 100 * (fp32["accuracy"] - row["accuracy"])
            assert loss <= BUDGETS[mode] + 1e-9, (row["case_id"], row["accuracy"], fp32["accuracy"])
            assert row["within_budget"] is True or row["within_budget"] == 1.0, row["case_id"]
            # delta, speedup and size ratio are against the fp32 of the same source, not the other one
            assert row["accuracy_delta"] == pytest.approx(row["accuracy"] - fp32["accuracy"])
            assert row["size_ratio"] == pytest.approx(row["size_bytes"] / fp32["size_bytes"])
            assert row["speedup"] == pytest.approx(fp32["latency_p50_ms"] / row["latency_p50_ms"])
    static = [run.row(case_id("static-int8", s)) for s in SOURCES]
    assert all(100 * -r["accuracy_delta"] <= 1.5 for r in static)


def test_artifact_sizes(run):
    for mode, slug, _ in CASES:
        row = run.row(case_id(mode, slug))
        if mode in INT8_WEIGHTS:
            assert row["size_ratio"] <= 0.35, (row["case_id"], row["size_ratio"])
        elif mode == "fp16":
            assert row["size_ratio"] <= 0.55, (row["case_id"], row["size_ratio"])


def test_runner_records_interpreter_threads_xnnpack_and_io_quantization(run):
    for source in SOURCES:
        row = run.row(case_id("static-int8", source))
        result = result_json(run, row["case_id"])
        details = result["runtime_details"]
        assert details["interpreter"] == "ai_edge_litert.interpreter"
        assert details["num_threads"] == row["threads"] == result["threads"]
        assert isinstance(details["xnnpack"]["applied"], bool) and details["xnnpack"]["requested"] is True
        (inp,) = details["inputs"].values()
        assert inp["dtype"] == "int8" and inp["scale"] > 0 and -128 <= inp["zero_point"] <= 127
        assert inp["layout"] == "NCHW"
        # An edge device has LiteRT and no TensorFlow: the runner must not have imported it.
        assert not {"tensorflow", "keras", "tf_keras", "torch"} & set(result["imported_modules"])
        fp32 = result_json(run, case_id("fp32", source))["runtime_details"]
        assert fp32["xnnpack"]["applied"] is True and fp32["xnnpack"]["delegated_partitions"] >= 1
    int16 = result_json(run, case_id("int16x8", "keras"))["runtime_details"]
    assert all(v["dtype"] == "int16" for v in (*int16["inputs"].values(), *int16["outputs"].values()))


def test_manifest_records_layout_and_tensor_names(run):
    keras = artifact_of(run, case_id("fp32", "keras")).manifest
    assert keras["runtime"] == "tflite" and keras["file"] == "model.tflite"
    assert keras["inputs"] == [{"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    assert keras["notes"]["layout"] == {"input": "NCHW"}
    assert keras["notes"]["ops"][0] == "TRANSPOSE"  # the Keras model takes NCHW and permutes to NHWC inside
    assert keras["notes"]["source"].startswith("Keras 3")
    torch_fp32 = artifact_of(run, case_id("fp32", "litert-torch")).manifest
    assert torch_fp32["inputs"][0]["shape"] == [1, 1, 8, 8]  # litert-torch: static batch of 1
    assert torch_fp32["notes"]["tflite_tensors"]["inputs"] == {"input": "serving_default_args_0"}
    assert torch_fp32["notes"]["convert_max_abs_diff"] < 1e-3


def test_qat_ran_under_tf_keras_and_mixed_kept_the_named_layers_float(run):
    qat = artifact_of(run, case_id("qat-int8", "keras")).manifest["notes"]
    assert qat["qat"]["keras"].startswith("tf_keras ")  # the TF_USE_LEGACY_KERAS=1 subprocess
    assert len(qat["qat"]["loss_per_epoch"]) == qat["qat"]["epochs"]
    for source in SOURCES:
        notes = artifact_of(run, case_id("mixed", source)).manifest["notes"]
        assert notes["layers"] == ["conv1", "fc2"]  # digits-cnn's sensitive layers
        assert len(notes["kept_float_ops"]) == 2 and notes["int8_weighted_ops"] == 2


# Verbatim op locations litert-torch 0.10 wrote into all-MiniLM-L6-v2's .tflite (weight tensor
# names of FULLY_CONNECTED ops #61, #59 and #43: one location per fused op, joined by ';').
_ROOT = ("harness.models.minilm._embedder_class.<locals>.SentenceEmbedder/transformers.models.bert.modeling_bert.BertModel_bert/"
         "transformers.models.bert.modeling_bert.BertEncoder_encoder/transformers.models.bert.modeling_bert.BertLayer_0/")
LITERT_FFN_OUT = _ROOT + "transformers.models.bert.modeling_bert.BertOutput_output/torch.nn.modules.linear.Linear_dense;1"
LITERT_FUSED = (_ROOT + "transformers.models.bert.modeling_bert.BertAttention_attention/transformers.models.bert.modeling_bert."
                "BertSelfOutput_output/torch.nn.modules.normalization.LayerNorm_LayerNorm;;" + _ROOT
                + "transformers.models.bert.modeling_bert.BertIntermediate_intermediate/torch.nn.modules.linear.Linear_dense;")
LITERT_ATTN_OUT = (_ROOT + "transformers.models.bert.modeling_bert.BertAttention_attention/transformers.models.bert.modeling_bert."
                   "BertSelfOutput_output/torch.nn.modules.linear.Linear_dense;1")


def test_torch_module_names_match_litert_torch_locations():
    """A module path names the op whose location is that module; ModuleList containers
    (`layer`) are not written by litert-torch, only their index."""
    from harness.quantize.tflite_graph import names_layer

    ffn_out, attn_out, intermediate = ("bert.encoder.layer.0.output.dense", "bert.encoder.layer.0.attention.output.dense",
                                       "bert.encoder.layer.0.intermediate.dense")
    assert names_layer(LITERT_FFN_OUT, ffn_out)
    assert not names_layer(LITERT_FFN_OUT, attn_out) and not names_layer(LITERT_FFN_OUT, "bert.encoder.layer.1.output.dense")
    assert names_layer(LITERT_ATTN_OUT, attn_out) and not names_layer(LITERT_ATTN_OUT, ffn_out)
    assert names_layer(LITERT_FUSED, intermediate) and not names_layer(LITERT_FUSED, ffn_out)
    assert not names_layer(LITERT_FFN_OUT, "dense") and not names_layer(LITERT_FFN_OUT, "output.dense")
    assert names_layer("harness.models.digits_cnn.build_torch_module.<locals>.DigitsCNN/torch.nn.modules.conv.Conv2d_conv1;", "conv1")


def test_static_recipe_covers_every_op_for_convnets(run):
    for mode in ("static-int8", "mixed"):
        notes = artifact_of(run, case_id(mode, "litert-torch")).manifest["notes"]
        assert notes["quantized_ops"] == "every supported op"


# -- the runner's TFLite backend on its own -------------------------------------------------------
def run_runner(work: Path, artifact, data: dict, batch_size: int = 1, options: dict = None,
               prelude: str = "") -> dict:
    """One runner process on an artifact; `prelude` runs first (e.g. hides a module)."""
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "inputs.npz", **data)
    config = {"framework": "tflite", "artifact": str(artifact.model_file), "manifest": dict(artifact.manifest),
              "inputs": str(work / "inputs.npz"), "outputs": str(work / "outputs.npz"), "result": str(work / "result.json"),
              "threads": 1, "batch_size": batch_size, "warmup_runs": 1, "warmup_s": 0.0, "min_runs": 5,
              "min_duration_s": 0.01, "max_duration_s": 1.0, "options": options or {},
              "sensors": {"profile": "generic-linux", "idle_s": 0.0}}
    (work / "config.json").write_text(json.dumps(config))
    code = f"{prelude}\nimport runpy, sys\nsys.argv = ['runner', {str(work / 'config.json')!r}]\nrunpy.run_module('runner', run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=300,
                          env=runner_env(stage_runner(work / "runner")))
    assert (work / "result.json").is_file(), proc.stdout + proc.stderr
    return json.loads((work / "result.json").read_text())


def test_data_in_the_wrong_layout_or_batch_is_an_error_naming_both_shapes(run, tmp_path):
    x = load_data().eval_inputs["input"][:16]
    nhwc = run_runner(tmp_path / "nhwc", artifact_of(run, case_id("fp32", "keras")), {"input": x.transpose(0, 2, 3, 1)})
    assert nhwc["status"] == "error"
    assert "the model expects shape (?, 1, 8, 8)" in nhwc["reason"] and "(1, 8, 8, 1)" in nhwc["reason"]
    batch = run_runner(tmp_path / "batch", artifact_of(run, case_id("fp32", "litert-torch")), {"input": x}, batch_size=4)
    assert batch["status"] == "error"
    assert "(1, 1, 8, 8)" in batch["reason"] and "(4, 1, 8, 8)" in batch["reason"]


def test_dynamic_batch_keras_artifact_runs_batches(run, tmp_path):
    data = load_data()
    result = run_runner(tmp_path / "b8", artifact_of(run, case_id("static-int8", "keras")),
                        {"input": data.eval_inputs["input"]}, batch_size=8)
    assert result["status"] == "ok", result.get("reason")
    with np.load(tmp_path / "b8" / "outputs.npz") as npz:
        (logits,) = [npz[k] for k in npz.files]
    assert logits.dtype == np.float32 and logits.shape == (data.n_eval, 10)  # dequantized, padding dropped
    batch1 = run.row(case_id("static-int8", "keras"))["accuracy"]
    assert np.mean(logits.argmax(1) == data.eval_labels) == pytest.approx(batch1)


def test_falls_back_to_tensorflow_lite_without_litert_and_can_turn_xnnpack_off(run, tmp_path):
    artifact = artifact_of(run, case_id("fp32", "keras"))
    x = {"input": load_data().eval_inputs["input"][:8]}
    hidden = run_runner(tmp_path / "fallback", artifact, x, prelude="import sys; sys.modules['ai_edge_litert'] = None")
    assert hidden["status"] == "ok", hidden.get("reason")
    assert hidden["runtime"] == "tensorflow.lite.Interpreter"
    skipped = hidden["runtime_details"]["interpreters_skipped"]
    assert skipped[0].startswith("ai_edge_litert:") and skipped[1].startswith("tflite_runtime:")
    plain = run_runner(tmp_path / "no-xnnpack", artifact, x, options={"xnnpack": False})
    assert plain["status"] == "ok" and plain["runtime"] == "ai_edge_litert.interpreter"
    assert plain["runtime_details"]["xnnpack"] == {"requested": False, "applied": False, "delegated_partitions": 0}


def test_a_model_without_a_tflite_source_gets_one_na_row_per_mode_naming_the_sources(tmp_path):
    from harness import Suite
    from harness.models import onnx_model
    from harness.session import BenchSession, SessionOptions
    from targets import TargetConfig
    from tests import onnx_models

    _, _, x_calib, x_eval, y_eval = onnx_models.digits_flat()
    data = onnx_models.write_npz(tmp_path / "digits.npz", x_eval, y_eval, x_calib)
    spec = onnx_model("logreg", onnx_models.logistic_regression(tmp_path / "logreg.onnx"), data=data)
    suite = Suite(model=spec, frameworks=("tflite",), modes=("fp32", "static-int8"))
    session = BenchSession(TargetConfig(name="local", kind="local"),
                           SessionOptions(results_dir=tmp_path / "results", cache_dir=tmp_path / "cache"))
    try:
        rows = {case.case_id: session.run_case(case) for case in suite.cases()}
    finally:
        session.close()
    # one n/a row per mode (not one per source recipe), naming the sources tflite starts from
    assert sorted(rows) == ["logreg-tflite-fp32-b1", "logreg-tflite-static-int8-b1"]
    for row in rows.values():
        assert row["status"] == "n/a"
        assert "starts from keras or tflite or torch, and model logreg is onnx" in row["reason"], row["reason"]


def test_no_tflite_interpreter_at_all_is_an_error_naming_each(run, tmp_path):
    hide = "import sys\nfor m in ('ai_edge_litert', 'tflite_runtime', 'tensorflow'): sys.modules[m] = None"
    result = run_runner(tmp_path / "none", artifact_of(run, case_id("fp32", "keras")),
                        {"input": load_data().eval_inputs["input"][:4]}, prelude=hide)
    assert result["status"] == "error"
    assert result["reason"].startswith("ai_edge_litert is not installed for ")
    assert all(f"{m}:" in result["reason"] for m in ("ai_edge_litert", "tflite_runtime", "tensorflow"))
