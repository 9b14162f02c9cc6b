"""The cuda target and the GPU code paths.

With an NVIDIA GPU the digits suite runs on --target=cuda and the rows are checked
(providers, GPU memory, NVML energy over a window of at least 1 s, GPU facts). Without
one those tests skip with "no CUDA device", and what needs no GPU is tested for real: the
target's error and what it hands the runner, onnxruntime's IO binding, node placement and
provider checks through the real runner, the n/a reasons, and the TensorRT int8 artifact.
With QUANTBENCH_REQUIRE_GPU=1 (scripts/gpu_check.sh on a GPU machine) a test that needs a
GPU fails instead of skipping when none is found.
"""
import json
import os
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness import settings
from harness.device_columns import placement_text
from harness.runner.sensors import NoSensor
from harness.runner.backend_onnxruntime import requested_providers
from targets import TargetError, load_inventory, open_target
from targets.base import RunnerJob, TargetConfig, TargetInfo
from targets.cuda import UNSUPPORTED_FRAMEWORKS, gpu_options, onnxruntime_reason
from tests.runner_job import logreg, run_runner


def _gpu_name():
    """(the name of GPU 0, None) or (None, why there is none)."""
    from harness.runner import sensors_nvml

    try:
        pynvml = sensors_nvml.nvml()
        return sensors_nvml.describe(pynvml, sensors_nvml.device_handle(pynvml, 0))["name"], None
    except NoSensor as exc:
        return None, str(exc)


GPU, NO_GPU_REASON = _gpu_name()
REQUIRE_GPU = os.environ.get("QUANTBENCH_REQUIRE_GPU") == "1"
ORT_CUDA = "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers()


def _no_gpu() -> None:
    """Skip a GPU test without a GPU, or fail it where the run says a GPU must be there."""
    if REQUIRE_GPU:
        pytest.fail(f"QUANTBENCH_REQUIRE_GPU=1 but there is no CUDA device: {NO_GPU_REASON}", pytrace=False)
    pytest.skip("no CUDA device")


@pytest.fixture
def _gpu() -> None:
    if GPU is None:
        _no_gpu()


needs_gpu = pytest.mark.usefixtures("_gpu")
needs_ort_cuda = pytest.mark.skipif(not ORT_CUDA, reason="onnxruntime here is the CPU build (no CUDAExecutionProvider): "
                                                          "test_onnxruntime_cpu_build_is_na_on_a_cuda_target covers it")
without_gpu = pytest.mark.skipif(GPU is not None, reason=f"a CUDA device is present ({GPU}): the GPU tests cover this")
CACHE = settings.cache_dir()


def cuda_info(**facts) -> TargetInfo:
    return TargetInfo(name="gpu", kind="cuda", profile="nvidia-gpu", threads=2, arch="x86_64", device="a GPU",
                      host="h", facts={"unsupported_frameworks": dict(UNSUPPORTED_FRAMEWORKS), **facts})


# -- without a GPU: the real components that do not need one -------------------------------
@without_gpu
def test_cuda_target_without_a_gpu_is_an_error_that_says_so(tmp_path):
    target = open_target(load_inventory()["cuda"], tmp_path)
    with pytest.raises(TargetError, match=r"^target cuda \(kind cuda\): no CUDA device: NVML cannot start: "):
        target.info()


