"""The ARM half of the matrix on an emulated Raspberry Pi 5 (scripts/emulated_pi.py): arm64
Debian bookworm under qemu-user, its own sshd on loopback, Debian's Python 3.11 with aarch64
wheels of numpy, onnxruntime, ai-edge-litert and torch. The digits suite runs on it as an `ssh`
target with profile `raspberry-pi-5`, the way a user runs it (`pytest --target=emulated-pi`).

CI runs a subset (every framework, the ARM-only recipes among them); set
QUANTBENCH_EMULATED_PI_FULL=1 to run the whole suites/test_digits.py on the device instead.
Emulation is 30-400x slower than a Pi: nothing here looks at a timing figure.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import Suite
from harness.data import resolve_data
from harness.metrics import top1
from harness.profiles import EVAL_SEED
from harness.models import digits_cnn
from harness import settings
from harness.session import BenchSession, SessionOptions
from targets.base import RunnerJob, TargetConfig
from targets.inventory import parse_target
from targets.local import LocalTarget
from harness.testing.sshd import inventory_toml
from tests import emulated_pi
from tests.conftest import REPO_ROOT, SuiteRun

CACHE = settings.cache_dir()
FULL = os.environ.get("QUANTBENCH_EMULATED_PI_FULL", "") not in ("", "0")
# Few timed calls: the figures mean nothing under emulation. The evaluation pass always runs
# (--case-budget: emulation is slow, and the quick profile's 45 s would skip it for torch).
TIMING = ("--min-runs", "3", "--min-duration", "0", "--max-duration", "1", "--warmup-runs", "1")
SUBSET = """
from harness import Suite
from harness.models import digits_cnn

# The ARM-only torch recipes (pt2e-arm, ao-qnnpack, fp16 on asimdhp) and their x86 twins (n/a
# here), onnxruntime's static int8, LiteRT with XNNPACK: every runtime's aarch64 wheel.
torch_arm = Suite(name="digits-arm-torch", model=digits_cnn, frameworks=("torch",),
                  modes=("fp32", "fp16", "dynamic-int8", "static-int8"), budgets={"dynamic-int8": 1.0, "static-int8": 1.0})
others = Suite(name="digits-arm", model=digits_cnn, frameworks=("onnxruntime", "tflite"), modes=("fp32", "static-int8"),
               budgets={"static-int8": 1.0})
