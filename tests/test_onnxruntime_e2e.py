"""End to end on the local target: the onnxruntime digits suite, a user model over its
accuracy budget, and broken user models, in one pytest run; then a cached re-run."""
import json
import re
import textwrap

import numpy as np
import pytest

from harness.quantize import UNAVAILABLE
from harness.vocabulary import MODES
from tests import onnx_models

DIGITS_SUITE = """
from harness import Suite
from harness.models import digits_cnn

suite = Suite(model=digits_cnn, frameworks=("onnxruntime",), modes={modes!r},
              budgets={{"static-int8": 1.0, "mixed": 1.0}})
test_case = suite.pytest_cases()
"""

USER_SUITES = """
from pathlib import Path
from harness import Suite
from harness.models import onnx_model, torch_model

HERE = Path(__file__).parent
fragile = Suite(name="fragile", model=onnx_model("fragile-logreg", HERE / "fragile.onnx", data=HERE / "digits_flat.npz"),
                modes=("dynamic-int8",), budgets={"dynamic-int8": 1.0})
wrong_shape = Suite(name="wrong-shape", model=onnx_model("logreg-wrong-shape", HERE / "logreg.onnx", data=HERE / "digits_images.npz"))
nan = Suite(name="nan", model=onnx_model("nan-model", HERE / "nan.onnx", data=HERE / "digits_flat.npz"))
garbage = Suite(name="garbage", model=onnx_model("not-onnx", HERE / "garbage.onnx", data=HERE / "digits_flat.npz"))
test_fragile = fragile.pytest_cases()


def linear():  # the logistic regression as a torch module: several torch recipes per mode (defect 1 of issue 22)
    import numpy as np
    import torch

    weights = np.load(HERE / "logreg_weights.npz")
    layer = torch.nn.Linear(64, 10)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weights["W"].T.copy()))
        layer.bias.copy_(torch.from_numpy(weights["b"]))
    return torch.nn.Sequential(layer)


torch_logreg = Suite(name="torch-logreg", model=torch_model("logreg-torch", linear, data=HERE / "digits_flat.npz"),
                     frameworks=("torch",), modes=("fp32", "dynamic-int8"), budgets={"dynamic-int8": 1.0})
test_torch_logreg = torch_logreg.pytest_cases()
test_wrong_shape = wrong_shape.pytest_cases()
test_nan = nan.pytest_cases()
test_garbage = garbage.pytest_cases()
"""


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("suites")
    (d / "test_digits_ort.py").write_text(DIGITS_SUITE.format(modes=MODES))
    (d / "test_user_models.py").write_text(USER_SUITES)
    _, _, x_calib, x_eval, y_eval = onnx_models.digits_flat()
    onnx_models.write_npz(d / "digits_flat.npz", x_eval, y_eval, x_calib)
    onnx_models.write_npz(d / "digits_images.npz", x_eval.reshape(-1, 1, 8, 8), y_eval, x_calib.reshape(-1, 1, 8, 8))
    onnx_models.logistic_regression(d / "logreg.onnx")
    import onnx
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(d / "logreg.onnx")).graph.initializer}
    np.savez(d / "logreg_weights.npz", W=weights["W"], b=weights["B"])
    onnx_models.logistic_regression(d / "fragile.onnx", outlier=500.0)
    onnx_models.nan_model(d / "nan.onnx")
    (d / "garbage.onnx").write_bytes(b"this is not a protobuf")
    return d


@pytest.fixture(scope="module")
def first_run(suite_dir, tmp_path_factory):
    from tests.conftest import FAST_TIMING, SuiteRun
    import os, subprocess, sys

    work = tmp_path_factory.mktemp("run")
    results, cache = work / "results", work / "cache"
    # A private artifact cache (the first run builds, the second must not), whose trained fp32
    # weights are the shared cache's: the digits CNN is trained once per test session, not here again.
    from harness import settings

    shared_models = settings.cache_dir() / "models"
    shared_models.mkdir(parents=True, exist_ok=True)
    cache.mkdir()
    (cache / "models").symlink_to(shared_models)

    def run(run_id, *extra):
        cmd = [sys.executable, "-m", "pytest", str(suite_dir), "-p", "harness.pytest_plugin", "-p", "no:cacheprovider",
               "-q", f"--qb-results-dir={results}", f"--qb-cache-dir={cache}", f"--qb-run-id={run_id}", f"--rootdir={suite_dir}",
               *FAST_TIMING, *extra]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=900, env=dict(os.environ))
        return SuiteRun(proc.returncode, proc.stdout + proc.stderr, results / run_id)

    # the dashboard where a run rebuilds it by default (FAST_TIMING turns it off for the other runs)
    # and the race of the finalists before the answer (FAST_TIMING turns it off for the other runs)
    return run("first", f"--qb-dashboard={results / 'dashboard'}", "--qb-race-cap=10"), run