@without_gpu
def test_cuda_target_hands_the_runner_cuda_providers_and_nvml_sensors(tmp_path):
    """Through CudaTarget.run on this GPU-less host: the config asks for CUDA, and the runner
    refuses to fall back to the CPU silently."""
    model, inputs = logreg(tmp_path / "model")
    target = open_target(TargetConfig(name="gpu", kind="cuda", settings={"inputs_on_device": True}), tmp_path / "cache")
    config = {"framework": "onnxruntime", "threads": 1, "batch_size": 1, "warmup_runs": 1, "warmup_s": 0.0,
              "min_runs": 5, "min_duration_s": 0.0, "max_duration_s": 1.0, "options": {},
              "sensors": {"profile": "nvidia-gpu", "root": "/", "idle_s": 0.1, "settings": {}}}
    job = RunnerJob("logreg", model.parent, model.name, {}, inputs, config, tmp_path / "work")
    outcome = target.run(job)
    sent = json.loads((tmp_path / "work" / "config.json").read_text())
    assert sent["options"] == {"providers": [["CUDAExecutionProvider", {"device_id": 0}], "CPUExecutionProvider"], "io": "device"}
    assert sent["sensors"]["profile"] == "nvidia-gpu" and sent["sensors"]["settings"] == {"gpu": 0}
    assert outcome.result["status"] == "error"
    assert "has no CUDAExecutionProvider" in outcome.result["reason"] and "onnxruntime-gpu" in outcome.result["reason"]


def test_every_nvml_call_exists_in_the_pinned_nvidia_ml_py():
    """The NVML reader cannot run here; at least every pynvml name it uses must exist."""
    import re

    import pynvml

    source = (Path(__file__).resolve().parent.parent / "harness" / "runner" / "sensors_nvml.py").read_text()
    names = set(re.findall(r"(?:pynvml|self\._nvml)\.(\w+)", source))
    assert {"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage", "nvmlDeviceGetComputeRunningProcesses"} <= names
    assert [n for n in sorted(names) if not hasattr(pynvml, n)] == []


def test_target_settings_are_checked(tmp_path):
    with pytest.raises(TargetError, match="gpu must be an NVML index"):
        open_target(TargetConfig(name="gpu", kind="cuda", settings={"gpu": "first"}), tmp_path)
    with pytest.raises(TargetError, match="inputs_on_device must be true or false"):
        open_target(TargetConfig(name="gpu", kind="cuda", settings={"inputs_on_device": "yes"}), tmp_path)
    assert open_target(TargetConfig(name="gpu", kind="cuda"), tmp_path).profile == "nvidia-gpu"


def test_gpu_options_per_framework():
    ort = gpu_options("onnxruntime", {"cuda_provider_options": {"cudnn_conv_algo_search": "HEURISTIC"}})
    assert ort == {"providers": [["CUDAExecutionProvider", {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}],
                                 "CPUExecutionProvider"], "io": "host"}
    assert gpu_options("torch", {"inputs_on_device": True}) == {"device": "cuda", "io": "device"}
    assert gpu_options("tflite", {}) == {}


def test_recipe_provider_goes_first_once():
    manifest = {"params": {"execution_provider": ["TensorrtExecutionProvider", {"trt_fp16_enable": True}]}}
    options = {"providers": [["CUDAExecutionProvider", {"device_id": 0}], "CPUExecutionProvider"]}
    assert requested_providers(options, manifest) == [
        ("TensorrtExecutionProvider", {"trt_fp16_enable": True}), ("CUDAExecutionProvider", {"device_id": 0}),
        "CPUExecutionProvider"]
    assert requested_providers({}, {}) == ["CPUExecutionProvider"]
    assert requested_providers({"providers": ["CPUExecutionProvider", "CPUExecutionProvider"]}, {}) == ["CPUExecutionProvider"]


def test_io_binding_and_node_placement_through_the_runner(tmp_path):
    """io=device binds inputs and outputs through IOBinding (here on the CPU provider, the same
    code path the CUDA provider takes) and gives the outputs of a plain run."""
    host, host_out = run_runner(tmp_path / "host", options={"io": "host"})
    bound, bound_out = run_runner(tmp_path / "bound", options={"io": "device", "node_placement": True})
    assert host["status"] == bound["status"] == "ok", (host.get("reason"), bound.get("reason"))
    np.testing.assert_array_equal(host_out["logits"], bound_out["logits"])
    details = bound["runtime_details"]
    assert details["io"] == "device" and details["timing_sync"].endswith("synchronize_outputs()")
    assert details["providers_requested"] == details["providers_used"] == ["CPUExecutionProvider"]
    assert details["host_device_copies_timed"] is None  # no device but the host
    assert details["node_placement"] == {"CPUExecutionProvider": {"Gemm": 1}}
    assert "node_placement" not in host["runtime_details"]  # only probed for GPU providers or on request


