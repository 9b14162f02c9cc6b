"""Run profiles: which cases the quick default and the nightly matrix select, the declared
seeded evaluation subset and its confidence interval, and the per-case time budget.

Runs are real (`pytest suite -p harness.pytest_plugin` in a fresh process) on small real ONNX
models: the digits logistic regression, and a deliberately heavy chain of 2048-wide MatMuls
whose evaluation pass takes seconds."""
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from harness import intervals
from harness.profiles import EVAL_SEED
from tests import onnx_models

SUITE = """
from pathlib import Path
from harness import Suite, Timing
from harness.models import onnx_model
from harness.profiles import NIGHTLY_ONLY

HERE = Path(__file__).parent
TIMING = Timing(warmup_runs=2, min_runs=10, min_duration_s=0.1, max_duration_s=1.0)
logreg = onnx_model("logreg", HERE / "logreg.onnx", data=HERE / "data.npz")
heavy = onnx_model("heavy", HERE / "heavy.onnx", data=HERE / "data.npz")

everywhere = Suite(name="everywhere", model=logreg, modes=("fp32", "dynamic-int8"), timing=TIMING,
                   eval_samples={"quick": 60})
nightly_only = Suite(name="nightly_only", model=logreg, modes=("fp32",), batch_sizes=(4,), timing=TIMING,
                     profiles=NIGHTLY_ONLY)
slow = Suite(name="slow", model=heavy, modes=("fp32", "dynamic-int8"), budgets={"dynamic-int8": 1.0}, timing=TIMING,
             eval_samples={"quick": 100})
test_everywhere = everywhere.pytest_cases()
test_nightly_only = nightly_only.pytest_cases()
test_slow = slow.pytest_cases()
"""