def test_every_mode_has_a_row_with_the_right_status(first_run):
    run, _ = first_run
    df = run.results
    digits = df[df["model"] == "digits-cnn"]
    assert sorted(digits["mode"]) == sorted(MODES)
    for _, row in digits.iterrows():
        expected = "n/a" if ("onnxruntime", row["mode"]) in UNAVAILABLE else "ok"
        assert row["status"] == expected, (row["case_id"], row["reason"])
        if expected == "n/a":
            assert row["reason"], row["case_id"]


def test_accuracy_size_and_latency_columns(first_run):
    run, _ = first_run
    fp32 = run.row("digits-cnn-onnxruntime-fp32-b1")
    assert 0.95 <= fp32["accuracy"] <= 1.0
    assert fp32["latency_p50_ms"] > 0 and fp32["n_runs"] >= 20 and fp32["valid"]
    assert fp32["threads"] >= 1 and fp32["peak_rss_mb"] > 0 and fp32["runtime"] == "onnxruntime"
    static = run.row("digits-cnn-onnxruntime-static-int8-qdq-b1")
    assert static["accuracy_delta"] >= -0.01 and static["within_budget"]
    for case in ("static-int8-qdq", "dynamic-int8-dyn", "mixed-qdq-mixed"):
        row = run.row(f"digits-cnn-onnxruntime-{case}-b1")
        # dynamic keeps the two convolutions float (ConvInteger is slower than float Conv on CPU)
        assert row["size_ratio"] <= (0.45 if case.startswith("dynamic") else 0.35), (case, row["size_ratio"])
        assert row["speedup"] > 0
    assert run.row("digits-cnn-onnxruntime-dynamic-int8-dyn-b1")["quantized_ops"] == "Conv 0/2, MatMul 2/2"
    assert run.row("digits-cnn-onnxruntime-static-int8-qdq-b1")["quantized_ops"].startswith("Conv 2/2")
    assert run.row("digits-cnn-onnxruntime-fp16-b1")["size_ratio"] <= 0.55


FRAGILE = "fragile-logreg-onnxruntime-dynamic-int8-dyn-b1"


def test_over_budget_is_a_verdict_shown_not_a_failed_test(first_run):
    run, _ = first_run
    row = run.row(FRAGILE)
    assert row["status"] == "ok" and row["within_budget"] is not None and not row["within_budget"]
    base = run.row("fragile-logreg-onnxruntime-fp32-b1")
    assert base["accuracy"] > 0.9 and row["accuracy"] < base["accuracy"] - 0.01
    loss = 100 * (base["accuracy"] - row["accuracy"])
    verdict = f"over budget: {-loss:+.2f} pts, a loss of {loss:.2f} > 1"
    assert f"{FRAGILE}: {verdict}" in run.output  # the summary's budget section
    assert re.search(rf"dynamic-int8 .* ok .*{re.escape(verdict)}", run.output)  # the table's reason column
    assert f"{FRAGILE}]" not in run.output.split("short test summary")[-1]  # its test passed