@pytest.mark.skipif("CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
                    reason="this onnxruntime has the CUDA provider")
def test_a_requested_provider_onnxruntime_lacks_is_an_error(tmp_path):
    result, _ = run_runner(tmp_path, options={"providers": [["CUDAExecutionProvider", {"device_id": 0}], "CPUExecutionProvider"]})
    assert result["status"] == "error"
    assert "has no CUDAExecutionProvider" in result["reason"] and "requirements/gpu.txt" in result["reason"]


def test_tflite_is_na_on_a_cuda_target_and_onnxruntime_is_not():
    from harness.quantize import RECIPES, fp32_recipe
    from harness.models import digits_cnn

    ort = fp32_recipe("onnxruntime")
    assert ort.not_applicable_reason(digits_cnn, cuda_info()) is None
    tflite_recipes = RECIPES.get("tflite") or (replace(ort, framework="tflite"),)
    for recipe in tflite_recipes:
        reason = recipe.not_applicable_reason(digits_cnn, cuda_info())
        assert reason == UNSUPPORTED_FRAMEWORKS["tflite"] and "mobile GPUs" in reason


def test_tensorrt_recipes_say_why_they_cannot_run():
    from harness.models import digits_cnn
    from harness.quantize.onnxruntime_tensorrt import RECIPES

    local = TargetInfo(name="local", kind="local", profile="generic-linux", threads=2, arch="x86_64", device="cpu", host="h")
    fp16, int8 = RECIPES
    assert fp16.not_applicable_reason(digits_cnn, local) == ("the TensorRT recipes run on cuda targets, whose probe "
                                                             "checks onnxruntime-gpu and TensorRT; target local is local")
    cpu_only = cuda_info(onnxruntime_providers=["CPUExecutionProvider"])
    assert "has no TensorrtExecutionProvider (it has CPUExecutionProvider): install onnxruntime-gpu" in int8.not_applicable_reason(digits_cnn, cpu_only)
    no_libs = cuda_info(onnxruntime_providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"],
                        tensorrt={"loadable": False, "reason": "libnvinfer.so.10: cannot open shared object file"})
    assert "TensorRT 10 is not loadable on target gpu (libnvinfer.so.10: cannot" in int8.not_applicable_reason(digits_cnn, no_libs)
    ready = cuda_info(onnxruntime_providers=["TensorrtExecutionProvider"], tensorrt={"loadable": True})
    assert int8.not_applicable_reason(digits_cnn, ready) is None
    assert fp16.params["execution_provider"] == ["TensorrtExecutionProvider", {"trt_fp16_enable": True}]


