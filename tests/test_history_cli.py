"""`quantbench history | recommend | export` on real runs of the digits onnxruntime suite and
on copies a test changed on purpose (history_support.derive_run, labelled in the run)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from harness.history.db import HistoryDB
from tests.history_support import REPO_ROOT, derive_run, quantbench, real_runs

MIXED = "digits-cnn-onnxruntime-mixed-qdq-mixed-b1"
QDQ = "digits-cnn-onnxruntime-static-int8-qdq-b1"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return real_runs(tmp_path_factory)


def _named(row):
    """How recommend's evidence names a case: framework/mode and the recipe's slug from the case id."""
    slug = row["case_id"].removeprefix(f"{row['model']}-{row['framework']}-{row['mode']}").removesuffix(f"-b{row['batch_size']}")
    return f"{row['framework']}/{row['mode']}" + (f" ({slug.lstrip('-')})" if slug else "")


def _rows(run_dir):
    return {p.stem: json.loads(p.read_text())["row"] for p in (run_dir / "cases").glob("*.json")}


def test_history_lists_tags_shows_and_imports(runs, tmp_path):
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    imported = quantbench("history", "import", *map(str, runs), "--results-db", url, "--tag", "nightly")
    assert imported.returncode == 0 and imported.stdout.count("imported real-") == 2, imported.stderr
    tagged = quantbench("history", "tag", "real-0", "v1.2", "--results-db", url)
    assert tagged.returncode == 0 and "real-0: tags nightly, v1.2" in tagged.stdout
    listed = quantbench("history", "--results-db", url)
    lines = [line.split() for line in listed.stdout.splitlines()[1:3]]
    assert [cells[0] for cells in lines] == ["real-1", "real-0"]  # newest first
    assert lines[1][4:9] == ["nightly,v1.2", "digits", "5", "0", "1"]  # tags, suites, ok, error, n/a
    only = quantbench("history", "--results-db", url, "--tag", "v1.2")
    assert "real-0" in only.stdout and "real-1" not in only.stdout
    shown = quantbench("history", "show", "real-1", "--results-db", url)
    assert shown.returncode == 0 and shown.stdout.startswith("run real-1")
    assert re.search(r"onnxruntime +static-int8 +onnxruntime\.quantize_static", shown.stdout)
    missing = quantbench("history", "show", "nope", "--results-db", url)
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr


def test_recommend_takes_the_fastest_mode_within_the_budget(runs, tmp_path):
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    HistoryDB(url).append_run_dir(runs[0])
    rows = _rows(runs[1])
    mixed = rows[MIXED]
    # test-made night: mixed twice as fast as the fastest other case (the real timings decide how
    # much to scale; on a tiny model mixed QDQ can be slower than fp32) but 2 points less
    # accurate; static-int8 broken
    others = min(r["latency_p50_ms"] for cid, r in rows.items() if r["status"] == "ok" and cid != MIXED)
    factor = 0.5 * others / mixed["latency_p50_ms"]
    night = derive_run(runs[1], tmp_path, "night", scale={MIXED: factor}, started_at="2099-01-01T00:00:00Z",
                       columns={MIXED: {"accuracy": mixed["accuracy"] - 0.02, "accuracy_delta": -0.02},
                                QDQ: {"status": "error", "reason": "RuntimeError: test-made failure"}},
                       label=f"mixed latencies x{factor:.3g} (half the fastest other case) and accuracy -2 points; "
                             "static-int8 error")
    HistoryDB(url).append_run_dir(night)
    # within the 1-point budget on this run (fp32 always) and timed as it should be (not throttled, minimums
    # met); which ones are is read from the run itself
    eligible = {cid: r for cid, r in _rows(night).items() if r["status"] == "ok" and cid != MIXED
                and (r["mode"] == "fp32" or -100 * r["accuracy_delta"] <= 1.0 + 1e-9)
                and r.get("valid") is not False and r.get("throttled") is not True}
    fastest = min(eligible.values(), key=lambda r: r["latency_p50_ms"])

    strict = quantbench("recommend", "--target", "local", "--results-db", url)
    assert strict.returncode == 0, strict.stderr
    head = strict.stdout.splitlines()[0]
    assert head == f"digits-cnn (batch 1) on local, budget 1 accuracy points: onnxruntime/{fastest['mode']}"
    assert f"p50 {fastest['latency_p50_ms']:.4g} ms" in strict.stdout and "run night" in strict.stdout
    assert "excluded onnxruntime/mixed (qdq-mixed): loses 2.00 accuracy points vs fp32, over the budget of 1" in strict.stdout
    assert "excluded onnxruntime/static-int8 (qdq): status error: RuntimeError: test-made failure" in strict.stdout
    assert "excluded onnxruntime/bf16: status n/a" in strict.stdout

    loose = quantbench("recommend", "--target", "local", "--max-accuracy-drop", "3", "--results-db", url)
    assert loose.stdout.splitlines()[0].endswith("budget 3 accuracy points: onnxruntime/mixed")
    assert "(-2.00 pts vs fp32, budget 3)" in loose.stdout and "runner-up" in loose.stdout

    unknown = quantbench("recommend", "--target", "jetson", "--results-db", url)
    assert unknown.returncode == 2 and "no results for target 'jetson'" in unknown.stderr and "local" in unknown.stderr


def test_export_is_read_by_pytest_benchmark(runs, tmp_path):
    from pytest_benchmark.stats import Stats  # pinned in requirements/test.lock: missing is a failure, not a skip

    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    db = HistoryDB(url)
    db.append_run_dir(runs[0], tags=["nightly"])
    slower = derive_run(runs[0], tmp_path, "slower", scale=1.3, label="latencies x1.3")
    db.append_run_dir(slower)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for run, out in (("real-0", a), ("slower", b)):
        proc = quantbench("export", run, "--format", "pytest-benchmark", "-o", str(out), "--results-db", url)
        assert proc.returncode == 0 and f"wrote 5 benchmark(s) of run {run}" in proc.stdout, proc.stderr

    doc = json.loads(a.read_text())
    assert doc["commit_info"]["quantbench_run_id"] == "real-0" and doc["commit_info"]["quantbench_tags"] == ["nightly"]
    cases = _rows(runs[0])
    assert {bench["param"] for bench in doc["benchmarks"]} == {c for c, r in cases.items() if r["status"] == "ok"}
    for bench in doc["benchmarks"]:
        latencies = json.loads((runs[0] / "cases" / f"{bench['param']}.json").read_text())["latencies_ms"]
        want = Stats()
        for v in latencies:
            want.update(v / 1000.0)
        for name in Stats.fields:  # pytest-benchmark's own statistics of the same data
            got, ref = bench["stats"][name], getattr(want, name)
            assert got == ref if isinstance(ref, (str, int)) else got == pytest.approx(ref, rel=1e-12), name
        assert bench["stats"]["data"] == pytest.approx([v / 1000.0 for v in latencies])
        assert bench["extra_info"]["accuracy"] == cases[bench["param"]]["accuracy"]

    compared = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "pytest-benchmark"), "compare", str(a), str(b),
                               "--group-by=name", "--columns=min,median,rounds"],
                              capture_output=True, text=True, cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    for case in doc["benchmarks"]:
        assert f"benchmark '{case['name']}': 2 tests" in compared.stdout
    assert len(re.findall(r"\(1\.30\)", compared.stdout)) >= 5  # b's median is 1.30x a's, as pytest-benchmark sees it

    storage = tmp_path / ".benchmarks"
    for _ in range(2):
        proc = quantbench("export", "slower", "--storage", str(storage), "--no-data", "--results-db", url)
        assert proc.returncode == 0, proc.stderr
    files = sorted(p.relative_to(storage).as_posix() for p in storage.rglob("*.json"))
    assert [f.split("/")[1] for f in files] == ["0001_slower.json", "0002_slower.json"]
    assert files[0].split("/")[0].startswith("Linux-CPython-3.")
    assert "data" not in json.loads((storage / files[0]).read_text())["benchmarks"][0]["stats"]
    listed = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "pytest-benchmark"), "--storage", f"file://{storage}",
                             "list"], capture_output=True, text=True, cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.count("_slower.json") == 2, listed.stdout + listed.stderr

    from_dir = quantbench("export", str(runs[1]), "--results-db", "off", "-o", str(tmp_path / "c.json"))
    assert from_dir.returncode == 0 and "run real-1" in from_dir.stdout, from_dir.stderr


def test_recommend_excludes_untrusted_timing_and_flags_noise(runs, tmp_path):
    """A throttled case and one whose loop hit its time cap are excluded with their reasons, however
    fast; a noisy choice is flagged in the answer and its evidence (test-made columns, labelled)."""
    from harness.history.recommend import recommend

    rows = [r for r in _rows(runs[1]).values() if r["status"] == "ok"]  # a 100-point budget: every ok row is eligible
    fastest, second, third = sorted(rows, key=lambda r: r["latency_p50_ms"])[:3]
    night = derive_run(runs[1], tmp_path, "untrusted", columns={
        fastest["case_id"]: {"throttled": True, "throttle_reasons": "soft temperature limit"},
        second["case_id"]: {"valid": False},
        third["case_id"]: {"iqr_over_median": 0.25, "valid": True, "throttled": False}},
        label="fastest throttled, second valid=false, third IQR/median 0.25")
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    HistoryDB(url).append_run_dir(night)
    [rec] = recommend(HistoryDB(url).results(target="local"), 100.0)
    assert rec.choice.row["case_id"] == third["case_id"]
    evidence = "\n".join(rec.evidence())
    assert (f"excluded {_named(fastest)}: ran throttled (soft temperature limit): its latency "
            "is not the device's normal speed") in evidence
    assert f"excluded {_named(second)}: timed loop stopped at its time cap" in evidence
    assert "IQR/median 0.250 (noisy: >= 0.1)" in rec.evidence()[0]
    headline = rec.headline()
    assert headline.startswith(f"digits-cnn on local: ship {_named(third).replace('/', ' ', 1)}: "), headline
    speedup = third.get("speedup")
    if speedup:  # the gains read from the row's own comparisons with its fp32
        assert (f"{speedup:.2f}x faster than" if speedup >= 1 else f"{1 / speedup:.2f}x slower than") in headline
    assert "[timing noisy: IQR/median 0.25]" in headline and "2 excluded for untrusted timing" in headline
    runner_up = next(c.row for c in rec.candidates if c.eligible and c is not rec.choice)
    margin = runner_up["latency_p50_ms"] / third["latency_p50_ms"] - 1
    iqr = max(0.25, runner_up["iqr_over_median"] if runner_up["iqr_over_median"] >= 0.10 else 0)
    expected = "a near tie" if margin <= 0.10 else f"within the noise (IQR/median {iqr:.2f})" if margin <= iqr else ""
    # p50s of separate processes (no race here): the runner-up's margin says so
    assert f"({margin:+.0%} p50{', ' + expected if expected else ''}; p50s from separate processes, not raced)" in headline, \
        (headline, margin, iqr)
    # the noise threshold is the gates': at 0.3 the same case is not flagged
    cli = quantbench("recommend", "--target", "local", "--results-db", url, "--noise-threshold", "0.3",
                     "--max-accuracy-drop", "100")
    assert cli.returncode == 0 and "(noisy" not in cli.stdout.splitlines()[1], cli.stdout
