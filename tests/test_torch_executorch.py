"""ExecuTorch programs with the XNNPACK delegate (issue 21): the digits fp32, static-int8 and
dynamic-int8 `.pte` programs lowered for real (cached in the shared cache), run by the real runner
in a fresh process through a BenchSession, scored from the program itself, the int8 speedup
against the .pte fp32 row, what the delegate took in the row; and the faults: a program format
the device's runtime does not read, a device without an ExecuTorch runtime (n/a before the run,
and the runner's own line), fp16 on a CPU without fp16 arithmetic."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness import compat, settings
from harness.artifacts import Artifact, ArtifactCache
from harness.models import digits_cnn
from harness.models.digits_cnn import load_data
from harness.quantize import fp32_recipe, torch_executorch
from harness.quantize.base import BuildContext
from harness.quantize.executorch_program import program_version
from harness.runner import executorch_runtime
from harness.runner_bundle import stage_runner
from harness.session import BenchSession, SessionOptions
from harness.suite import Suite
from targets import TargetConfig
from targets.base import TargetInfo
from targets.local import runner_env
from tests import case_files

CACHE = settings.cache_dir()
FP32 = "digits-cnn-torch-fp32-pte-b1"
INT8 = "digits-cnn-torch-static-int8-pt2e-xnnpack-pte-b1"
DYNAMIC = "digits-cnn-torch-dynamic-int8-pt2e-xnnpack-pte-b1"
QAT = "digits-cnn-torch-qat-int8-pt2e-xnnpack-pte-b1"
MIXED = "digits-cnn-torch-mixed-pt2e-xnnpack-pte-b1"
INT8_ROWS = (INT8, DYNAMIC, QAT, MIXED)


def _cases():
    suite = Suite(model=digits_cnn, frameworks=("torch",),
                  modes=("fp32", "fp16", "static-int8", "dynamic-int8", "qat-int8", "mixed"), name="digits-cnn",
                  budgets={"static-int8": 1.0, "dynamic-int8": 1.0, "qat-int8": 1.5, "mixed": 0.5})
    return {c.case_id: c for c in suite.cases() if c.recipe is not None and c.recipe.execution == "executorch"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("pte-run")
    options = SessionOptions(results_dir=work / "results", cache_dir=CACHE, min_runs=20, min_duration_s=0.1,
                             max_duration_s=1.0, warmup_runs=2, threads=1, run_id="pte")
    session = BenchSession(TargetConfig(name="local", kind="local"), options)
    cases = _cases()
    try:
        rows = {case_id: session.run_case(cases[case_id]) for case_id in (FP32, *INT8_ROWS)}
    finally:
        session.close()
    return session, rows


def _manifest(row) -> dict:
    return case_files.artifact(row).manifest


def test_programs_run_in_the_runner_and_int8_is_compared_with_the_pte_fp32(run):
    session, rows = run
    fp32 = rows[FP32]
    for case_id, row in rows.items():
        assert row["status"] == "ok", (case_id, row["reason"])
        result = json.loads((session.store.dir / "work" / case_id / "result.json").read_text())
        assert result["runtime_details"]["format"] == "executorch" and row["runtime"] == "executorch"
        assert result["runtime_details"]["program_format"] in result["runtime_details"]["runtime_reads"]
        assert "XnnpackBackend" in result["runtime_details"]["delegates"]
        assert row["init_ms"] > 0 and row["first_ms"] > 0
        assert row["runtime_footprint_mb"] > 1  # the executorch distribution's files on disk
        assert row["delegated_ops"].startswith("xnnpack ") and isinstance(row["delegation_complete"], bool)
    assert fp32["accuracy"] >= 0.95
    for case_id in INT8_ROWS:
        row = rows[case_id]
        assert row["accuracy"] >= fp32["accuracy"] - 0.015, (case_id, row["accuracy"], fp32["accuracy"])
        assert row["baseline_case"] == FP32
        assert row["speedup"] == pytest.approx(fp32["latency_p50_ms"] / row["latency_p50_ms"])
    assert fp32_recipe("torch", torch_executorch.FP32).name == torch_executorch.FP32.name


def test_the_delegate_took_the_int8_operators(run):
    """The row's delegated_ops comes from the lowered program: every conv/linear of the int8
    programs went to XNNPACK together with their quantize/dequantize ops."""
    _, rows = run
    for case_id in (FP32, *INT8_ROWS):
        found = _manifest(rows[case_id])["notes"]["delegation"]
        assert rows[case_id]["delegated_ops"] == found["summary"]
        assert rows[case_id]["delegation_complete"] is found["complete"]
        assert found["partitions"] >= 1 and not found["heavy_not_delegated"]
        assert found["delegated"].get("aten.linear") == 2  # digits-cnn's two Linear layers
    static = _manifest(rows[INT8])["notes"]
    assert static["delegation"]["delegated"].get("aten.convolution") == 2
    assert static["delegation"]["delegated_quantize_ops"] > 0 and set(static["layers"].values()) == {"int8"}
    dynamic = _manifest(rows[DYNAMIC])["notes"]["delegation"]["delegated"]
    assert any("choose_qparams" in op for op in dynamic), dynamic  # activations quantized per call, inside XNNPACK
    assert _manifest(rows[FP32])["notes"]["delegation"]["delegated_quantize_ops"] == 0
    qat = _manifest(rows[QAT])["notes"]
    assert set(qat["layers"].values()) == {"int8"} and qat["delegation"]["delegated_quantize_ops"] > 0
    # mixed: the kept layers (first and last by default) stay float, inside XNNPACK's fp32 kernels
    mixed = _manifest(rows[MIXED])["notes"]
    assert mixed["kept_float"] and all(mixed["layers"][name] == "float" for name in mixed["kept_float"])
    assert "int8" in mixed["layers"].values() and mixed["delegation"]["complete"]
    assert rows[MIXED]["kept_float"]
    # which heavy ops read int8 activations: the row's quantized_ops
    assert rows[INT8]["quantized_ops"] == "aten.convolution 2/2, aten.linear 2/2"
    assert rows[DYNAMIC]["quantized_ops"] == "aten.convolution 0/2, aten.linear 2/2"  # dynamic: Linear only
    assert "quantized_ops" not in rows[FP32]  # an extra column: only rows with something to say
    # int8 weights: the program is a fraction of the fp32 one
    assert rows[INT8]["size_bytes"] < 0.5 * rows[FP32]["size_bytes"]


def test_accuracy_is_the_program_own(run):
    """The runner's evaluation outputs are the program's: running it here gives the same logits."""
    import torch
    from executorch.runtime import Runtime

    session, rows = run
    for case_id in (FP32, INT8):
        inputs, got = case_files.runner_io(session, case_id)
        method = Runtime.get().load_program(case_files.artifact(rows[case_id]).model_file).load_method("forward")
        want = np.concatenate([method.execute([torch.from_numpy(inputs[i:i + 1].copy())])[0].numpy()
                               for i in range(len(inputs))])
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-5)


def _target(**facts) -> TargetInfo:
    return TargetInfo(name="pi", kind="ssh", profile="raspberry-pi-5", threads=4, arch="aarch64",
                      device="Cortex-A76", host="pi", facts=facts)


def test_the_runner_runs_a_program_without_importing_the_export_toolchain(run):
    """The runner's bindings are their C++ extension: importing executorch.exir (the export
    toolchain, which executorch.runtime's Python wrapper pulls in: seconds of every .pte case's
    fresh process) is no part of it, and XNNPACK is still registered and runs the delegate."""
    _, rows = run
    folder = CACHE / "artifacts" / rows[INT8]["artifact_key"]
    code = ("import json, sys, numpy as np; from harness.runner.backend_executorch import Backend; "
            f"b = Backend({str(folder / 'model.pte')!r}, json.load(open({str(folder / 'manifest.json')!r})), 1, {{}}); "
            "out = b.run(b.prepare({'input': np.zeros((1, 1, 8, 8), np.float32)})); "
            "print(json.dumps({'output': [type(out[0]).__name__, list(out[0].shape)], 'delegates': b.details['delegates'], "
            "'threads': b.details['num_threads'], 'imported': [m for m in ('executorch.exir', 'executorch.runtime', "
            "'torch._inductor') if m in sys.modules]}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["imported"] == [], seen
    assert "XnnpackBackend" in seen["delegates"] and seen["threads"] == 1 and seen["output"] == ["ndarray", [1, 10]]


def test_a_program_format_the_device_runtime_does_not_read_is_na_before_the_run(run, tmp_path):
    _, rows = run
    numpy_runtime = {"runtime": "executorch-numpy-runtime", "version": "1.4.0", "executorch_version": "1.3.1",
                     "programs": ["ET12"]}
    target = _target(runtimes={"executorch": "missing", "executorch-numpy-runtime": "1.4.0"}, executorch=numpy_runtime)
    same = case_files.artifact(rows[FP32])
    assert program_version(same.model_file) == "ET12"
    assert torch_executorch.FP32.artifact_reason(same, target, 1) is None
    newer = case_files.newer_program_copy(rows[FP32], tmp_path / "newer", b"ET99")
    reason = torch_executorch.FP32.artifact_reason(newer, target, 1)
    assert reason and "ET99" in reason and "ET12" in reason and "executorch-numpy-runtime 1.4.0" in reason
    assert "ExecuTorch 1.3.1" in reason and "pip install executorch==1.4.1" in reason and "target pi" in reason
    assert "for batch 1" in torch_executorch.FP32.batch_reason(8)  # static shapes: n/a at collection


def test_the_runner_refuses_a_newer_program_with_the_versions(run, tmp_path):
    """The runner's own check (a device whose facts were not read): the line names both formats."""
    session, rows = run
    newer = case_files.newer_program_copy(rows[FP32], tmp_path / "newer", b"ET99")
    result = _run_runner(session, rows[FP32], newer, tmp_path / "work")
    assert result["status"] == "error"
    assert "program format ET99" in result["reason"] and "reads ET12" in result["reason"], result["reason"]