def test_tensorrt_int8_artifact_is_symmetric_and_keeps_accuracy(tmp_path):
    """TensorRT's explicit quantization needs zero points of 0; the graph must still classify
    the digits like the fp32 graph (run here on onnxruntime's CPU provider)."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from harness.artifacts import ArtifactCache
    from harness.models import digits_cnn
    from harness.quantize import BuildContext, fp32_recipe
    from harness.quantize.onnxruntime_tensorrt import RECIPES

    data = digits_cnn.data() if callable(digits_cnn.data) else digits_cnn.data
    ctx = BuildContext(digits_cnn, data, ArtifactCache(CACHE / "artifacts"), CACHE / "models")
    int8, _ = ctx.artifact(RECIPES[1])
    fp32, _ = ctx.artifact(fp32_recipe("onnxruntime"))
    model = onnx.load(str(int8.model_file))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) >= 8
    for node in qdq:
        assert len(node.input) == 3 and not inits[node.input[2]].any(), f"{node.name}: zero point not 0"
    assert int8.manifest["params"]["execution_provider"] == ["TensorrtExecutionProvider", {"trt_int8_enable": True}]

    def top1(path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits = session.run(None, {"input": data.eval_inputs["input"]})[0]
        return float(np.mean(logits.argmax(1) == data.eval_labels))

    assert top1(int8.model_file) >= top1(fp32.model_file) - 0.01


def test_torch_recipes_on_a_cuda_target_follow_the_gpu():
    from harness.models import digits_cnn
    from harness.quantize import RECIPES

    def runnable(capability):
        info = cuda_info(gpu={"compute_capability": capability})
        reasons = {r.slug: r.not_applicable_reason(digits_cnn, info) for r in RECIPES["torch"]}
        return {slug for slug, why in reasons.items() if why is None}, reasons

    hopper, reasons = runnable("9.0")
    assert hopper == {"fp32", "fp16", "bf16", "torchao"}
    assert "CPU kernel libraries with no CUDA backend" in reasons["ao-x86"]
    assert "lower to CPU int8 kernels" in reasons["pt2e-x86"]
    volta, reasons = runnable("7.0")
    assert volta == {"fp32", "fp16"}
    # an ssh target with a Jetson profile runs the same GPU paths (its facts have no compute capability)
    jetson = replace(cuda_info(), kind="ssh", profile="jetson-orin", facts={})
    on_jetson = {r.slug for r in RECIPES["torch"] if r.not_applicable_reason(digits_cnn, jetson) is None}
    assert on_jetson == {"fp32", "fp16"}
    pi = replace(jetson, profile="raspberry-pi-5", arch="aarch64")
    assert "pt2e-arm" in {r.slug for r in RECIPES["torch"] if r.not_applicable_reason(digits_cnn, pi) is None}
    assert reasons["bf16"] == "bfloat16 arithmetic needs compute capability 8.0 (Ampere) or newer; a GPU on target gpu is 7.0"


def _torch_artifacts(slugs):
    from harness.artifacts import ArtifactCache
    from harness.models import digits_cnn
    from harness.quantize import RECIPES, BuildContext

    ctx = BuildContext(digits_cnn, digits_cnn.data(), ArtifactCache(CACHE / "artifacts"), CACHE / "models")
    return {r.slug: ctx.artifact(r)[0] for r in RECIPES["torch"] if r.slug in slugs}


def test_torch_artifacts_that_run_on_cuda_can_leave_the_cpu():
    """The runner moves exported programs with move_to_device_pass; every recipe a cuda target
    runs must survive the move (here to the meta device: shapes only, no GPU needed)."""
    import torch
    from torch.export.passes import move_to_device_pass

    for slug, artifact in _torch_artifacts({"fp32", "fp16", "bf16", "torchao"}).items():
        for name in artifact.manifest.get("runtime_requires") or []:
            __import__(name)
        module = move_to_device_pass(torch.export.load(str(artifact.model_file)), "meta").module()
        out = module(torch.zeros(4, 1, 8, 8, device="meta"))
        assert out.device.type == "meta" and tuple(out.shape) == (4, 10), slug


def test_torchao_int8_matmuls_the_cuda_kernel_refuses_are_na():
    """torch._int_mm on CUDA needs > 16 rows and K, N multiples of 8: the torchao artifact records
    its matmul shapes and a case whose shapes the kernel would refuse is n/a, not a GPU error."""
    from harness.quantize import RECIPES

    artifact = _torch_artifacts({"torchao"})["torchao"]
    assert artifact.manifest["notes"]["int8_matmuls"] == {"fc1": {"k": 512, "n": 64, "rows_per_sample": 1},
                                                           "fc2": {"k": 64, "n": 10, "rows_per_sample": 1}}
    (recipe,) = [r for r in RECIPES["torch"] if r.slug == "torchao"]
    gpu = cuda_info(gpu={"compute_capability": "9.0"})
    at_1 = recipe.artifact_reason(artifact, gpu, 1)
    assert at_1.startswith("torchao's int8 matmul is torch._int_mm, which on CUDA needs more than 16 rows")
    assert at_1.endswith("at batch 1 it refuses fc1 (1 rows); fc2 (1 rows, N=10)")
    assert recipe.artifact_reason(artifact, gpu, 32).endswith("at batch 32 it refuses fc2 (N=10)")
    local = TargetInfo(name="local", kind="local", profile="generic-linux", threads=2, arch="x86_64", device="cpu", host="h")
    assert recipe.artifact_reason(artifact, local, 1) is None  # the CPU's _int_mm takes any shape


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="torch sees a CUDA device")
def test_torch_backend_asked_for_cuda_without_one_says_so():
    from harness.runner.backend_torch import Backend

    artifact = _torch_artifacts({"fp32"})["fp32"]
    with pytest.raises(RuntimeError, match=r"sees no CUDA device \(CUDA build: .*\); install torch's CUDA build"):
        Backend(str(artifact.model_file), dict(artifact.manifest), 1, {"device": "cuda"})


def test_placement_text_names_the_nodes_off_the_main_provider():
    text = placement_text({"CUDAExecutionProvider": {"Conv": 2, "Gemm": 2, "MemcpyToHost": 1},
                           "CPUExecutionProvider": {"ConvInteger": 2, "DynamicQuantizeLinear": 1}})
    assert text == ("CUDAExecutionProvider: 5 nodes; "
                    "CPUExecutionProvider: 3 nodes (ConvInteger x2, DynamicQuantizeLinear x1)")


# -- with a GPU: the digits suite on --target=cuda ---------------------------------------
GPU_SUITE = """
from harness import Suite
from harness.models import digits_cnn

