"""Bring your own torch.export program (.pt2, torch.export.save): no Python model code, every
mode of a torch factory that applies in torch, onnxruntime and LiteRT, QAT and the
module-swapping dynamic recipes n/a with their reasons, `mixed` by the program's module paths."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import FAST_TIMING, SuiteRun
from tests.onnx_models import digits_flat

MODES = ("fp32", "fp16", "bf16", "dynamic-int8", "static-int8", "mixed", "qat-int8")
SUITE = f"""
from pathlib import Path

from harness import Suite
from harness.models import torch_export_model

HERE = Path(__file__).parent
suite = Suite(model=torch_export_model("cnn-pt2", HERE / "cnn.pt2", data=HERE / "digits.npz"),
              frameworks=("torch", "onnxruntime", "tflite"), modes={MODES!r}, keep_float=("fc2",),
              eval_samples={{"quick": 100}})  # PT2E graphs run eagerly (slow): keep the evaluation short
test_case = suite.pytest_cases()
"""


def train_cnn():
    import torch

    class CNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.fc1 = torch.nn.Linear(8 * 64, 32)
            self.fc2 = torch.nn.Linear(32, 10)

        def forward(self, image):
            return self.fc2(torch.relu(self.fc1(torch.flatten(torch.relu(self.conv(image)), 1))))

    x_train, y_train, *_ = digits_flat()
    torch.manual_seed(0)
    model = CNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(x_train.reshape(-1, 1, 8, 8)), torch.from_numpy(y_train)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval(), x[:2]


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    import torch

    d = tmp_path_factory.mktemp("pt2")
    model, example = train_cnn()
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)), d / "cnn.pt2")
    torch.export.save(torch.export.export(model, (example,)), d / "cnn_fixed_batch.pt2")
    x_train, y_train, x_calib, x_eval, y_eval = digits_flat()
    image = lambda a: a.reshape(-1, 1, 8, 8)  # noqa: E731
    np.savez(d / "digits.npz", x_eval=image(x_eval), y_eval=y_eval, x_calib=image(x_calib), x_train=image(x_train),
             y_train=y_train)
    (d / "test_pt2.py").write_text(textwrap.dedent(SUITE))
    return d


@pytest.fixture(scope="module")
def run(programs, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    cmd = [sys.executable, "-m", "pytest", str(programs / "test_pt2.py"), "-p", "harness.pytest_plugin", "-p", "no:cacheprovider",
           "-q", f"--qb-results-dir={results}", "--qb-run-id=byom-pt2", f"--rootdir={programs}", "--qb-results-db=off", *FAST_TIMING]
    proc = subprocess.run(cmd, cwd=programs, capture_output=True, text=True, timeout=1800, env=dict(os.environ))
    return SuiteRun(proc.returncode, proc.stdout + proc.stderr, results / "byom-pt2")


def test_every_framework_runs_the_program_where_the_mode_applies(run):
    df = run.results
    assert "error" not in set(df["status"]), df[df["status"] == "error"][["case_id", "reason"]]
    ok = {(r["framework"], r["mode"]) for r in df.to_dict("records") if r["status"] == "ok"}
    assert {("torch", m) for m in ("fp32", "bf16", "static-int8", "mixed")} <= ok
    assert {("onnxruntime", m) for m in ("fp32", "fp16", "dynamic-int8", "static-int8", "mixed")} <= ok
    assert {("tflite", m) for m in ("fp32", "fp16", "dynamic-int8", "static-int8", "mixed")} <= ok
    for framework in ("torch", "onnxruntime", "tflite"):
        fp32 = df[(df["framework"] == framework) & (df["mode"] == "fp32")].iloc[0]
        assert fp32["accuracy"] >= 0.9, framework
        for row in df[(df["framework"] == framework) & (df["status"] == "ok")].to_dict("records"):
            assert row["accuracy"] >= fp32["accuracy"] - 0.03, (row["case_id"], row["accuracy"])


def manifest(row):
    import json

    from harness import settings

    return json.loads((settings.cache_dir() / "artifacts" / row["artifact_key"] / "manifest.json").read_text())


def test_the_program_keeps_its_module_paths_for_mixed(run):
    # the quick profile's torch rows are AOTInductor packages of the program (issue 21)
    mixed = run.row("cnn-pt2-torch-mixed-pt2e-x86-aoti-b1")
    assert mixed["status"] == "ok" and mixed["execution"] == "deployed"
    assert manifest(mixed)["notes"]["layers"] == {"conv": "int8", "fc1": "int8", "fc2": "float"}
    static = run.row("cnn-pt2-torch-static-int8-pt2e-x86-aoti-b1")
    assert manifest(static)["notes"]["layers"] == {"conv": "int8", "fc1": "int8", "fc2": "int8"}
    assert static["delegation_complete"] and not mixed["delegation_complete"]  # fc2 kept float in the package


def test_qat_and_module_swapping_recipes_are_na_with_reasons(run, programs, tmp_path):
    df = run.results
    qat = df[df["mode"] == "qat-int8"]
    assert set(qat["status"]) == {"n/a"}
    assert any("cnn.pt2 is a torch.export program (an inference graph" in r for r in qat["reason"])
    # torch.ao's module swapping (ao-x86, TorchScript, deprecated) runs in the nightly profile
    cmd = [sys.executable, "-m", "pytest", str(programs / "test_pt2.py"), "-p", "harness.pytest_plugin", "-p", "no:cacheprovider",
           "-q", f"--qb-results-dir={tmp_path}", "--qb-run-id=ao", f"--rootdir={programs}", "--qb-results-db=off", *FAST_TIMING,
           "--qb-profile", "nightly", "-k", "ao-x86"]
    proc = subprocess.run(cmd, cwd=programs, capture_output=True, text=True, timeout=1800, env=dict(os.environ))
    swapped = SuiteRun(proc.returncode, proc.stdout + proc.stderr, tmp_path / "ao").row("cnn-pt2-torch-dynamic-int8-ao-x86-b1")
    assert swapped["status"] == "n/a" and "holds its layers as graph calls (aten.linear), not modules" in swapped["reason"]


def test_a_program_exported_with_a_fixed_batch_says_how_to_export_it(programs):
    from harness.models import files
    from harness.models.files import ModelFileError

    with pytest.raises(ModelFileError, match=r"has a fixed batch size .*dynamic_shapes=\(\{0: torch.export.Dim\('batch'\)\},\)"):
        files.load_pt2_module(programs / "cnn_fixed_batch.pt2")
    assert [spec.name for spec in files.pt2_inputs(programs / "cnn.pt2")] == ["image"]  # the data's `input` binds to it


def test_a_misspelt_module_path_lists_close_matches(programs):
    from types import SimpleNamespace

    from harness.models import files
    from harness.quantize.layer_names import UnknownLayer
    from harness.quantize.pt2e_torch import resolve_keep_float

    module = files.load_pt2_module(programs / "cnn.pt2")
    ctx = SimpleNamespace(spec=SimpleNamespace(name="cnn-pt2"))
    with pytest.raises(UnknownLayer, match="layer 'fc_2' to keep in float matches no layer of cnn-pt2 in torch; close matches: fc2"):
        resolve_keep_float(ctx, module, ["fc_2"])
    assert resolve_keep_float(ctx, module, None) == ["conv", "fc2"]  # the default: first and last layer