def test_a_device_without_an_executorch_runtime(run, tmp_path):
    session, rows = run
    same = case_files.artifact(rows[FP32])
    bare = _target(runtimes={"executorch": "missing", "torch": "missing"}, executorch={})
    reason = torch_executorch.FP32.artifact_reason(same, bare, 1)
    assert reason and "has no ExecuTorch runtime" in reason and "pip install executorch==1.4.1" in reason
    assert "executorch-numpy-runtime" in reason
    # the runner in a process where neither runtime can be found says so in one line (asked for
    # the numpy runtime, which this interpreter lacks)
    if executorch_runtime.describe(executorch_runtime.NUMPY_RUNTIME):
        pytest.skip("executorch-numpy-runtime is installed for this interpreter")
    result = _run_runner(session, rows[FP32], same, tmp_path / "work", {executorch_runtime.CHOICE_ENV: "numpy"})
    assert result["status"] == "error"
    assert "is not installed" in result["reason"] and "executorch-numpy-runtime" in result["reason"], result["reason"]


def _run_runner(session, row, artifact: Artifact, work: Path, env: dict = None) -> dict:
    """One runner process on `artifact`, staged like on a device, with the case's inputs."""
    work.mkdir(parents=True, exist_ok=True)
    config = json.loads((session.store.dir / "work" / row["case_id"] / "config.json").read_text())
    config.update(artifact=str(artifact.model_file), manifest=artifact.manifest, outputs=str(work / "outputs.npz"),
                  result=str(work / "result.json"), min_runs=2, min_duration_s=0.0, max_duration_s=0.5)
    (work / "config.json").write_text(json.dumps(config))
    run_env = dict(runner_env(stage_runner(work / "runner")), **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "runner", str(work / "config.json")], cwd=work, capture_output=True,
                          text=True, timeout=300, env=run_env)
    assert (work / "result.json").is_file(), proc.stdout + proc.stderr
    return json.loads((work / "result.json").read_text())