suite = Suite(model=digits_cnn, frameworks={frameworks!r}, modes=("fp32", "fp16", "bf16", "dynamic-int8", "static-int8"))
test_case = suite.pytest_cases()
"""


@pytest.fixture(scope="module")
def gpu_runs(tmp_path_factory):
    if GPU is None:
        _no_gpu()
    from tests.conftest import SuiteRun
    import subprocess
    import sys

    from harness.quantize import RECIPES

    work = tmp_path_factory.mktemp("gpu")
    frameworks = tuple(f for f in ("onnxruntime", "torch", "tflite") if f in RECIPES)
    (work / "test_gpu_digits.py").write_text(GPU_SUITE.format(frameworks=frameworks))
    (work / "targets.toml").write_text(textwrap.dedent("""
        [targets.gpu-device-io]
        kind = "cuda"
        inputs_on_device = true
    """))
    runs = {}
    for name, target in (("host", "cuda"), ("device", "gpu-device-io")):
        cmd = [sys.executable, "-m", "pytest", str(work / "test_gpu_digits.py"), "-p", "harness.pytest_plugin",
               "-p", "no:cacheprovider", "-q", f"--qb-results-dir={work / 'results'}", f"--qb-run-id={name}",
               f"--rootdir={work}", f"--target={target}", f"--qb-inventory={work / 'targets.toml'}", "--qb-results-db=off",
               "--min-runs", "20", "--min-duration", "0.1", "--max-duration", "2", "--warmup-runs", "5"]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1800, env=dict(os.environ))
        runs[name] = SuiteRun(proc.returncode, proc.stdout + proc.stderr, work / "results" / name)
    return runs


@needs_gpu
@needs_ort_cuda
def test_onnxruntime_on_the_gpu(gpu_runs):
    run = gpu_runs["host"]
    fp32 = run.row("digits-cnn-onnxruntime-fp32-b1")
    assert fp32["status"] == "ok", fp32["reason"]
    assert fp32["device"] == GPU and fp32["target_kind"] == "cuda" and fp32["profile"] == "nvidia-gpu"
    assert fp32["providers_used"].startswith("CUDAExecutionProvider")
    assert fp32["node_placement"].startswith("CUDAExecutionProvider")
    assert fp32["host_device_copies_timed"] is True
    assert 0.95 <= fp32["accuracy"] <= 1.0
    assert fp32["gpu_mem_mb"] > 0 and fp32["gpu_mem_source"].startswith("nvml:")
    assert fp32["gpu_driver_version"] and fp32["gpu_cuda_version"] and fp32["gpu_compute_capability"]
    assert fp32["gpu_temp_before_c"] is not None and fp32["gpu_sm_clock_after_mhz"] > 0
    assert fp32["gpu_clock_events_after"] is not None
    assert fp32["power_source"].startswith("NVML")
    assert fp32["idle_power_w"] > 0 and fp32["power_mean_w"] > 0 and fp32["energy_mj_per_inf"] > 0
    # the 0.1 s timed loop was stretched to NVML's 1 s minimum, and the row says so
    assert fp32["duration_s"] >= 1.0 and "extended from 0.1 s to at least 1 s" in fp32["power_window_note"]
    for case in ("fp16", "static-int8-qdq"):
        row = run.row(f"digits-cnn-onnxruntime-{case}-b1")
        assert row["status"] == "ok", (case, row["reason"])
        assert row["accuracy_delta"] >= -0.02, case
    df = run.results
    for _, row in df[df["case_id"].str.contains("-trt-")].iterrows():  # present where onnxruntime-gpu is
        if row["status"] == "ok":
            assert row["providers_used"].startswith("TensorrtExecutionProvider") and row["accuracy_delta"] >= -0.02
        else:
            assert row["status"] == "n/a" and "TensorRT" in row["reason"], row["reason"]


@needs_gpu
@pytest.mark.skipif(ORT_CUDA, reason="onnxruntime here has the CUDA provider: test_onnxruntime_on_the_gpu covers it")
def test_onnxruntime_cpu_build_is_na_on_a_cuda_target(gpu_runs):
    """Where onnxruntime is the CPU build (no CUDAExecutionProvider), its cases on a cuda
    target are n/a with the reason, instead of errors or CPU figures under a GPU's name."""
    df = gpu_runs["host"].results
    ort = df[df["framework"] == "onnxruntime"]
    assert len(ort) >= 3
    for _, row in ort.iterrows():
        assert row["status"] == "n/a", (row["case_id"], row["status"], row["reason"])
        assert row["reason"].startswith("onnxruntime for ") and "has no CUDAExecutionProvider" in row["reason"]
        assert "onnxruntime-gpu" in row["reason"]