def heavy_model(path, features: int = 64, width: int = 2048, depth: int = 32):
    """input (batch, 64) -> 64 x width -> depth x (width x width, tanh) -> 10 logits: about
    depth x 8 MFLOP per sample, one shared 16 MB weight."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((features, width)) / 8).astype(np.float32), "W_in"),
             numpy_helper.from_array((rng.standard_normal((width, width)) / math.sqrt(width)).astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal((width, 10)) / math.sqrt(width)).astype(np.float32), "W_out")]
    nodes = [helper.make_node("MatMul", ["input", "W_in"], ["h0"])]
    for i in range(depth):
        nodes += [helper.make_node("MatMul", [f"h{i}", "W"], [f"m{i}"]), helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"])]
    nodes.append(helper.make_node("MatMul", [f"h{depth}", "W_out"], ["logits"]))
    graph = helper.make_graph(nodes, "heavy", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("profiles")
    _, _, x_calib, x_eval, y_eval = onnx_models.digits_flat()
    onnx_models.logistic_regression(folder / "logreg.onnx")
    heavy_model(folder / "heavy.onnx")
    onnx_models.write_npz(folder / "data.npz", x_eval, y_eval, x_calib)
    (folder / "test_profiled.py").write_text(SUITE)
    return folder


def pytest_run(folder, *args, env=None):
    cmd = [sys.executable, "-m", "pytest", str(folder / "test_profiled.py"), "-p", "harness.pytest_plugin",
           "-p", "no:cacheprovider", "-q", f"--rootdir={folder}", f"--qb-results-dir={folder / 'results'}",
           f"--qb-cache-dir={folder / 'cache'}", "--qb-results-db=off", *args]
    import os

    return subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None})


def collected(folder, *args, env=None) -> set[str]:
    proc = pytest_run(folder, "--collect-only", *args, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line.split("[", 1)[1].rstrip("]") for line in proc.stdout.splitlines() if "::" in line and "[" in line}


def test_quick_is_the_default_and_nightly_selects_the_rest(suite_dir):
    every = {"logreg-onnxruntime-fp32-b1", "logreg-onnxruntime-dynamic-int8-dyn-b1", "logreg-onnxruntime-fp32-b4",
             "heavy-onnxruntime-fp32-b1", "heavy-onnxruntime-dynamic-int8-dyn-b1"}
    quick = collected(suite_dir, env={"QUANTBENCH_PROFILE": None})
    assert quick == every - {"logreg-onnxruntime-fp32-b4"}
    assert collected(suite_dir, "--qb-profile", "nightly") == every
    assert collected(suite_dir, env={"QUANTBENCH_PROFILE": "nightly"}) == every
    assert collected(suite_dir, "--qb-profile", "nightly", "-m", "nightly") == {"logreg-onnxruntime-fp32-b4"}
    bad = pytest_run(suite_dir, "--collect-only", env={"QUANTBENCH_PROFILE": "weekly"})
    assert bad.returncode == pytest.ExitCode.USAGE_ERROR and "unknown profile 'weekly'" in bad.stderr


def test_the_repository_suites_keep_alternatives_and_extra_shapes_for_nightly():
    from harness.profiles import QUICK

    def cases(path):
        import importlib.util

        spec = importlib.util.spec_from_file_location(path.replace("/", "_"), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return [p.values[0] for name in dir(module) if name.startswith("test_") and hasattr(getattr(module, name), "suite")
                for p in getattr(module, name).suite.pytest_params()]  # the plugin parametrizes with these

    from tests.conftest import REPO_ROOT

    digits = cases(str(REPO_ROOT / "suites" / "test_digits.py"))
    minilm = cases(str(REPO_ROOT / "suites" / "test_minilm.py"))
    quick = [c for c in digits + minilm if QUICK in c.profiles]
    # every framework and mode of digits, and of MiniLM at exactly one shape, in the quick default;
    # but torch fp16: its AOTI package is nightly (no faster than fp32 on x86, torch_aoti.RECIPES), the
    # eager program is a reference and the .pte is for arm64
    # (and MiniLM's onnxruntime qat-int8: Suite.nightly_modes, its cold build)
    for model, nightly in (("digits-cnn", set()), ("minilm-l6-s32", {("onnxruntime", "qat-int8")})):
        declared = {(c.framework, c.mode) for c in digits + minilm if c.model.name == model}
        assert {(c.framework, c.mode) for c in quick if c.model.name == model} == declared - {("torch", "fp16")} - nightly
        assert nightly <= declared
    assert {(c.model.name, c.batch_size) for c in quick if c.model.name.startswith("minilm")} == {("minilm-l6-s32", 1)}
    # alternatives of a mode are nightly-only, and so are the other MiniLM shapes
    nightly_only = {c.case_id for c in digits + minilm if QUICK not in c.profiles}
    assert "digits-cnn-torch-static-int8-pt2e-x86-inductor-b1" in nightly_only
    assert "digits-cnn-tflite-dynamic-int8-litert-torch-legacy-b1" in nightly_only
    assert "minilm-l6-s128-onnxruntime-fp32-b1" in nightly_only and "minilm-l6-s32-torch-fp32-b8" in nightly_only
    # torch: the quick rows are deployed artifacts (AOTInductor packages, TorchScript); the eager
    # programs are reference numerics, nightly-only (issue 21)
    quick_torch = {c.case_id for c in quick if c.framework == "torch" and c.recipe is not None}
    for mode in ("fp32", "static-int8", "dynamic-int8", "qat-int8", "mixed"):
        slug = "aoti" if mode == "fp32" else "pt2e-x86-aoti"
        assert f"digits-cnn-torch-{mode}-{slug}-b1" in quick_torch
        assert f"minilm-l6-s32-torch-{mode}-{slug}-b1" in quick_torch  # MiniLM's qat-int8 by self-distillation
    assert all(not c.recipe.reference for c in quick if c.recipe is not None)
    assert {"digits-cnn-torch-fp32-b1", "digits-cnn-torch-static-int8-pt2e-x86-b1",
            "digits-cnn-torch-dynamic-int8-torchao-b1", "minilm-l6-s32-torch-mixed-pt2e-x86-b1"} <= nightly_only


def rows(folder, run_id):
    from harness.store import load_run

    return load_run(folder / "results" / run_id).set_index("case_id")


def test_quick_scores_the_declared_seeded_subset_with_its_interval_and_nightly_everything(suite_dir):
    import onnxruntime as ort

    for run_id, args in (("quick", ["--qb-profile", "quick"]), ("nightly", ["--qb-profile", "nightly", "--qb-rounds", "1"]),
                         ("cli", ["--qb-profile", "nightly", "--qb-rounds", "1", "--eval-samples", "30"])):
        proc = pytest_run(suite_dir, "-k", "everywhere", *args, f"--qb-run-id={run_id}")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    quick, nightly, cli = rows(suite_dir, "quick"), rows(suite_dir, "nightly"), rows(suite_dir, "cli")

    # Independently: the logistic regression's predictions on every evaluation digit.
    with np.load(suite_dir / "data.npz") as npz:
        x_eval, y_eval = npz["x_eval"], npz["y_eval"]
    session = ort.InferenceSession(str(suite_dir / "logreg.onnx"), providers=["CPUExecutionProvider"])
    correct = np.argmax(session.run(None, {"input": x_eval})[0], axis=1) == y_eval
    subset = np.sort(np.random.default_rng(EVAL_SEED).choice(len(y_eval), size=60, replace=False))

    fp32 = "logreg-onnxruntime-fp32-b1"
    assert quick.loc[fp32, "eval_samples"] == 60 and nightly.loc[fp32, "eval_samples"] == len(y_eval)
    assert quick.loc[fp32, "accuracy"] == pytest.approx(correct[subset].mean())
    # --eval-samples overrides every suite's figure, in any profile: the same seeded draw
    assert cli.loc[fp32, "eval_samples"] == 30
    assert cli.loc[fp32, "accuracy"] == pytest.approx(
        correct[np.sort(np.random.default_rng(EVAL_SEED).choice(len(y_eval), size=30, replace=False))].mean())
    assert nightly.loc[fp32, "accuracy"] == pytest.approx(correct.mean())
    for df in (quick, nightly):
        row = df.loc[fp32]
        assert (row["accuracy_ci_low"], row["accuracy_ci_high"]) == pytest.approx(
            intervals.wilson(row["accuracy"] * row["eval_samples"], int(row["eval_samples"])))
        assert row["accuracy_ci_low"] < row["accuracy"] <= row["accuracy_ci_high"] or row["accuracy"] == 1.0
    width = lambda df: df.loc[fp32, "accuracy_ci_high"] - df.loc[fp32, "accuracy_ci_low"]  # noqa: E731
    assert width(quick) > width(nightly)  # fewer samples, a wider interval
    dynamic = "logreg-onnxruntime-dynamic-int8-dyn-b1"
    assert quick.loc[dynamic, "eval_samples"] == 60  # the quantized case is scored on the same samples


def test_wilson_and_bootstrap_intervals_match_references():
    # Newcombe (1998), Statistics in Medicine 17:857, table I, Wilson score intervals.
    for (successes, n), expected in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605),
                                     (0, 20): (0.0, 0.1611), (1, 29): (0.0061, 0.1718)}.items():
        low, high = intervals.wilson(successes, n)
        assert (round(low, 4), round(high, 4)) == expected
    assert intervals.wilson(10, 10)[1] == pytest.approx(1.0)
    values = np.random.default_rng(1).normal(5.0, 2.0, size=4000)
    low, high = intervals.bootstrap_mean(values)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))  # the normal-theory interval a large sample converges to
    assert low == pytest.approx(values.mean() - half, abs=0.2 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.2 * half)


def test_a_case_past_its_time_budget_keeps_its_latency_and_says_why_in_seconds(suite_dir):
    proc = pytest_run(suite_dir, "-k", "slow", "--case-budget", "0.5", "--qb-run-id=budget")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fp32 = rows(suite_dir, "budget").loc["heavy-onnxruntime-fp32-b1"]
    row = rows(suite_dir, "budget").loc["heavy-onnxruntime-dynamic-int8-dyn-b1"]
    projected_s = row["latency_p50_ms"] * 100 / 1000.0
    assert projected_s > 0.05, f"premise: 100 calls should take over a tenth of the 0.5 s budget, p50 is {row['latency_p50_ms']} ms"
    assert row["status"] == "ok" and row["latency_p50_ms"] > 0 and row["n_runs"] >= 1 and row["speedup"] > 0
    assert row["eval_samples"] == 0 and pd.isna(row["accuracy"])  # not scored
    assert pd.isna(row["within_budget"])  # its accuracy budget cannot be checked, and the run still exited 0
    reason = row["reason"]
    assert reason.startswith("accuracy not scored: the evaluation pass would take about ")
    assert "100 calls of batch 1" in reason and "over its time budget of 0.5 s" in reason and "--case-budget" in reason
    said = float(reason.split("would take about ")[1].split(" s")[0])
    assert said == pytest.approx(projected_s, rel=0.05)
    assert "accuracy not scored" in proc.stdout  # in the printed table too
    # fp32 is the reference of every other case: only the target's case timeout bounds it
    assert fp32["eval_samples"] == 100 and fp32["accuracy"] >= 0 and not fp32["reason"]


def test_quick_timing_for_suites_that_declare_none():
    from harness import Timing
    from harness.profiles import QUICK_TIMING
    from harness.session import SessionOptions

    quick, nightly = SessionOptions(profile="quick"), SessionOptions(profile="nightly")
    got = quick.timing(Timing())
    assert {k: getattr(got, k) for k, _ in QUICK_TIMING} == dict(QUICK_TIMING) and got.rounds == 1
    assert replace_rounds(nightly.timing(Timing())) == Timing()  # nightly: the full defaults, 3 rounds
    mine = Timing(min_runs=500, min_duration_s=2.0, max_duration_s=20.0)
    assert replace_rounds(quick.timing(mine)) == mine  # a suite's own timing stands
    flags = SessionOptions(profile="quick", min_runs=7, max_duration_s=9.0).timing(Timing())
    assert (flags.min_runs, flags.max_duration_s, flags.min_duration_s) == (7, 9.0, 0.5)  # flags win over the profile


def replace_rounds(timing):
    from dataclasses import replace

    return replace(timing, rounds=None)
