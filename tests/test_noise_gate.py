"""Noise widens the latency gate instead of switching it off, shown with a real slowdown.

Two real runs of the same case on a `local` target whose runner is pinned to CPU 0: the
baseline as the machine is, then the same case while a busy process spins on CPU 0 and the
runner runs at nice 10, so it gets a small share of that core (about a tenth, whatever else
the machine is doing). The model is a wide MLP at batch 128, whose calls are long enough
(milliseconds) that their latency follows that share. With `--noise-threshold=0` every case
counts as noisy, so the gate must judge against the margin the measured IQR/median widens,
and the slowdown must still be a regression.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from harness.history.db import HistoryDB
from harness.history.gates import Gates
from harness.history.regress import NOISY, REGRESSION, judge_case, select_baseline
from tests import onnx_models
from tests.history_support import run_pytest

CASE = "wide-mlp-onnxruntime-fp32-b128"
SUITE = """
from pathlib import Path
from harness import Suite
from harness.models import onnx_model

HERE = Path(__file__).parent
suite = Suite(name="wide", model=onnx_model("wide-mlp", HERE / "wide.onnx", data=HERE / "digits.npz"), batch_sizes=(128,))
test_case = suite.pytest_cases()
"""


def _wrapper(path, nice: int) -> None:
    """A target `python` that runs the runner on CPU 0 at `nice`. The runner starts in a session of
    its own, and with autogroup scheduling (kernel.sched_autogroup_enabled) nice only ranks tasks
    inside that session's group, so the group's nice is set too (a process may lower its own)."""
    path.write_text("#!/bin/sh\n"
                    f"[ -w /proc/self/autogroup ] && echo {nice} > /proc/self/autogroup 2>/dev/null\n"
                    f"exec nice -n {nice} taskset -c 0 {sys.executable} \"$@\"\n")
    path.chmod(0o755)


def _case(run_dir):
    record = json.loads((run_dir / "cases" / f"{CASE}.json").read_text())
    return record["row"], np.asarray(record["latencies_ms"])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    if not os.path.exists("/usr/bin/taskset") or not os.sched_getaffinity(0) >= {0}:
        pytest.fail("needs util-linux's taskset and CPU 0 (both are on every Linux host this runs on)")
    work = tmp_path_factory.mktemp("noise-gate")
    onnx_models.wide_mlp(work / "wide.onnx")
    _, _, x_calib, x_eval, y_eval = onnx_models.digits_flat()
    onnx_models.write_npz(work / "digits.npz", x_eval, y_eval, x_calib)
    (work / "test_wide.py").write_text(SUITE)
    wrapper = work / "python-on-cpu0"
    (work / "targets.toml").write_text(textwrap.dedent(f"""
        [targets.cpu0]
        kind = "local"
        python = "{wrapper}"
        threads = 1
    """))
    results = work / "results"
    common = ("--target=cpu0", f"--qb-inventory={work / 'targets.toml'}", "--qb-dashboard=off")

    _wrapper(wrapper, nice=0)
    base = run_pytest([work / "test_wide.py"], results, "night-1", *common, "--qb-tag=base", cwd=work)
    assert base.returncode == 0, base.stdout[-3000:] + base.stderr[-2000:]

    _wrapper(wrapper, nice=10)  # the same target, now squeezed: a real slowdown, not scaled latencies
    busy = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"])
    try:
        # up to 8 s: the squeezed loop still reaches its 20 runs on a busy machine (the gate's own test needs them)
        slow = run_pytest([work / "test_wide.py"], results, "night-2", *common, "--qb-baseline=base", "--noise-threshold=0",
                          "--max-duration=8", cwd=work)
    finally:
        busy.kill()
        busy.wait()
    return work, results, base, slow


def test_a_real_slowdown_on_a_noisy_baseline_is_a_regression(two_runs):
    work, results, _, slow = two_runs
    old, old_lat = _case(results / "night-1")
    new, new_lat = _case(results / "night-2")
    change = new["latency_p50_ms"] / old["latency_p50_ms"] - 1
    widened = 0.10 + max(old["iqr_over_median"], new["iqr_over_median"])  # threshold + 1.0 x the larger IQR/median
    assert change > widened, (change, old["iqr_over_median"], new["iqr_over_median"])  # the premise, from this run

    # the whole path: --noise-threshold=0 makes both sides noisy; the case's test fails as regressed
    assert slow.returncode == 1, slow.stdout[-4000:]
    assert f"{CASE}: regressed against the latest runs tagged 'base' (night-1)" in slow.stdout, slow.stdout[-6000:]
    assert f"widened to {widened:.3g} by noise" in slow.stdout
    stored = HistoryDB(f"sqlite:///{results / 'history.sqlite'}").comparisons(run_id="night-2")
    latency = stored[stored["quantity"] == "latency_p50_ms"].iloc[0]
    assert latency["verdict"] == REGRESSION and latency["method"] in ("mann-whitney", "ci99")

    # the same evidence under the default gates (noisy or not, whichever this machine made it)
    verdict = {v["quantity"]: v for v in judge_case(new, old, Gates(), new_lat, old_lat)}["latency_p50_ms"]
    assert verdict["verdict"] == REGRESSION
    # a margin wide enough to hold the change makes it `noisy`, never silently the same
    loose = {v["quantity"]: v for v in judge_case(new, old, Gates(noise=0.0, noise_k=change / max(
        old["iqr_over_median"], new["iqr_over_median"])), new_lat, old_lat)}["latency_p50_ms"]
    assert loose["verdict"] == NOISY and loose["detail"].startswith("within the noise")


def test_the_baseline_key_includes_threads(two_runs):
    _, results, _, _ = two_runs
    db = HistoryDB(f"sqlite:///{results / 'history.sqlite'}")
    baseline = select_baseline(db, "base", "cpu0")
    new, _ = _case(results / "night-2")
    assert new["threads"] == 1 and baseline.row_for(new) is not None
    other = {**new, "threads": 2}
    assert baseline.row_for(other) is None
    assert baseline.why_no_row(other) == "the baseline ran it with threads=1, this run with threads=2"
    assert baseline.why_no_row({**new, "model": "another"}) == "not in the baseline"
