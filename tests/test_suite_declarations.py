"""Bad suite declarations fail at collection, naming the suite file and the field."""
import textwrap

import pytest

from harness import Suite, SuiteError
from harness.models import digits_cnn, onnx_model


def test_unknown_mode_names_file_and_field():
    with pytest.raises(SuiteError) as err:
        Suite(model=digits_cnn, modes=("fp32", "int4"))
    message = str(err.value)
    assert __file__ in message and "`modes`" in message and "'int4'" in message


def test_unknown_framework():
    with pytest.raises(SuiteError, match=r"`frameworks`: unknown framework 'tensorrt'"):
        Suite(model=digits_cnn, frameworks=("tensorrt",))


def test_budget_for_a_mode_not_in_the_suite():
    with pytest.raises(SuiteError, match="`budgets`"):
        Suite(model=digits_cnn, modes=("fp32",), budgets={"static-int8": 1.0})


def test_negative_budget():
    with pytest.raises(SuiteError, match="non-negative"):
        Suite(model=digits_cnn, modes=("static-int8",), budgets={"static-int8": -1})


def test_nightly_modes_keep_one_frameworks_modes_out_of_quick_and_name_only_the_suites_own():
    from harness.profiles import QUICK

    suite = Suite(model=digits_cnn, frameworks=("onnxruntime", "tflite"), modes=("fp32", "static-int8", "dynamic-int8"),
                  nightly_modes={"onnxruntime": ("static-int8",)})
    quick = {(c.framework, c.mode) for c in suite.cases() if QUICK in c.profiles}
    every = {(c.framework, c.mode) for c in suite.cases() if "nightly" in c.profiles}
    assert ("onnxruntime", "static-int8") in every - quick
    assert {("onnxruntime", "dynamic-int8"), ("tflite", "static-int8"), ("onnxruntime", "fp32")} <= quick
    for bad in ({"torch": ("static-int8",)}, {"onnxruntime": ("qat-int8",)}, {"onnxruntime": "static-int8"}):
        with pytest.raises(SuiteError, match="`nightly_modes`"):
            Suite(model=digits_cnn, frameworks=("onnxruntime",), modes=("fp32", "static-int8"), nightly_modes=bad)


def test_missing_data_file(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    with pytest.raises(SuiteError, match=r"`model.data`: data file .*missing.npz does not exist"):
        Suite(model=onnx_model("m", model, data=tmp_path / "missing.npz"))


def test_missing_onnx_file(tmp_path):
    with pytest.raises(SuiteError, match=r"ONNX file .*nope.onnx does not exist"):
        Suite(model=onnx_model("m", tmp_path / "nope.onnx", data=tmp_path / "d.npz"))


def test_bad_batch_size():
    with pytest.raises(SuiteError, match="`batch_sizes`"):
        Suite(model=digits_cnn, batch_sizes=(0,))


def test_keep_float_auto_needs_the_mixed_budget_and_stands_alone():
    with pytest.raises(SuiteError, match=r"`budgets`: keep_float='auto' searches .* give budgets=\{'mixed'"):
        Suite(model=digits_cnn, modes=("mixed",), keep_float="auto")
    with pytest.raises(SuiteError, match="`keep_float`: 'auto' stands alone"):
        Suite(model=digits_cnn, modes=("mixed",), keep_float=("auto", "conv1"), budgets={"mixed": 1.0})
    with pytest.raises(SuiteError, match="`keep_float`: 'auto' searches the float layers of mode 'mixed'"):
        Suite(model=digits_cnn, modes=("static-int8",), keep_float="auto")
    with pytest.raises(SuiteError, match="`kept_precision`: 'bfloat16' is not one of float32, float16"):
        Suite(model=digits_cnn, modes=("mixed",), kept_precision="bfloat16")


def test_auto_and_named_mixed_cases_stand_side_by_side():
    auto = Suite(model=digits_cnn, frameworks=("onnxruntime",), modes=("mixed",), keep_float="auto", budgets={"mixed": 0.5})
    named = Suite(model=digits_cnn, frameworks=("onnxruntime",), modes=("mixed",))
    ids = {c.case_id for c in auto.cases()} | {c.case_id for c in named.cases()}
    assert {"digits-cnn-onnxruntime-mixed-qdq-mixed-auto-b1", "digits-cnn-onnxruntime-mixed-qdq-mixed-b1",
            "digits-cnn-onnxruntime-fp32-b1"} <= ids  # one fp32 baseline (same id) for both


def test_cases_put_fp32_first_and_keep_unavailable_modes_as_na():
    suite = Suite(model=digits_cnn, frameworks=("onnxruntime",), modes=("static-int8", "bf16"))
    cases = suite.cases()
    assert [c.mode for c in cases] == ["fp32", "static-int8", "bf16"]
    bf16 = cases[-1]
    assert bf16.recipe is None and "bfloat16" in bf16.na_reason
    assert len({c.case_id for c in cases}) == len(cases)


def test_collection_error_reaches_pytest_output(run_suite, tmp_path):
    suite_file = tmp_path / "test_bad_suite.py"
    suite_file.write_text(textwrap.dedent("""
        from harness import Suite
        from harness.models import digits_cnn
        suite = Suite(model=digits_cnn, modes=("fp32", "fp8"))
        test_case = suite.pytest_cases()
    """))
    run = run_suite(suite_file)
    assert run.returncode != 0
    assert "test_bad_suite.py: suite field `modes`: unknown mode 'fp8'" in run.output


def test_unknown_target_is_a_usage_error_listing_known_targets(run_suite, tmp_path):
    suite_file = tmp_path / "test_ok_suite.py"
    suite_file.write_text("from harness import Suite\nfrom harness.models import digits_cnn\n"
                          "test_case = Suite(model=digits_cnn).pytest_cases()\n")
    run = run_suite(suite_file, extra=("--target=nowhere",))
    assert run.returncode == 4  # pytest's usage error
    assert "unknown target 'nowhere'; known targets: cuda, local" in run.output


def gpu_evidence() -> str:
    """Signs of an NVIDIA GPU on this machine, read without the cuda target's own probe: the
    driver's /proc/driver/nvidia/gpus entries, else `nvidia-smi -L`. '' when there are none."""
    import glob
    import shutil
    import subprocess

    gpus = glob.glob("/proc/driver/nvidia/gpus/*")
    if gpus:
        return f"{len(gpus)} GPU(s) under /proc/driver/nvidia/gpus"
    smi = shutil.which("nvidia-smi")
    if smi:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
        if listed.returncode == 0 and "GPU " in listed.stdout:
            return listed.stdout.strip().splitlines()[0]
    return ""


def test_an_unusable_target_stops_the_run_once_with_its_reason(run_suite, tmp_path):
    """Without a GPU the built-in cuda target cannot open. One message, no per-test errors, no run dir.
    Whether this machine has a GPU is decided first, from the driver, not from the run's outcome."""
    evidence = gpu_evidence()
    if evidence:
        pytest.skip(f"this machine has a GPU ({evidence}): the cuda target is usable here (tests/test_cuda_target.py)")
    suite_file = tmp_path / "test_ok_suite.py"
    suite_file.write_text("from harness import Suite\nfrom harness.models import digits_cnn\n"
                          "test_case = Suite(model=digits_cnn, modes=('fp32', 'static-int8')).pytest_cases()\n")
    run = run_suite(suite_file, extra=("--target=cuda",))
    assert run.returncode == 2, run.output  # a cuda run that "works" without a GPU is a bug, not a skip
    assert run.output.count("quantbench: cannot use target 'cuda'") == 1
    assert "no CUDA device" in run.output
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
