"""keep_float="auto": per-layer sensitivity and the search for the smallest float set, on real
quantization in every framework (torch PT2E, onnxruntime QDQ, LiteRT through ai-edge-quantizer).

The model (tests/sensitive_model.py) is built so that one known layer, fc1, is very sensitive:
four of its input channels arrive 1000x larger. It must rank first and stay float everywhere.
A plain model whose static int8 already meets its budget keeps nothing float and says so.
"""
from __future__ import annotations

import json
import textwrap

import pytest

SUITE = textwrap.dedent("""
    from harness import Suite
    from tests.sensitive_model import plain_mlp, sensitive_mlp

    sensitive = Suite(name="sensitive", model=sensitive_mlp, frameworks=("torch", "onnxruntime", "tflite"),
                      modes=("static-int8", "mixed"), keep_float="auto", budgets={"mixed": 2.0})
    plain = Suite(name="plain", model=plain_mlp, frameworks=("onnxruntime",), modes=("mixed",), keep_float="auto",
                  budgets={"mixed": 10.0})
    typo = Suite(name="typo", model=plain_mlp, frameworks=("onnxruntime",), modes=("mixed",), keep_float=("fc_1",))
    half = Suite(name="half", model=sensitive_mlp, frameworks=("onnxruntime", "tflite"), modes=("mixed",),
                 keep_float="auto", kept_precision="float16", budgets={"mixed": 2.0})
    test_sensitive = sensitive.pytest_cases()
    test_plain = plain.pytest_cases()
    test_typo = typo.pytest_cases()
    test_half = half.pytest_cases()
""")
AUTO_ROWS = {"torch": "sensitive-mlp-torch-mixed-pt2e-x86-aoti-auto-b1",  # the deployed AOTI package (issue 21)
             "onnxruntime": "sensitive-mlp-onnxruntime-mixed-qdq-mixed-auto-b1",
             "tflite": "sensitive-mlp-tflite-mixed-litert-torch-auto-b1"}