def test_fail_over_budget_makes_it_fail(first_run, suite_dir):
    """The flag for one run, and the suite setting, both fail the over-budget case's test."""
    from harness.session import BenchSession
    from harness import Suite
    from harness.models import onnx_model

    first, run = first_run
    flagged = run("flagged", "-k", "fragile", "--fail-over-budget")
    assert flagged.returncode == 1, flagged.output[-3000:]
    row, base = flagged.row(FRAGILE), flagged.row("fragile-logreg-onnxruntime-fp32-b1")
    assert re.search(rf"FAILED \S*test_user_models.py::test_fragile\[{FRAGILE}\]", flagged.output), flagged.output[-2000:]
    assert "over the dynamic-int8 budget of 1.0 points" in flagged.output
    assert f"accuracy {row['accuracy']:.4f} vs fp32 {base['accuracy']:.4f}" in flagged.output
    assert f"{FRAGILE}: over budget:" in flagged.output and "[test failed]" in flagged.output

    model = onnx_model("fragile-logreg", suite_dir / "fragile.onnx", data=suite_dir / "digits_flat.npz")
    strict = Suite(model=model, modes=("dynamic-int8",), budgets={"dynamic-int8": 1.0}, fail_over_budget=True)
    lenient = Suite(model=model, modes=("dynamic-int8",), budgets={"dynamic-int8": 1.0})
    row, base = first.row(FRAGILE), first.row("fragile-logreg-onnxruntime-fp32-b1")
    [case] = [c for c in strict.cases() if c.case_id == FRAGILE]
    [plain] = [c for c in lenient.cases() if c.case_id == FRAGILE]
    assert "over the dynamic-int8 budget" in BenchSession.verdict(case, row, base)
    assert BenchSession.verdict(plain, row, base) is None
    assert "over the dynamic-int8 budget" in BenchSession.verdict(plain, row, base, fail_over_budget=True)


def test_failing_cases_are_errors_with_actionable_reasons(first_run):
    run, _ = first_run
    wrong = run.row("logreg-wrong-shape-onnxruntime-fp32-b1")
    assert wrong["status"] == "error"
    assert "input 'input' takes samples of shape (64) (float32)" in wrong["reason"]
    assert "samples of shape (1, 8, 8)" in wrong["reason"] and "logreg.onnx" in wrong["reason"]
    nan = run.row("nan-model-onnxruntime-fp32-b1")
    assert nan["status"] == "error" and "NaN/Inf" in nan["reason"]
    garbage = run.row("not-onnx-onnxruntime-fp32-b1")
    assert garbage["status"] == "error" and "is not an ONNX model file" in garbage["reason"] and "garbage.onnx" in garbage["reason"]
    assert run.returncode == 1  # failed tests, not a crash
    assert "FAILED" in run.output and "NaN/Inf" in run.output


def test_report_files_and_summary(first_run):
    run, _ = first_run
    for name in ("results.parquet", "results.csv", "latencies.parquet", "run.json"):
        assert (run.run_dir / name).is_file(), name
    import pandas as pd

    lat = pd.read_parquet(run.run_dir / "latencies.parquet")
    fp32 = run.row("digits-cnn-onnxruntime-fp32-b1")
    assert (lat["case_id"] == fp32["case_id"]).sum() == fp32["n_runs"]
    info = json.loads((run.run_dir / "run.json").read_text())
    assert info["target"]["name"] == "local" and info["versions"]["onnxruntime"] and info["finished_at"]
    assert "quantbench: run first on local" in run.output
    assert "report: " in run.output and "results.parquet" in run.output
    # one progress line per phase when the output is not a terminal
    assert "[quantbench] digits-cnn-onnxruntime-static-int8-qdq-b1" in run.output
    assert "calibrating on 200 samples" in run.output and "measuring on local" in run.output


def test_second_run_quantizes_nothing(first_run):
    first, run = first_run
    assert "(built)" in (first.run_dir / "run.log").read_text()
    second = run("second", "-k", "digits and (fp32 or static-int8)")  # what it builds, nothing; the rest is the same path
    log = (second.run_dir / "run.log").read_text()
    assert "(cached)" in log and "(built)" not in log
    assert second.row("digits-cnn-onnxruntime-static-int8-qdq-b1")["artifact_key"] == \
        first.row("digits-cnn-onnxruntime-static-int8-qdq-b1")["artifact_key"]


