"""Bring your own TensorFlow / LiteRT model: a .keras file, a SavedModel directory, a function
returning a Keras model and a ready .tflite file, each through every TFLite mode that applies,
in one suite run (TensorFlow conversions are slow: the models are built once per module)."""
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO_ROOT

MODES = ("fp32", "fp16", "bf16", "dynamic-int8", "static-int8", "int16x8", "mixed", "qat-int8")
SUITES = f"""
from pathlib import Path

from harness import Suite
from harness.models import keras_model, tflite_model

HERE = Path(__file__).parent
DATA = HERE / "digits.npz"
MODES = {MODES!r}


def build_mlp():
    import keras

    return keras.models.load_model(HERE / "mlp.keras")


keras_file = Suite(name="keras-file", model=keras_model("mlp-keras", HERE / "mlp.keras", data=DATA),
                   frameworks=("tflite",), modes=MODES, keep_float=("hidden1",))
saved_model = Suite(name="saved-model", model=keras_model("mlp-savedmodel", HERE / "mlp_savedmodel", data=DATA),
                    frameworks=("tflite",), modes=MODES, keep_float=("hidden1",))
function = Suite(name="keras-function", model=keras_model("mlp-function", build_mlp, data=DATA),
                 frameworks=("tflite",), modes=("fp32", "dynamic-int8"))
tflite_file = Suite(name="tflite-file", model=tflite_model("mlp-tflite", HERE / "mlp.tflite", data=DATA),
                    frameworks=("tflite", "onnxruntime"), modes=MODES, keep_float=("hidden1",))
test_keras_file = keras_file.pytest_cases()
test_saved_model = saved_model.pytest_cases()
test_function = function.pytest_cases()
test_tflite_file = tflite_file.pytest_cases()
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("tf_user_models")
    subprocess.run([sys.executable, "-m", "tests.tf_user_models", str(d)], check=True, cwd=REPO_ROOT, timeout=600)
    (d / "test_tf_user.py").write_text(textwrap.dedent(SUITES))
    return d


@pytest.fixture(scope="module")
def run(models, tmp_path_factory):
    from tests.conftest import FAST_TIMING, SuiteRun
    import os

    results = tmp_path_factory.mktemp("results")
    cmd = [sys.executable, "-m", "pytest", str(models / "test_tf_user.py"), "-p", "harness.pytest_plugin", "-p", "no:cacheprovider",
           "-q", f"--qb-results-dir={results}", "--qb-run-id=byom-tf", f"--rootdir={models}", "--qb-results-db=off", *FAST_TIMING]
    proc = subprocess.run(cmd, cwd=models, capture_output=True, text=True, timeout=1800, env=dict(os.environ))
    return SuiteRun(proc.returncode, proc.stdout + proc.stderr, results / "byom-tf")


def rows(run, model):
    df = run.results
    return {(r["mode"], r["case_id"].split(f"-{r['mode']}")[-1].removesuffix("-b1").lstrip("-")): r
            for r in df[df["model"] == model].to_dict("records")}


def check_int8_rows(got, fp32, modes):
    for mode in modes:
        row = got[mode]
        assert row["status"] == "ok", (mode, row["reason"])
        assert row["accuracy"] >= fp32["accuracy"] - 0.03, (mode, row["accuracy"], fp32["accuracy"])
        assert row["size_ratio"] < 0.75, (mode, row["size_ratio"])


def test_a_keras_file_runs_every_tflite_mode_through_tfliteconverter(run):
    got = {mode: row for (mode, _), row in rows(run, "mlp-keras").items()}
    fp32 = got["fp32"]
    assert fp32["status"] == "ok" and fp32["accuracy"] >= 0.9 and fp32["recipe"] == "tf.lite.TFLiteConverter(keras, float32)"
    check_int8_rows(got, fp32, ("dynamic-int8", "static-int8", "int16x8", "qat-int8"))
    assert got["fp16"]["status"] == "ok" and 0.4 < got["fp16"]["size_ratio"] < 0.75
    assert got["bf16"]["status"] == "n/a" and "bfloat16" in got["bf16"]["reason"]
    # mixed keeps hidden1 (the largest layer) float: a bigger file than static int8, still ok
    assert got["mixed"]["status"] == "ok" and got["mixed"]["size_ratio"] > got["static-int8"]["size_ratio"]


def test_a_saved_model_converts_from_saved_model_and_its_qat_is_na(run):
    got = {mode: row for (mode, _), row in rows(run, "mlp-savedmodel").items()}
    fp32 = got["fp32"]
    assert fp32["status"] == "ok" and fp32["accuracy"] == rows(run, "mlp-keras")[("fp32", "keras")]["accuracy"]
    check_int8_rows(got, fp32, ("dynamic-int8", "static-int8", "int16x8"))
    assert got["mixed"]["status"] == "ok" and "ai_edge_quantizer" in got["mixed"]["recipe"]
    assert got["qat-int8"]["status"] == "n/a" and "a SavedModel is a TensorFlow graph, not a Keras model" in got["qat-int8"]["reason"]


def test_a_function_returning_a_keras_model(run):
    got = {mode: row for (mode, _), row in rows(run, "mlp-function").items()}
    assert got["fp32"]["status"] == "ok" and got["dynamic-int8"]["status"] == "ok"
    assert got["fp32"]["accuracy"] == rows(run, "mlp-keras")[("fp32", "keras")]["accuracy"]


def test_a_tflite_file_is_its_own_fp32_row_and_gets_ai_edge_quantizer_modes(run, models):
    from harness.artifacts import sha256_file

    got = rows(run, "mlp-tflite")
    fp32 = got[("fp32", "file")]
    assert fp32["status"] == "ok" and fp32["artifact_sha256"] == sha256_file(models / "mlp.tflite")
    by_mode = {}
    for (mode, slug), row in got.items():
        if row["framework"] == "tflite":
            by_mode.setdefault(mode, []).append((slug, row))
    # the quick profile (the default) runs one dynamic-int8 recipe; `file-legacy` is nightly-only
    assert [slug for slug, _ in by_mode["dynamic-int8"]] == ["file"]
    check_int8_rows({m: r[0][1] for m, r in by_mode.items()}, fp32, ("dynamic-int8", "static-int8", "int16x8"))
    assert by_mode["mixed"][0][1]["status"] == "ok"
    qat = by_mode["qat-int8"][0][1]
    assert qat["status"] == "n/a" and "a .tflite file is an inference graph" in qat["reason"]
    # onnxruntime has no recipe starting from a .tflite file: n/a rows, not errors
    ort = [r for r in got.values() if r["framework"] == "onnxruntime"]
    assert ort and all(r["status"] == "n/a" for r in ort)


def test_the_run_fails_only_where_it_should(run):
    assert "error" not in set(run.results["status"]), run.results[run.results["status"] == "error"][["case_id", "reason"]]


def test_a_misspelt_layer_name_lists_close_matches(models):
    from harness.quantize.layer_names import UnknownLayer
    from harness.quantize.tflite_file import scope_layers
    from harness.quantize.tflite_graph import resolve_layers

    content = (models / "mlp.tflite").read_bytes()
    assert [op.op for op in resolve_layers(content, ["hidden2"], "mlp", scope_layers(content))] == ["FULLY_CONNECTED"]
    with pytest.raises(UnknownLayer, match="layer 'hiden1' to keep in float matches no layer of mlp; close matches: hidden1"):
        resolve_layers(content, ["hiden1"], "mlp", scope_layers(content))


def test_each_source_files_content_is_in_the_cache_key(models, tmp_path):
    import shutil

    from harness.artifacts import ArtifactCache
    from harness.data import load_npz
    from harness.models import keras_model, tflite_model
    from harness.quantize.base import BuildContext

    def fingerprint(spec):
        return BuildContext(spec, load_npz(models / "digits.npz"), ArtifactCache(tmp_path / "a"), tmp_path / "m").fingerprint

    shutil.copy(models / "mlp.tflite", tmp_path / "model.tflite")
    shutil.copytree(models / "mlp_savedmodel", tmp_path / "saved")
    before = [fingerprint(tflite_model("m", tmp_path / "model.tflite", data=models / "digits.npz")),
              fingerprint(keras_model("m", tmp_path / "saved", data=models / "digits.npz"))]
    with open(tmp_path / "model.tflite", "ab") as f:
        f.write(b"\0")  # one byte more: another file
    (tmp_path / "saved" / "assets").mkdir(exist_ok=True)
    (tmp_path / "saved" / "assets" / "note.txt").write_text("changed")
    after = [fingerprint(tflite_model("m", tmp_path / "model.tflite", data=models / "digits.npz")),
             fingerprint(keras_model("m", tmp_path / "saved", data=models / "digits.npz"))]
    assert before[0] != after[0] and before[1] != after[1]
