"""The user's limits (issue 22): `quantbench recommend --max-p99-ms ... --max-size-ratio ... --objective ...
--json` on a real run of the digits onnxruntime cases. Every limit is derived from the run's own rows, so
the premises hold on any machine: the fastest eligible case is excluded by one limit, impossible limits
leave no mode and name the closest, --objective size picks the smallest eligible case."""
from __future__ import annotations

import json
import math

import pytest

from harness.history.answer_json import FORMAT
from harness.history.db import HistoryDB
from harness.history.recommend import label
from harness.limits import MB, Limits
from tests.history_support import derive_run, quantbench, run_pytest

MODES = ("fp32", "fp16", "dynamic-int8", "static-int8")
SUITE = """from harness import Suite
from harness.models import digits_cnn

suite = Suite(model=digits_cnn, frameworks=("onnxruntime",), modes={modes!r},
              budgets={{"dynamic-int8": 1.0, "static-int8": 1.0}}, name="digits"{extra})
test_case = suite.pytest_cases()
"""


def write_suite(folder, extra: str = "", name: str = "test_digits_limits.py"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(SUITE.format(modes=MODES, extra=extra))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("limits-run")
    proc = run_pytest([write_suite(base / "suite")], base, "plain", "--qb-results-db=off")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return base / "plain"


def _rows(run_dir) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text())["row"] for p in (run_dir / "cases").glob("*.json")}


def _eligible(rows: dict[str, dict], max_drop: float = 1.0) -> dict[str, dict]:
    """What the candidate rule keeps before the limits, read from the rows themselves: ok, within the accuracy
    budget of fp32 (fp32 always), timing trusted (not throttled, minimums met)."""
    return {cid: r for cid, r in rows.items() if r["status"] == "ok" and r.get("latency_p50_ms") is not None
            and (r["mode"] == "fp32" or (r.get("accuracy_delta") is not None and -100 * r["accuracy_delta"] <= max_drop + 1e-9))
            and r.get("valid") is not False and r.get("throttled") is not True}


def _ratio(r: dict) -> float:
    return 1.0 if r["mode"] == "fp32" else r["size_ratio"]