def test_static_op_set_is_weighted_ops_only_in_attention_graphs(tmp_path):
    """onnxruntime's default static op set for a plain graph, a classifier ending in a Softmax
    included; weighted ops only once a MatMul multiplies two activations (query x key), so
    mask and residual Adds stay float."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from harness.quantize.onnxruntime import static_op_types

    plain = onnx_models.gemm_model(tmp_path / "plain.onnx", np.ones((4, 3)), np.zeros(3))
    assert static_op_types(plain) is None

    def graph_file(name, nodes, weights):
        inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 4]) for n in ("x", "k", "mask")]
        graph = helper.make_graph(nodes, name, inputs, [helper.make_tensor_value_info("p", TensorProto.FLOAT, [2, 4])],
                                  [numpy_helper.from_array(w, n) for n, w in weights.items()])
        path = tmp_path / f"{name}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return path

    head = graph_file("softmax_head", [helper.make_node("MatMul", ["x", "W"], ["s"], name="classifier"),
                                       helper.make_node("Softmax", ["s"], ["p"], axis=-1, name="softmax")],
                      {"W": np.eye(4, dtype=np.float32)})
    assert static_op_types(head) is None
    attention = graph_file("attention", [
        helper.make_node("MatMul", ["x", "W"], ["q"], name="query"),
        helper.make_node("MatMul", ["q", "k"], ["s"], name="scores"),
        helper.make_node("Add", ["s", "mask"], ["masked"], name="mask_add"),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1, name="softmax"),
    ], {"W": np.eye(4, dtype=np.float32)})
    assert static_op_types(attention) == ["MatMul"]


def test_the_run_ends_with_the_answer_and_the_dashboard(first_run, tmp_path):
    """The last words of a run: one headline per model and target, the same as `quantbench recommend`
    prints from the results database on the same rows (every recipe of a mode a candidate on both
    sides: issue 22, defect 1), then the dashboard's path."""
    import subprocess
    import sys

    from harness.history.db import HistoryDB
    from harness.history.recommend import recommend

    run, _ = first_run
    title = "quantbench: which mode to ship (fastest within 1 accuracy points of its fp32)"
    tail = run.output.split(title)[1]
    printed = [line for line in tail.splitlines() if re.match(r"^\S+ on local: ", line)]
    assert any(line.startswith("digits-cnn on local: ") for line in printed), tail[-3000:]
    assert any(line.startswith("logreg-torch on local: ") for line in printed), tail[-3000:]
    url = f"sqlite:///{tmp_path / 'history.sqlite'}"  # this run's rows alone (the module's later runs share its results dir)
    HistoryDB(url).append_run_dir(run.run_dir)
    cli = subprocess.run([sys.executable, "-m", "harness.cli", "recommend", "--target", "local", "--results-db", url],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    from_db = [line.split("answer: ", 1)[1] for line in cli.stdout.splitlines() if line.startswith("    answer: ")]
    assert sorted(printed) == sorted(from_db), (printed, cli.stdout)
    # both sides see every recipe of a (framework, mode): the torch model's five ok rows are all candidates
    ok = run.results[(run.results["model"] == "logreg-torch") & (run.results["status"] == "ok")]
    assert len(ok) >= 4 and ok.groupby("mode")["recipe"].nunique().max() >= 2, ok[["case_id", "recipe"]]
    # the races of the finalists: stored in the run, and the answer the run printed is theirs
    from harness import race as race_
    from harness.history.recommend import label

    rows = {r["case_id"]: r for r in run.results.to_dict("records")}
    for race in race_.read(run.run_dir):
        [line] = [p for p in printed if p.startswith(f"{race.model} on local: ")]
        names = {c: label(rows[c]) for c in race.finalists}
        assert line.startswith(f"{race.model} on local: {race_.describe(race, names)}"), (line, race)
    every = run.results[run.results["model"] == "logreg-torch"]
    for rows in (run.results, HistoryDB(url).results(target="local")):
        [rec] = [r for r in recommend(rows) if r.model == "logreg-torch"]
        assert sorted(c.row["case_id"] for c in rec.candidates) == sorted(every["case_id"])
    index = re.search(r"^dashboard: (\S+index\.html) \(rebuilt in [0-9.]+ s\)$", tail, re.M)
    assert index and (run.run_dir.parent / "dashboard" / "index.html").samefile(index.group(1)), tail[-2000:]
    page = (run.run_dir.parent / "dashboard" / "target-local.html").read_text()
    assert "fragile-logreg" in page and "digits-cnn" in page
    if race_.read(run.run_dir):  # the dashboard shows the races' rounds in the evidence
        assert "race of the finalists (" in page and "interleaved round" in page
    assert tail.index("dashboard: ") > max(tail.index(line) for line in printed)
    from harness.history.answer import dashboard_dir

    assert dashboard_dir(None, run.run_dir.parent) == run.run_dir.parent / "dashboard"  # where it goes by default