test_torch = torch_arm.pytest_cases()
test_others = others.pytest_cases()
"""
# torchao's row is version skew, not ARM (tested on its own below); tflite's static-int8 rows are
# covered on x86; the ExecuTorch programs (-pte) have their own module on two devices
# (test_emulated_pi_executorch.py); each emulated torch case costs about a minute of emulated `import torch`.
# The ARM-only torch recipes are reference rows (eager PT2E q/dq, eager fp16), out of the quick profile:
# the subset runs in the nightly one, with one round and no race (not the figures' run), minus
# torch.compile on the device (-inductor).
SUBSET_FILTER = ("-k", "not torchao and not (tflite and static) and not pte and not inductor",
                 "--qb-profile", "nightly", "--qb-rounds", "1", "--qb-no-race")


pi = emulated_pi.device_fixture("emulated-pi")


@pytest.fixture(scope="module")
def inventory(pi, tmp_path_factory):
    path = tmp_path_factory.mktemp("inventory") / "targets.toml"
    path.write_text(inventory_toml(pi.inventory()))
    return path


@pytest.fixture(scope="module")
def digits_run(pi, inventory, tmp_path_factory):
    work = tmp_path_factory.mktemp("digits-on-pi")
    if FULL:
        suite, select = REPO_ROOT / "suites" / "test_digits.py", ()
    else:
        suite, select = work / "test_digits_arm.py", SUBSET_FILTER
        suite.write_text(SUBSET)
    results = work / "results"
    cmd = [sys.executable, "-m", "pytest", str(suite), "-p", "harness.pytest_plugin", "-p", "no:cacheprovider", "-q",
           f"--qb-results-dir={results}", "--qb-run-id=pi", f"--rootdir={work}", "--target=emulated-pi", f"--qb-inventory={inventory}",
           f"--qb-cache-dir={CACHE}", "--qb-results-db=off", "--case-budget=1800", *TIMING, *select]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=3600)
    return SuiteRun(proc.returncode, proc.stdout + proc.stderr, results / "pi")


def test_targets_check_reports_the_device(pi, inventory):
    cli = [sys.executable, "-m", "harness.cli", "targets", "check", "emulated-pi", "--inventory", str(inventory)]
    text = subprocess.run(cli, capture_output=True, text=True, timeout=600)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert "(aarch64)" in out and "Raspberry Pi 5" in out
    assert "Debian GNU/Linux 12 (bookworm)" in out
    assert "python    /opt/quantbench-venv/bin/python 3.11." in out
    for runtime in ("numpy 2.4.6", "onnxruntime 1.32.0", "tflite 2.3.0", "torch 2.9.1", "executorch 1.0.1"):
        assert runtime in out, out
    # the ExecuTorch bindings made for the device's torch, the program format they read, and what each runtime weighs
    assert "executorch executorch 1.0.1 (ExecuTorch 1.0.1), reads programs ET12" in out, out
    assert "footprint torch " in out and ", executorch " in out, out
    facts = json.loads(subprocess.run(cli + ["--json"], capture_output=True, text=True, timeout=600).stdout)
    assert facts["machine"] == "aarch64"
    assert "asimdhp" in facts["cpu_flags"].split()  # the Pi 5's cpuinfo, not the host's x86 flags
    # no vcgencmd in this userland: no power figure, and the reason says why (never a zero)
    assert facts["sensors"]["power"] == []
    assert "vcgencmd" in facts["sensors"]["power_none"]
    assert f"power     none: {facts['sensors']['power_none']}" in out
    assert facts["formats"]["onnx_max_ir"] >= 10 and facts["formats"]["torch_export_schema"].startswith("8.")
    old = subprocess.run(cli[:-3] + ["emulated-pi-old", "--inventory", str(inventory)], capture_output=True, text=True, timeout=600)
    assert old.returncode == 0, old.stderr
    assert "onnxruntime 1.16.3, tflite missing, torch 2.4.1" in old.stdout
    assert "executorch none (pip install executorch" in old.stdout, old.stdout
    assert 'torch 2.4.1 reads .pt2 schema 5.' in old.stdout and 'set torch_format = "torchscript" for emulated-pi-old' in old.stdout
    assert "onnxruntime 1.16.3 reads ONNX IR versions up to 9" in old.stdout and "set onnx_opset = 18" in old.stdout


def test_digits_suite_runs_on_the_pi(digits_run):
    df = digits_run.results
    assert set(df["target"]) == {"emulated-pi"} and set(df["profile"]) == {"raspberry-pi-5"}
    errors = df[df["status"] == "error"][["case_id", "reason"]].values.tolist()
    # The one row allowed to fail (full suite only) is version skew, and it must say so: the host's
    # torchao wrote tensor subclasses that the device's older torchao (made for torch 2.9) lacks.
    skew = [(c, r) for c, r in errors if "torchao" in c and "cannot load it" in r and "torchao 0.14.1" in r]
    assert errors == skew, errors
    assert digits_run.returncode == (1 if errors else 0), digits_run.output[-3000:]
    ok = df[df["status"] == "ok"]
    assert set(ok["python_version"]) == {"3.11.2"}
    assert all(str(d).startswith("Raspberry Pi 5") for d in ok["device"])
    # no power sensor: empty with the reason, never a zero
    assert ok["power_mean_w"].isna().all() and ok["energy_mj_per_inf"].isna().all()
    assert all("vcgencmd" in str(s) for s in ok["power_source"])


def row(df, framework, mode, slug):
    """The row of the recipe whose case id ends in that slug (other formats of a mode end otherwise: -aoti, -pte)."""
    hits = df[(df["framework"] == framework) & (df["mode"] == mode) & df["case_id"].str.endswith(f"-{slug}-b1")]
    assert len(hits) == 1, (framework, mode, slug, sorted(df["case_id"]))
    return hits.iloc[0]


def test_arm_only_recipes_run_and_x86_ones_are_na(digits_run):
    df = digits_run.results
    for mode, slug in (("static-int8", "pt2e-arm"), ("dynamic-int8", "ao-qnnpack"), ("fp16", "torch-fp16")):
        r = row(df, "torch", mode, slug)
        assert r["status"] == "ok", (r["case_id"], r["reason"])
    assert "qnnpack" in row(df, "torch", "dynamic-int8", "ao-qnnpack")["recipe"]
    for mode, slug in (("static-int8", "pt2e-x86"), ("dynamic-int8", "ao-x86")):
        r = row(df, "torch", mode, slug)
        assert r["status"] == "n/a" and "aarch64" in r["reason"], (r["case_id"], r["reason"])
    litert = df[(df["framework"] == "tflite") & (df["status"] == "ok")]
    assert len(litert) >= 2
    assert set(df[df["framework"] == "onnxruntime"]["status"]) == {"ok"}


def host_run(device_row, run_dir: Path, work: Path):
    """The same artifact, inputs and runner settings on this x86 host (a local runner process)."""
    case_dir = run_dir / "work" / device_row["case_id"]
    config = json.loads((case_dir / "config.json").read_text())
    artifact_dir = CACHE / "artifacts" / device_row["artifact_key"]
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    inputs = next((run_dir / "inputs").glob("digits-cnn-*.npz"))
    for key in ("artifact", "manifest", "inputs", "outputs", "result", "target", "runner_parent"):
        config.pop(key, None)
    job = RunnerJob(device_row["case_id"], artifact_dir, manifest["file"], manifest, inputs, config, work / device_row["case_id"])
    outcome = LocalTarget(TargetConfig("x86-host", "local"), CACHE).run(job)
    assert outcome.result["status"] == "ok", outcome.result.get("reason")
    return outcome.outputs


def test_accuracy_matches_the_x86_host_for_the_same_artifact(digits_run, tmp_path):
    """Every ok row's artifact also runs here on x86: fp32 outputs agree to float tolerance,
    quantized ones to within 1 accuracy point (int8 kernels round differently per ISA)."""
    df = digits_run.results
    dataset = resolve_data(digits_cnn.data)
    ok = df[df["status"] == "ok"]
    assert len(ok) >= 8
    compared = []
    for _, r in ok.iterrows():
        with np.load(digits_run.run_dir / "work" / r["case_id"] / "outputs.npz") as npz:
            device = {k: npz[k] for k in npz.files}
        host = host_run(r, digits_run.run_dir, tmp_path)
        _, labels = dataset.eval_subset(len(next(iter(device.values()))), EVAL_SEED)  # the profile's seeded subset
        assert top1(device, labels) == pytest.approx(r["accuracy"])
        host_acc = top1(host, labels)
        name = next(iter(device))
        diff = float(np.max(np.abs(device[name].astype(np.float64) - host[name].astype(np.float64))))
        compared.append((r["case_id"], r["accuracy"], host_acc, diff))
        if r["mode"] == "fp32":
            assert diff < 1e-3, (r["case_id"], diff)
            assert r["accuracy"] == host_acc, (r["case_id"], r["accuracy"], host_acc)
        else:
            assert abs(r["accuracy"] - host_acc) <= 0.01 + 1e-9, (r["case_id"], r["accuracy"], host_acc)
    print("\n".join(f"{c}: device {a:.4f} host {h:.4f} max|diff| {d:.2e}" for c, a, h, d in compared))


def skew_session(tmp_path, table, name):
    options = SessionOptions(results_dir=tmp_path / "results", cache_dir=CACHE, run_id=name, min_runs=3, min_duration_s=0.0,
                             max_duration_s=1.0, warmup_runs=1, case_budget_s=1800.0)
    return BenchSession(parse_target(name, table, "test"), options)


FP32 = Suite(name="skew", model=digits_cnn, frameworks=("torch", "onnxruntime"), modes=("fp32",))
# torch's .pt2 fp32 and onnxruntime's fp32 (torch's TorchScript fp32 row is TorchScript anyway)
DEFAULT_FORMAT_CASES = ("digits-cnn-torch-fp32-b1", "digits-cnn-onnxruntime-fp32-b1")


def test_version_skew_is_named_before_anything_is_shipped(pi, tmp_path):
    """torch 2.4.1 and onnxruntime 1.16.3 on the device: each row says which file needs which version."""
    bench = skew_session(tmp_path, pi.target(emulated_pi.script().OLD_VENV), "emulated-pi-old")
    try:
        rows = {c.case_id: bench.run_case(c) for c in FP32.cases() if c.case_id in DEFAULT_FORMAT_CASES}
    finally:
        bench.close()
    torch_row, ort_row = (rows[case_id] for case_id in DEFAULT_FORMAT_CASES)
    assert torch_row["status"] == "error" and ort_row["status"] == "error"
    assert f"this .pt2 was exported by torch {importlib.metadata.version('torch')} (torch.export schema 8." in torch_row["reason"]
    assert "the device has torch 2.4.1 (schema 5." in torch_row["reason"] and 'torch_format = "torchscript"' in torch_row["reason"]
    assert "this .onnx has IR version 10" in ort_row["reason"] and "onnxruntime 1.16.3" in ort_row["reason"]
    assert "onnx_opset = 18" in ort_row["reason"]
    assert "uploaded artifact" not in (bench.store.dir / "run.log").read_text()  # decided before shipping


def test_older_formats_load_on_the_older_device(pi, tmp_path):
    """The same device with torch_format = "torchscript" and onnx_opset = 18: files it reads, same accuracy as here."""
    table = pi.target(emulated_pi.script().OLD_VENV, torch_format="torchscript", onnx_opset=18)
    bench = skew_session(tmp_path, table, "emulated-pi-old")
    local = skew_session(tmp_path / "local", {"kind": "local"}, "local")
    try:
        rows = {c.framework: bench.run_case(c) for c in FP32.cases() if c.case_id in DEFAULT_FORMAT_CASES}
        here = {c.framework: local.run_case(c) for c in FP32.cases() if c.case_id in DEFAULT_FORMAT_CASES}
    finally:
        bench.close()
        local.close()
    for framework, row in rows.items():
        assert row["status"] == "ok", row["reason"]
        assert row["accuracy"] == here[framework]["accuracy"]  # fp32 on both: the same predictions
        assert row["artifact_sha256"] != here[framework]["artifact_sha256"]  # a file of its own format
    assert rows["torch"]["recipe"].endswith("as TorchScript (target's torch_format)")
    assert rows["torch"]["runtime_version"].startswith("2.4.1")
    assert rows["onnxruntime"]["recipe"].endswith("as opset 18, IR 8 (target's onnx_opset)")
    assert rows["onnxruntime"]["runtime_version"] == "1.16.3"