def test_onnxruntime_cpu_build_reason():
    """What the cuda target declares from its probe's providers (info() adds it to unsupported_frameworks)."""
    cpu_build = onnxruntime_reason({"onnxruntime_providers": ["AzureExecutionProvider", "CPUExecutionProvider"]}, "/usr/bin/python3")
    assert cpu_build == ("onnxruntime for /usr/bin/python3 is not the GPU build: it has no CUDAExecutionProvider "
                         "(it has AzureExecutionProvider, CPUExecutionProvider); install onnxruntime-gpu in place of "
                         "onnxruntime (requirements/gpu.txt) to run onnxruntime on this GPU")
    assert "onnxruntime does not import there" in onnxruntime_reason({"onnxruntime_providers": []}, "py")
    assert onnxruntime_reason({"onnxruntime_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}, "py") is None
    assert onnxruntime_reason({}, "py") is None  # not probed: the runner's own check still applies
    from harness.models import digits_cnn
    from harness.quantize import fp32_recipe

    info = cuda_info()
    info = replace(info, facts={**info.facts, "unsupported_frameworks": {**info.facts["unsupported_frameworks"], "onnxruntime": cpu_build}})
    assert fp32_recipe("onnxruntime").not_applicable_reason(digits_cnn, info) == cpu_build


@needs_gpu
def test_inputs_on_device_keeps_copies_out_of_the_timed_region(gpu_runs):
    frameworks = ("torch", "onnxruntime") if ORT_CUDA else ("torch",)
    for framework in frameworks:
        host = gpu_runs["host"].row(f"digits-cnn-{framework}-fp32-b1")
        device = gpu_runs["device"].row(f"digits-cnn-{framework}-fp32-b1")
        assert host["status"] == device["status"] == "ok", (framework, host["reason"], device["reason"])
        assert host["host_device_copies_timed"] is True and device["host_device_copies_timed"] is False, framework
        assert device["accuracy"] == pytest.approx(host["accuracy"], abs=0.002), framework


@needs_gpu
def test_other_frameworks_on_the_gpu(gpu_runs):
    df = gpu_runs["host"].results
    tflite = df[df["framework"] == "tflite"]
    for _, row in tflite.iterrows():
        assert row["status"] == "n/a" and row["reason"] == UNSUPPORTED_FRAMEWORKS["tflite"]
    torch_rows = df[df["framework"] == "torch"]
    fp32 = gpu_runs["host"].row("digits-cnn-torch-fp32-b1")
    capability = tuple(int(v) for v in str(fp32["gpu_compute_capability"] or "0.0").split("."))
    modes = ("fp32", "fp16") + (("bf16",) if capability >= (8, 0) else ())
    for _, row in torch_rows[torch_rows["mode"].isin(modes)].iterrows():
        assert row["status"] == "ok", (row["case_id"], row["reason"])
        assert row["device"] == GPU and row["gpu_mem_peak_allocated_mb"] > 0 and row["host_device_copies_timed"] is True
        assert row["gpu_mem_mb"] > 0 and row["gpu_mem_source"].startswith("nvml:")
        assert row["power_source"].startswith("NVML") and row["energy_mj_per_inf"] > 0
        assert row["accuracy"] >= 0.95 and (row["mode"] == "fp32" or row["accuracy_delta"] >= -0.02), row["case_id"]
    torchao = gpu_runs["host"].row("digits-cnn-torch-dynamic-int8-torchao-b1")  # fc2 has N=10: _int_mm refuses it
    assert torchao["status"] == "n/a" and "torch._int_mm" in torchao["reason"], torchao["reason"]
    for _, row in torch_rows[torch_rows["mode"] == "static-int8"].iterrows():  # PT2E: CPU int8 kernels only
        assert row["status"] == "n/a" and "lower to CPU int8 kernels" in row["reason"]


# -- an ssh target with a GPU profile takes the same GPU paths --------------------------------
def test_ssh_target_with_a_gpu_profile_runs_the_gpu_paths(tmp_path):
    """Over a real sshd on loopback: an nvidia-gpu ssh target asks the remote runner for CUDA
    and NVML; on a host without them the row says exactly what is missing."""
    import sys

    from harness import Suite
    from harness.models import digits_cnn
    from harness.session import BenchSession, SessionOptions
    from targets.inventory import parse_target
    from harness.testing.sshd import make_sshd

    sshd = make_sshd(tmp_path / "sshd")
    try:
        table = sshd.target(python=sys.executable, workdir=str(tmp_path / "device"), profile="nvidia-gpu",
                            inputs_on_device=True)
        options = SessionOptions(results_dir=tmp_path / "results", cache_dir=CACHE, min_runs=10, min_duration_s=0.05,
                                 max_duration_s=1, warmup_runs=2, run_id="ssh-gpu")
        session = BenchSession(parse_target("gpu-box", table, "test"), options)
        try:
            case = Suite(model=digits_cnn, frameworks=("onnxruntime",), modes=("fp32",), name="ssh-gpu").cases()[0]
            row = session.run_case(case)
        finally:
            session.close()
    finally:
        sshd.stop()
    sent = json.loads((session.store.dir / "work" / case.case_id / "config.json").read_text())
    assert sent["options"]["providers"][0] == ["CUDAExecutionProvider", {"device_id": 0}]
    assert sent["options"]["io"] == "device" and sent["sensors"]["profile"] == "nvidia-gpu"
    if GPU is None or not ORT_CUDA:  # no GPU, or onnxruntime's CPU build: the runner says what is missing
        assert row["status"] == "error" and "has no CUDAExecutionProvider" in row["reason"], row["reason"]
    else:
        assert row["status"] == "ok" and row["providers_used"].startswith("CUDAExecutionProvider"), row["reason"]
