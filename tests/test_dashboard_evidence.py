"""The dashboard shows the evidence behind the answer from what the history stores: each case's
latency distribution per round (a process at the slow level visible at a glance), the power
trace of its timed window, and the answer's candidates with their intervals. A real run in 3
rounds on the local target with an external meter (a process printing watts), and a labelled
copy of it in which one round of one case ran at 1.6x (a process on the slow level)."""
from __future__ import annotations

import re
import sys

import numpy as np
import pandas as pd
import pytest

from harness import Suite, Timing, settings
from harness.history import dashboard
from harness.history.db import HistoryDB
from harness.history.recommend import recommend
from harness.session import BenchSession, SessionOptions
from harness.store import read_run_dir
from targets.inventory import parse_target
from tests import onnx_models
from tests.history_support import derive_run

DYNAMIC = "logreg-onnxruntime-dynamic-int8-dyn-b1"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evidence")
    model = onnx_models.logreg_spec(root)
    (root / "meter.py").write_text("print('power=2.5W')\n")
    config = parse_target("local", {"kind": "local", "profile": "generic-linux", "sensors": {
        "idle_s": 0.2, "meter_command": [sys.executable, str(root / "meter.py")], "meter_interval_s": 0.1}}, "test")
    options = SessionOptions(results_dir=root / "results", cache_dir=settings.cache_dir(), threads=1, rounds=3,
                             run_id="evidence")
    suite = Suite(model=model, modes=("fp32", "dynamic-int8"), name="evidence", budgets={"dynamic-int8": 100.0},
                  timing=Timing(warmup_runs=2, min_runs=20, min_duration_s=0.3, max_duration_s=2.0))
    session = BenchSession(config, options)
    try:
        rows = [session.run_case(case) for case in suite.cases()]
    finally:
        session.close()
    assert all(r["status"] == "ok" for r in rows), [r["reason"] for r in rows]
    return root, session.store.dir


def build(root, run_dirs, name):
    db = HistoryDB(f"sqlite:///{root / f'{name}.sqlite'}")
    for run_dir in run_dirs:
        db.append_run_dir(run_dir)
    out = root / name
    dashboard.build(db, out, max_drop=100.0)
    return db, out, (out / "target-local.html").read_text()


def figure(page: str, kind: str) -> list[str]:
    return re.findall(rf'<figure data-evidence="{kind}"[^>]*>.*?</figure>', page, flags=re.S)


def test_each_case_latencies_per_round_power_traces_and_the_candidates(run):
    root, run_dir = run
    db, out, page = build(root, [run_dir], "site")
    rows = db.results(run_id="evidence")
    (rounds_fig,) = figure(page, "latency-rounds")
    assert f'data-cases="{len(rows)}" data-rounds="{3 * len(rows)}"' in rounds_fig
    svg = (out / re.search(r'src="([^"]+)"', rounds_fig).group(1)).read_text()
    # one box per (case, round), its median that of the round's latencies in latencies.parquet
    lat = pd.read_parquet(run_dir / "latencies.parquet")
    drawn = re.findall(r'<g class="round[^"]*" data-case="([^"]+)" data-round="(\d)" data-median-ms="([^"]+)"', svg)
    assert len(drawn) == 3 * len(rows)
    expected = lat.groupby(["case_id", "round"])["latency_ms"].median()
    labels = {"onnxruntime fp32": "logreg-onnxruntime-fp32-b1", "onnxruntime dynamic-int8": DYNAMIC}
    for label, r, median in drawn:
        assert float(median) == pytest.approx(expected[(labels[label], int(r) - 1)], rel=1e-5)
    # the power trace of each case's timed window, as stored
    traces = db.power(run_id="evidence")
    power = figure(page, "power-trace")
    assert len(power) == len(rows)
    for fig in power:
        case = re.search(r'data-case="([^"]+)"', fig).group(1)
        assert f'data-samples="{int((traces["case_id"] == case).sum())}"' in fig
        trace_svg = (out / re.search(r'src="([^"]+)"', fig).group(1)).read_text()
        assert f'data-samples="{int((traces["case_id"] == case).sum())}"' in trace_svg and 'class="idle"' in trace_svg
    # the answer's candidates with their intervals at their stated level
    (rec,) = recommend(db.results(target="local"), 100.0)
    eligible = [c for c in rec.candidates if c.eligible]
    (cand_fig,) = figure(page, "candidates")
    assert f'data-candidates="{len(eligible)}"' in cand_fig
    cand_svg = (out / re.search(r'src="([^"]+)"', cand_fig).group(1)).read_text()
    dynamic = rows[rows["case_id"] == DYNAMIC].iloc[0]
    assert (f'[{dynamic["speedup_ci_low"]:.2f}-{dynamic["speedup_ci_high"]:.2f} @75%]') in cand_svg  # 3 rounds: 75%
    assert cand_svg.count('class="candidate chosen"') == (1 if rec.choice else 0)


def test_a_process_at_the_slow_level_stands_apart(run, tmp_path):
    """A copy of the run in which the dynamic-int8 case's three rounds are its first round's
    latencies, the second at 1.6x: that round is drawn apart and named."""
    root, run_dir = run
    _, rows, _ = read_run_dir(run_dir)
    first = int(next(r for r in rows if r["case_id"] == DYNAMIC)["round_n_runs"].split()[0])  # round 1's latencies

    def slow_second_round(case_id, lat):
        return np.concatenate([lat[:first], lat[:first] * 1.6, lat[:first]]) if case_id == DYNAMIC else lat

    slowed = derive_run(run_dir, tmp_path, "slowed", transform=slow_second_round, started_at="2099-01-01T00:00:00Z",
                        columns={DYNAMIC: {"round_n_runs": f"{first} {first} {first}"}},
                        label="dynamic-int8: its rounds are round 1's latencies, round 2 at 1.6x")
    _, out, page = build(tmp_path, [run_dir, slowed], "slowed-site")
    (rounds_fig,) = figure(page, "latency-rounds")
    assert "onnxruntime dynamic-int8, round 2: median" in rounds_fig and "1.60x its case&#x27;s median" in rounds_fig
    svg = (out / re.search(r'src="([^"]+)"', rounds_fig).group(1)).read_text()
    apart = re.findall(r'<g class="round apart" data-case="([^"]+)" data-round="(\d)"', svg)
    assert ("onnxruntime dynamic-int8", "2") in apart
