"""Older artifact formats for a target (torch_format, onnx_opset), on this machine: the files are
what the settings promise and compute what the default ones compute. tests/test_emulated_pi.py
runs them on a device whose torch and onnxruntime really are older, and checks the messages."""
from pathlib import Path

import onnx
import pytest

from harness import Suite
from harness.compat import ir_for_opset, newest_opset_for_ir, onnx_versions, pt2_schema
from harness.models import digits_cnn
from harness.quantize.executorch_program import program_version
from harness import settings
from harness.session import BenchSession, SessionOptions
from targets.base import TargetError
from targets.inventory import parse_target

CACHE = settings.cache_dir()
FP32 = Suite(name="formats", model=digits_cnn, frameworks=("torch", "onnxruntime"), modes=("fp32", "dynamic-int8"))


def run(tmp_path, name, **settings):
    options = SessionOptions(results_dir=tmp_path / name, cache_dir=CACHE, run_id=name, min_runs=5, min_duration_s=0.0,
                             max_duration_s=0.5, warmup_runs=1, case_budget_s=600.0)  # always score: accuracies are compared
    bench = BenchSession(parse_target(name, {"kind": "local", **settings}, "test"), options)
    try:
        return {c.case_id: bench.run_case(c) for c in FP32.cases() if "torchao" not in c.case_id}
    finally:
        bench.close()


def artifact_file(row) -> Path:
    folder = CACHE / "artifacts" / row["artifact_key"]
    return next(p for p in folder.iterdir() if p.suffix in (".onnx", ".pt", ".pt2", ".pte"))


def test_older_formats_compute_what_the_default_ones_do(tmp_path):
    default = run(tmp_path, "default")
    older = run(tmp_path, "older", torch_format="torchscript", onnx_opset=17)
    assert default.keys() == older.keys()
    for case_id, row in older.items():
        if "inductor" in case_id or "aoti" in case_id:  # torch.export program compiled on the target, or an
            # AOTInductor package: neither has a TorchScript twin
            assert row["status"] == "n/a" and 'asks for TorchScript files (torch_format = "torchscript")' in row["reason"]
            continue
        assert row["status"] == default[case_id]["status"], (case_id, row["reason"])
        if row["status"] == "n/a":  # an ARM-only twin on this x86 machine
            continue
        assert row["status"] == "ok", (case_id, row["reason"])
        assert row["accuracy"] == default[case_id]["accuracy"], case_id
        assert row["artifact_key"] != default[case_id]["artifact_key"]  # the setting is part of the key
        path = artifact_file(row)
        if path.suffix == ".pte":  # an ExecuTorch program needs no torch on the device: the same program
            assert program_version(path) == program_version(artifact_file(default[case_id])) == "ET12"
            continue
        if row["framework"] == "onnxruntime":
            assert onnx_versions(path) == (ir_for_opset(17), 17) == (8, 17)
            assert row["recipe"].endswith("as opset 17, IR 8 (target's onnx_opset)")
            onnx.checker.check_model(str(path))
        else:
            assert path.suffix == ".pt" and pt2_schema(path) is None  # TorchScript, not a .pt2
            if "torch.export" in default[case_id]["recipe"]:  # written as TorchScript for this target, and says so
                assert row["recipe"].endswith("as TorchScript (target's torch_format)")
    assert onnx_versions(artifact_file(default["digits-cnn-onnxruntime-fp32-b1"]))[0] == 10
    assert pt2_schema(artifact_file(default["digits-cnn-torch-fp32-b1"]))[0] >= 8


def test_opset_for_an_ir_version():
    assert newest_opset_for_ir(9, 18) == 18 and ir_for_opset(18) == 8
    assert newest_opset_for_ir(7, 18) == 14  # ONNX 1.9: IR 7, opset 14 (1.10 brought opset 15 and IR 8)
    assert newest_opset_for_ir(2, 18) is None


@pytest.mark.parametrize("field, value, message", [
    ("torch_format", "pt3", "torch_format must be one of torch.export, torchscript"),
    ("onnx_opset", 99, "onnx_opset must be an integer from 7 to 18"),
    ("onnx_opset", "17", "onnx_opset must be an integer"),
])
def test_inventory_checks_the_format_settings(field, value, message):
    with pytest.raises(TargetError, match=message):
        parse_target("old", {"kind": "ssh", "host": "pi.lab", field: value}, "targets.toml")