def _recommend_json(url: str, *flags: str) -> dict:
    proc = quantbench("recommend", "--target", "local", "--results-db", url, "--json", *flags)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _db(run_dir, tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    HistoryDB(url).append_run_dir(run_dir)
    return url


def _excluding_the_fastest(run_dir, tmp_path):
    """(run, p99 limit X, size-ratio limit Y) such that the fastest eligible case breaks exactly one of them
    and another eligible case meets both. From the real rows when they allow it (some other case is smaller,
    or has a lower p99); else from a labelled copy whose fastest case's size was doubled by the test."""
    rows = _rows(run_dir)
    eligible = _eligible(rows)
    fastest = min(eligible.values(), key=lambda r: r["latency_p50_ms"])
    others = [r for r in eligible.values() if r is not fastest]
    assert others, f"the run has one eligible case only: {sorted(eligible)}"
    if any(_ratio(r) < _ratio(fastest) for r in others):
        y = _ratio(fastest) * 0.999
        x = max(r["latency_p99_ms"] for r in others if _ratio(r) <= y)  # keeps every case the size allows
        return run_dir, x, y, fastest, "max_size_ratio"
    if any(r["latency_p99_ms"] < fastest["latency_p99_ms"] for r in others):
        x = fastest["latency_p99_ms"] * 0.999
        y = max(_ratio(r) for r in others if r["latency_p99_ms"] <= x)
        return run_dir, x, y, fastest, "max_p99_ms"
    fp32 = next(r for r in rows.values() if r["mode"] == "fp32")
    doubled = {fastest["case_id"]: {"size_bytes": 2 * fp32["size_bytes"], "size_ratio": 2.0}}
    copy = derive_run(run_dir, tmp_path / "derived", "bigger-fastest", columns=doubled,
                      label=f"{fastest['case_id']}: size set to twice fp32's (it was the smallest and lowest p99)")
    y = 1.5
    x = max(r["latency_p99_ms"] for r in others)
    return copy, x, y, {**fastest, **doubled[fastest["case_id"]]}, "max_size_ratio"


def test_limits_exclude_the_fastest_and_the_choice_meets_every_limit(run, tmp_path):
    run_dir, x, y, fastest, broken = _excluding_the_fastest(run, tmp_path)
    rows = _rows(run_dir)
    meets = {cid: r for cid, r in _eligible(rows).items() if r["latency_p99_ms"] <= x and _ratio(r) <= y}
    expected = min(meets.values(), key=lambda r: r["latency_p50_ms"])
    doc = _recommend_json(_db(run_dir, tmp_path), "--max-p99-ms", repr(x), "--max-size-ratio", repr(y))
    assert doc["format"] == FORMAT == 2 and doc["kind"] == "quantbench.recommendation"
    assert doc["limits"]["max_p99_ms"] == x and doc["limits"]["max_size_ratio"] == y
    [rec] = doc["recommendations"]
    assert rec["limits"] == {**Limits(max_p99_ms=x, max_size_ratio=y).as_dict(resolved=True)}
    choice = rec["choice"]
    assert choice["case_id"] == expected["case_id"] != fastest["case_id"]
    assert (choice["framework"], choice["mode"], choice["recipe"]) == (expected["framework"], expected["mode"], expected["recipe"])
    assert choice["evidence"]["latency_p99_ms"] <= x and (choice["evidence"]["size_ratio"] or 1.0) <= y
    assert choice["evidence"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert set(choice["evidence"]["flags"]) == {"noisy", "throttled", "valid", "rounds_disagree"}
    assert rec["answer"] == f"onnxruntime/{expected['mode']}"
    out = {e["case_id"]: e for e in rec["excluded"]}
    assert broken in out[fastest["case_id"]]["broke"], out[fastest["case_id"]]
    short = "p99" if broken == "max_p99_ms" else "size"
    assert f"{short} " in out[fastest["case_id"]]["reason"] and " > " in out[fastest["case_id"]]["reason"]
    # every case left out for a limit really breaks it, and the others that meet both were eligible runners-up
    for cid, e in out.items():
        if "max_p99_ms" in e["broke"]:
            assert rows[cid]["latency_p99_ms"] > x
        if "max_size_ratio" in e["broke"]:
            assert _ratio(rows[cid]) > y
    if len(meets) > 1:
        assert rec["runner_up"]["case_id"] in meets and rec["runner_up"]["case_id"] != expected["case_id"]


def test_impossible_limits_say_no_mode_meets_and_name_the_closest(run, tmp_path):
    rows = _rows(run)
    eligible = _eligible(rows)
    x = 0.5 * min(r["latency_p99_ms"] for r in rows.values() if r.get("latency_p99_ms") is not None)
    closest = min(eligible.values(), key=lambda r: r["latency_p99_ms"])  # one limit: the smallest relative excess
    url = _db(run, tmp_path)
    doc = _recommend_json(url, "--max-p99-ms", repr(x))
    [rec] = doc["recommendations"]
    assert rec["answer"] == "none" and rec["choice"] is None
    assert rec["no_mode_meets"]["closest"]["case_id"] == closest["case_id"]
    assert all("max_p99_ms" in e["broke"] for e in rec["excluded"] if e["case_id"] in eligible)
    text = quantbench("recommend", "--target", "local", "--results-db", url, "--max-p99-ms", repr(x))
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0].endswith(f"p99 <= {x:.3g} ms: none")
    assert f"no mode meets: within 1 accuracy points, p99 <= {x:.3g} ms; closest: onnxruntime/{closest['mode']}" in text.stdout
    assert f"(p99 {closest['latency_p99_ms']:.3g} ms > {x:.3g} ms)" in text.stdout


def test_impossible_p99_and_size_limits_name_the_closest(run, tmp_path):
    """Issue 22's done-when line: both limits at half the smallest figure any eligible case has, so no case
    meets either; the closest is the one with the smallest sum of relative excesses over the two."""
    rows = _rows(run)
    eligible = _eligible(rows)
    x = 0.5 * min(r["latency_p99_ms"] for r in eligible.values())
    y = 0.5 * min(_ratio(r) for r in eligible.values())
    closest = min(eligible.values(), key=lambda r: (r["latency_p99_ms"] / x - 1 + _ratio(r) / y - 1, r["latency_p50_ms"]))
    url = _db(run, tmp_path)
    [rec] = _recommend_json(url, "--max-p99-ms", repr(x), "--max-size-ratio", repr(y))["recommendations"]
    assert rec["answer"] == "none" and rec["choice"] is None and rec["runner_up"] is None
    assert rec["no_mode_meets"]["limits"] == f"within 1 accuracy points, p99 <= {x:.3g} ms, size <= {y:.2f}x fp32"
    assert rec["no_mode_meets"]["closest"]["case_id"] == closest["case_id"]
    out = {e["case_id"]: e for e in rec["excluded"]}
    assert all(out[cid]["broke"] == ["max_p99_ms", "max_size_ratio"] for cid in eligible)
    slashed = label(closest).replace(" ", "/", 1)  # 'onnxruntime/static-int8 (qdq)', as the evidence names a case
    assert rec["headline"].endswith(f"closest: {slashed} (p99 {closest['latency_p99_ms']:.3g} ms > "
                                    f"{x:.3g} ms; size {_ratio(closest):.2f}x fp32 > {y:.2f}x fp32)"), rec["headline"]


@pytest.mark.parametrize("objective", ["size", "p99"])
def test_the_runner_up_is_compared_in_the_objectives_own_terms(run, tmp_path, objective):
    """Under --objective size or p99 the answer's runner-up is measured in that objective, from the rows'
    own figures ('the choice 0.031 MB smaller', "the choice's p99 1.40x lower"), never by a p50 margin,
    and says where the figures come from (a size is exact: nothing to race; p99s of separate processes)."""
    from harness.history.recommend import recommend
    from harness.race_run import finalists
    from harness.store import load_run

    column = {"size": "size_bytes", "p99": "latency_p99_ms"}[objective]
    ranked = sorted(_eligible(_rows(run)).values(), key=lambda r: (r[column], r["latency_p50_ms"]))
    choice, runner = ranked[0], ranked[1]
    [rec] = _recommend_json(_db(run, tmp_path), "--objective", objective)["recommendations"]
    assert (rec["choice"]["case_id"], rec["runner_up"]["case_id"]) == (choice["case_id"], runner["case_id"])
    if objective == "size":
        less = (runner["size_bytes"] - choice["size_bytes"]) / MB
        margin = f"the choice {less:.3g} MB smaller" if less > 0 else "the same size (the lower p50 ranks them)"
        expected = f"size {runner['size_bytes'] / MB:.3g} MB ({margin}; sizes are exact: no race needed)"
        best = f"size {choice['size_bytes'] / MB:.3g} MB"
    else:
        ratio = runner["latency_p99_ms"] / choice["latency_p99_ms"]
        near = ", a near tie" if ratio - 1 <= 0.10 else ""
        expected = f"p99 {runner['latency_p99_ms']:.4g} ms (the choice's p99 {ratio:.2f}x lower{near}; p99s from separate processes, not raced)"
        best = f"p99 {choice['latency_p99_ms']:.4g} ms"
    headline = rec["headline"]
    assert f"ship {label(choice)}: {best}, " in headline, headline
    assert f"; runner-up {label(runner)}: {expected}" in headline, headline
    assert "p50" not in headline.split("; runner-up ", 1)[1]
    # which cases would race: none for size (exact, nothing to race); for p99, as for p50 (tests/test_race.py),
    # the eligible cases within MARGIN of the lowest p99 (this run itself raced none: --qb-race-cap 0)
    from harness.race import MARGIN, MAX_FINALISTS

    [again] = recommend(load_run(run), Limits(objective=objective))
    near = [r["case_id"] for r in ranked if r[column] <= ranked[0][column] * (1 + MARGIN)][:MAX_FINALISTS]
    assert finalists(again) == ([] if objective == "size" or len(near) < 2 else near)


def test_energy_runner_up_in_mj_and_within_the_readings_spread(run, tmp_path):
    """--objective energy, on a labelled copy of the run whose eligible cases were given energy readings by
    the test (this machine may have no power sensor): the runner-up is so many mJ per inference behind, and a
    near tie when the difference is within the larger spread of either case's per-window readings."""
    eligible = sorted(_eligible(_rows(run)).values(), key=lambda r: r["case_id"])
    energy = {r["case_id"]: {"energy_mj_per_inf": 1.0 + 0.25 * i, "power_source": "test-made",
                             "energy_round_mj": f"{0.99 * (1.0 + 0.25 * i):.6g} {1.01 * (1.0 + 0.25 * i):.6g}"}
              for i, r in enumerate(eligible)}
    wide = {cid: {**e, "energy_round_mj": f"{0.5 * e['energy_mj_per_inf']:.6g} {1.5 * e['energy_mj_per_inf']:.6g}"}
            for cid, e in energy.items()}
    for name, columns, near in (("energy-narrow", energy, ""), ("energy-wide", wide, ", within the energy readings' spread (1.00)")):
        copy = derive_run(run, tmp_path / name, name, columns=columns, label="energy readings made by the test")
        rows = _eligible(_rows(copy))
        choice, runner = sorted(rows.values(), key=lambda r: r["energy_mj_per_inf"])[:2]
        [rec] = _recommend_json(_db(copy, tmp_path / name), "--objective", "energy")["recommendations"]
        assert rec["choice"]["case_id"] == choice["case_id"] and rec["runner_up"]["case_id"] == runner["case_id"]
        less = runner["energy_mj_per_inf"] - choice["energy_mj_per_inf"]
        assert (f"; runner-up {label(runner)}: energy {runner['energy_mj_per_inf']:.3g} mJ/inference (the choice {less:.3g} "
                f"mJ less per inference{near}; energy from separate windows, not raced)") in rec["headline"], rec["headline"]


def test_json_evidence_carries_the_baseline_columns(run, tmp_path):
    """Format 2: each case's evidence has the baseline_* columns the candidate rule reads to trust the fp32
    side of its speedup, as the row has them (null where the row has none)."""
    rows = _rows(run)
    [rec] = _recommend_json(_db(run, tmp_path), "--objective", "size")["recommendations"]
    cases = [c for c in (rec["choice"], rec["runner_up"]) if c]
    assert any(rows[c["case_id"]]["mode"] != "fp32" for c in cases)
    for c in cases:
        row = rows[c["case_id"]]
        for name in ("baseline_case", "baseline_recipe", "baseline_throttled", "baseline_valid", "baseline_timing_note"):
            assert c["evidence"][name] == (row.get(name) if row.get(name) != "" else None), (name, c, row.get(name))
        if row["mode"] != "fp32":
            fp32 = next(r for r in rows.values() if r["mode"] == "fp32")
            assert c["evidence"]["baseline_case"] == fp32["case_id"] and c["evidence"]["baseline_valid"] is not None


def test_objective_size_picks_the_smallest_eligible(run, tmp_path):
    eligible = _eligible(_rows(run))
    smallest = min(eligible.values(), key=lambda r: (r["size_bytes"], r["latency_p50_ms"]))
    doc = _recommend_json(_db(run, tmp_path), "--objective", "size")
    [rec] = doc["recommendations"]
    assert rec["objective"] == "size" and rec["choice"]["case_id"] == smallest["case_id"]
    assert rec["choice"]["evidence"]["size_bytes"] == min(r["size_bytes"] for r in eligible.values())


def test_an_energy_limit_excludes_rows_without_an_energy_reading(run, tmp_path):
    """Whatever this machine measures: a row with an energy reading is judged by it (a limit far above any
    reading lets it through), a row without one is out with "no energy reading", never silently in."""
    eligible = _eligible(_rows(run))
    doc = _recommend_json(_db(run, tmp_path), "--max-energy-mj", "1e9")
    [rec] = doc["recommendations"]
    out = {e["case_id"]: e for e in rec["excluded"]}
    for cid, r in eligible.items():
        if r.get("energy_mj_per_inf") is None or math.isnan(r["energy_mj_per_inf"]):
            assert out[cid]["broke"] == ["max_energy_mj"] and out[cid]["reason"].startswith("over the limits: no energy reading")
        else:
            assert cid not in out
    read = [r for r in eligible.values() if r.get("energy_mj_per_inf") is not None and not math.isnan(r["energy_mj_per_inf"])]
    assert (rec["choice"] is None) == (not read)


def test_bad_limits_are_refused_naming_the_flag(tmp_path):
    proc = quantbench("recommend", "--results-db", f"sqlite:///{tmp_path / 'h.sqlite'}", "--max-p99-ms", "-1")
    assert proc.returncode == 2 and "--max-p99-ms must be a non-negative number" in proc.stderr


def test_limits_override_field_by_field():
    suite = Limits(max_p99_ms=3.0, max_size_ratio=0.5, objective="size")
    flags = Limits(max_p99_ms=2.0, max_accuracy_drop=0.5)
    applied = suite.override(flags)
    assert applied == Limits(max_accuracy_drop=0.5, max_p99_ms=2.0, max_size_ratio=0.5, objective="size")
    assert Limits.from_dict(applied.as_dict()) == applied
    assert Limits().as_dict(resolved=True)["max_accuracy_drop"] == 1.0 and Limits().goal == "p50"
    assert Limits(objective="latency").validate() and Limits(max_energy_mj=float("nan")).validate()
    row = {"mode": "static-int8", "latency_p99_ms": 4.1, "size_bytes": 3 * 2 ** 20, "size_ratio": 0.3, "peak_rss_mb": None}
    assert [t for _, _, t in Limits(max_p99_ms=3.0).broken(row)] == ["p99 4.1 ms > 3 ms"]
    assert [t for _, _, t in Limits(max_size_mb=2.0).broken(row)] == ["size 3 MB > 2 MB"]
    assert Limits(max_memory_mb=100.0).broken(row)[0][2].startswith("no peak memory reading")


# -- Suite(limits=...): the suite's defaults, recorded in run.json, applied at the end of the run and by
# `quantbench recommend` / `report --json`, and overridden by flags ------------------------------------------
DECLARED = 'limits=Limits(objective="size", max_p99_ms=1e6, max_memory_mb=1e6)'
OVERRIDE_P99 = 1e5  # --qb-max-p99-ms: tighter than the suite's, still far above any p99 of a digits case


@pytest.fixture(scope="module")
def declared_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("limits-declared")
    suite = write_suite(base / "suite", extra=", " + DECLARED, name="test_digits_declared.py")
    suite.write_text(suite.read_text().replace("from harness import Suite", "from harness import Limits, Suite"))
    proc = run_pytest([suite], base, "declared", "--qb-results-db=off", f"--qb-max-p99-ms={OVERRIDE_P99!r}")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return base / "declared", proc.stdout


def test_suite_limits_are_recorded_in_run_json_and_applied_at_the_end_of_the_run(declared_run):
    run_dir, output = declared_run
    record = json.loads((run_dir / "run.json").read_text())["limits"]
    assert record["declared"] == {"digits": Limits(objective="size", max_p99_ms=1e6, max_memory_mb=1e6).as_dict()}
    assert record["flags"] == Limits(max_p99_ms=OVERRIDE_P99).as_dict()
    assert record["applied"] == {"digits": Limits(objective="size", max_p99_ms=OVERRIDE_P99, max_memory_mb=1e6)
                                 .as_dict(resolved=True)}
    eligible = _eligible(_rows(run_dir))
    smallest = min(eligible.values(), key=lambda r: (r["size_bytes"], r["latency_p50_ms"]))
    title = f"which mode to ship (smallest within 1 accuracy points of its fp32, p99 <= {OVERRIDE_P99:.3g} ms"
    assert title in output, output[-3000:]
    answer = output.split(title, 1)[1]
    assert f"ship onnxruntime {smallest['mode']}" in answer.splitlines()[1], answer[:600]


def test_flags_override_the_suite_limits_in_recommend_and_report(declared_run, tmp_path):
    run_dir, _ = declared_run
    eligible = _eligible(_rows(run_dir))
    smallest = min(eligible.values(), key=lambda r: (r["size_bytes"], r["latency_p50_ms"]))
    fastest = min(eligible.values(), key=lambda r: r["latency_p50_ms"])
    url = _db(run_dir, tmp_path)
    # the suite's objective (size) read back from the run in the database; the run's own flags are not
    # carried over into `recommend`, which takes its own
    [rec] = _recommend_json(url)["recommendations"]
    assert rec["objective"] == "size" and rec["choice"]["case_id"] == smallest["case_id"]
    assert rec["limits"]["max_p99_ms"] == 1e6 and rec["limits"]["max_memory_mb"] == 1e6
    [rec] = _recommend_json(url, "--objective", "p50", "--max-memory-mb", "5e5")["recommendations"]
    assert rec["objective"] == "p50" and rec["choice"]["case_id"] == fastest["case_id"]
    assert rec["limits"]["max_memory_mb"] == 5e5 and rec["limits"]["max_p99_ms"] == 1e6
    # report --json on the run directory: the run's own limits (suite's, under its recorded flags), then ours
    proc = quantbench("report", str(run_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    [rec] = json.loads(proc.stdout)["recommendations"]
    assert rec["choice"]["case_id"] == smallest["case_id"] and rec["limits"]["max_p99_ms"] == OVERRIDE_P99
    proc = quantbench("report", str(run_dir), "--json", "--objective", "p50")
    [rec] = json.loads(proc.stdout)["recommendations"]
    assert rec["choice"]["case_id"] == fastest["case_id"] and rec["limits"]["objective"] == "p50"


def test_finish_run_takes_limits_over_the_recorded_ones(declared_run):
    from harness.finish import FinishOptions, finish_run
    from harness.store import Run

    run_dir, _ = declared_run
    eligible = _eligible(_rows(run_dir))
    fastest = min(eligible.values(), key=lambda r: r["latency_p50_ms"])
    summary = finish_run(Run(run_dir), FinishOptions(results_dir=run_dir.parent, results_db="off", dashboard="off",
                                                     limits=Limits(objective="p50")))
    assert "which mode to ship (fastest within 1 accuracy points of its fp32, p99 <= 1e+05 ms, peak memory <= 1e+06 MB)" \
        in summary.text()
    [line] = summary.answer
    assert f"ship onnxruntime {fastest['mode']}" in line


def test_a_bad_suite_limit_is_refused_at_collection():
    from harness import Suite, SuiteError
    from harness.models import digits_cnn

    with pytest.raises(SuiteError, match="suite field `limits`: objective 'speed' is not one of p50, p99, size, energy"):
        Suite(model=digits_cnn, limits=Limits(objective="speed"))


def test_the_dashboard_applies_the_suite_limits_as_recommend_does(declared_run, tmp_path):
    from harness.history.dashboard import build

    run_dir, _ = declared_run
    eligible = _eligible(_rows(run_dir))
    smallest = min(eligible.values(), key=lambda r: (r["size_bytes"], r["latency_p50_ms"]))
    url = _db(run_dir, tmp_path)
    build(HistoryDB(url), tmp_path / "site")
    page = (tmp_path / "site" / "target-local.html").read_text()
    assert f'data-recommended="onnxruntime/{smallest["mode"]}"' in page
    assert "p99 &lt;= 1e+06 ms, peak memory &lt;= 1e+06 MB, minimising size" in page