@pytest.mark.parametrize("arch,flags,expect", [
    ("x86_64", "avx2 avx512f avx512_fp16", "arm64 CPUs with native fp16 arithmetic"),
    ("aarch64", "fp asimd", "no fp16 arithmetic"),
    ("aarch64", "fp asimd fphp asimdhp", None),
])
def test_fp16_only_where_the_target_cpu_has_fp16_arithmetic(arch, flags, expect):
    recipe = next(r for r in torch_executorch.RECIPES if r.mode == "fp16")
    target = replace(_target(cpu_flags=flags), arch=arch)
    reason = recipe.not_applicable_reason(digits_cnn, target)
    assert (reason is None) if expect is None else (expect in reason), reason


def test_fp16_is_na_on_this_x86_machine_with_the_reason(tmp_path):
    import platform

    from targets.local import LocalTarget

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("an x86 statement")
    case = next(c for c in _cases().values() if c.mode == "fp16")
    info = LocalTarget(TargetConfig(name="local", kind="local"), tmp_path).info()
    reason = case.recipe.not_applicable_reason(digits_cnn, info)
    assert reason and "fp16" in reason and info.arch in reason


def test_the_dynamic_program_builds_from_a_cold_cache_with_its_context(tmp_path):
    """A context like the suite's (the shared model cache, an empty artifact cache): the build
    reports the program format it wrote and its lowering."""
    ctx = BuildContext(digits_cnn, load_data(), ArtifactCache(tmp_path / "artifacts"), CACHE / "models")
    artifact, built = ctx.artifact(torch_executorch.FP32)
    assert built and artifact.manifest["runtime"] == "executorch"
    assert artifact.manifest["notes"]["executorch_program"]["identifier"] == program_version(artifact.model_file)
    assert compat.describe(artifact.path, artifact.manifest).startswith("this .pte is ExecuTorch program ET12")