STATIC_ROWS = {"torch": "sensitive-mlp-torch-static-int8-pt2e-x86-aoti-b1",
               "onnxruntime": "sensitive-mlp-onnxruntime-static-int8-qdq-b1",
               "tflite": "sensitive-mlp-tflite-static-int8-litert-torch-b1"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import os
    import subprocess
    import sys

    from tests.conftest import FAST_TIMING, REPO_ROOT, SuiteRun

    where = tmp_path_factory.mktemp("auto")
    (where / "test_auto_suite.py").write_text(SUITE)
    cmd = [sys.executable, "-m", "pytest", "test_auto_suite.py", "-p", "harness.pytest_plugin", "-p", "no:cacheprovider",
           "-q", f"--qb-results-dir={where / 'results'}", "--qb-run-id=auto", f"--rootdir={where}", "-k", "not arm and not inductor and not keras",
           *FAST_TIMING]
    # the suite imports tests.sensitive_model: put this repository first on the path (a wheel in the
    # environment, xdsl, ships a top-level `tests` package that would shadow ours from another cwd)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, cwd=where, capture_output=True, text=True, timeout=1800, env=env)
    return SuiteRun(proc.returncode, proc.stdout + proc.stderr, where / "results" / "auto")


def test_the_sensitive_layer_ranks_first_and_stays_float_in_every_framework(run):
    for framework, case_id in AUTO_ROWS.items():
        row = run.row(case_id)
        assert row["status"] == "ok", (framework, row["reason"], run.output[-3000:])
        table = json.loads(row["sensitivity"])
        ranked = sorted(table["layers"], key=lambda layer: layer[table["layer_columns"].index("rank")])
        assert ranked[0][0] == "fc1", (framework, ranked)
        assert table["split"] == "calibration" and table["sqnr_tool"]
        kept = row["kept_float"].split(", ")
        assert "fc1" in kept and row["keep_float_source"] == "auto", (framework, row["kept_float"])
        assert row["kept_float_precision"] == "float32"
        # The search is bounded: all int8, all float, a binary search over 3 layers, a greedy pass of 4.
        assert 2 <= row["search_evaluations"] <= 2 + 2 + 4
        assert row["within_budget"], (framework, row["accuracy"], row["keep_float_search"])
        static = run.row(STATIC_ROWS[framework])  # measured beside it in the same run: over the budget
        assert static["status"] == "ok" and row["accuracy"] > static["accuracy"], (framework, row["accuracy"], static["accuracy"])
        # fc1 alone in int8 costs more than any other layer alone
        losses = {layer[0]: layer[table["layer_columns"].index("alone_loss_pts")] for layer in table["layers"]}
        assert losses["fc1"] == max(losses.values()) and losses["fc1"] > 2.0, (framework, losses)


def test_static_int8_within_budget_keeps_nothing_float_and_says_so(run):
    row = run.row("plain-mlp-onnxruntime-mixed-qdq-mixed-auto-b1")
    assert row["status"] == "ok", row["reason"]
    assert row["kept_float"] == "" and row["kept_float_count"] == 0
    assert row["keep_float_search"].startswith("static int8 already meets the budget"), row["keep_float_search"]
    assert row["search_evaluations"] == 1


def test_a_name_that_maps_to_no_layer_is_an_error_with_close_matches(run):
    row = run.row("plain-mlp-onnxruntime-mixed-qdq-mixed-b1")
    assert row["status"] == "error"
    assert "layer 'fc_1'" in row["reason"] and "close matches: fc1" in row["reason"], row["reason"]


def test_float16_kept_layers_where_the_framework_can_and_na_where_not(run):
    """ai-edge-quantizer keeps the found layers' weights in float16 (float_casting); onnxruntime's
    QDQ recipe keeps float32 only: its float16 case is n/a and says why."""
    row = run.row("sensitive-mlp-tflite-mixed-litert-torch-auto-fp16-b1")
    assert row["status"] == "ok", row["reason"]
    assert row["kept_float_precision"].startswith("float16") and "fc1" in row["kept_float"].split(", ")
    assert row["within_budget"], (row["accuracy"], row["keep_float_search"])
    ort = run.row("sensitive-mlp-onnxruntime-mixed-qdq-mixed-auto-fp16-b1")
    assert ort["status"] == "n/a" and "kept_precision float16" in ort["reason"], ort["reason"]


def test_sensitivity_command_prints_tables_worst_first_and_writes_files_and_a_picture(run, tmp_path):
    """The command reads what the run's searches cached: the same tables, at once."""
    import os
    import subprocess
    import sys

    import pandas as pd

    suite_file = run.run_dir.parent.parent / "test_auto_suite.py"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "sensitivity", str(suite_file), "-k", "sensitive and not keras",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for heading in ("onnxruntime: ", "tflite (litert-torch): ", "torch (pt2e-x86): "):
        section = proc.stdout.split(heading, 1)[1]
        first = section.splitlines()[3].split()  # the worst layer comes first
        assert first[:2] == ["1", "fc1"], section[:600]
    assert "from the cache" in proc.stdout
    layers = pd.read_parquet(tmp_path / "out" / "sensitivity.parquet")
    assert set(layers["framework"]) == {"onnxruntime", "tflite (litert-torch)", "torch (pt2e-x86)"}
    assert (layers[layers["rank"] == 1]["name"] == "fc1").all() and (layers["split"] == "calibration").all()
    assert (tmp_path / "out" / "search.csv").is_file() and (tmp_path / "out" / "sensitivity-sensitive-mlp.png").stat().st_size > 0


def test_dashboard_shows_the_sensitivity_of_models_that_have_one(run, tmp_path):
    from harness.history import dashboard
    from harness.history.db import HistoryDB

    db = HistoryDB.open(str(run.run_dir.parent / "history.sqlite"))
    dashboard.build(db, tmp_path / "site")
    page = (tmp_path / "site" / "target-local.html").read_text()
    assert page.count("<h3>Layer sensitivity</h3>") == 2  # sensitive-mlp and plain-mlp; digits-style pages without auto rows have none
    assert (tmp_path / "site" / "img" / "local" / "sensitivity-sensitive-mlp-b1.png").stat().st_size > 0
    assert 'data-sensitivity="3"' in page