def test_targets_check_names_the_executorch_runtime_and_each_runtime_footprint(tmp_path):
    """runner.facts on this machine (staged like on a device): the ExecuTorch runtime the runner
    uses, the program formats it reads, and the installed size of each runtime, as `targets check` prints them."""
    from harness.cli_targets import format_facts

    proc = subprocess.run([sys.executable, "-m", "runner.facts", "--workdir", str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env=runner_env(stage_runner(tmp_path / "runner")))
    facts = json.loads(proc.stdout)
    found = facts["executorch"]
    assert found["runtime"] == "executorch" and found["programs"] == ["ET12"]  # what this host's executorch writes
    assert found["version"] == facts["runtimes"]["executorch"]
    sizes = facts["footprint_mb"]
    assert sizes["executorch"] > 1 and sizes["torch"] > sizes["executorch"]  # the bindings' own files, torch beside
    text = format_facts(TargetConfig(name="local", kind="local"), facts)
    assert f"executorch {found['version']} (ExecuTorch {found['executorch_version']}), reads programs ET12" in text
    assert f"executorch {sizes['executorch']:g} MB" in text and f"torch {sizes['torch']:g} MB" in text
    bare = format_facts(TargetConfig(name="pi", kind="local"), dict(facts, executorch={}))
    assert "none (pip install executorch, or executorch-numpy-runtime on Python >= 3.12)" in bare


def test_a_suite_can_keep_the_programs_to_the_nightly_profile():
    """quick: fp32, static and dynamic int8 programs (QAT, mixed nightly); a suite whose model takes
    minutes to lower (MiniLM) keeps its ExecuTorch cases nightly with `nightly_executions`."""
    from harness.profiles import QUICK

    quick = {c.mode for c in _cases().values() if QUICK in c.profiles}
    assert quick == {"fp32", "static-int8", "dynamic-int8"}
    suite = Suite(model=digits_cnn, frameworks=("torch",), modes=("fp32", "static-int8"), name="digits-cnn",
                  nightly_executions=("executorch",))
    pte = [c for c in suite.cases() if c.recipe is not None and c.recipe.execution == "executorch"]
    assert pte and all(QUICK not in c.profiles and "nightly" in c.profiles for c in pte)
    others = [c for c in suite.cases() if c.recipe is not None and c.recipe.execution != "executorch"]
    assert any(QUICK in c.profiles for c in others)
