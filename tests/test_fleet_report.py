"""The report across devices: the comparison table and `quantbench report` with a column group
per device, `quantbench recommend` per device and for the fleet, the dashboard's device-by-mode
heatmap. The fleet runs are test-made from one real run of the digits onnxruntime suite: its
rows copied to three devices (the pool `pi5` and the targets `jetson`, `gpu`) with the raw
latencies scaled per device and mode, and labelled as derived, so which answer is right is
known by construction."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from harness import report
from harness.history.db import HistoryDB
from harness.stats import latency_stats
from harness.store import RunStore, load_run
from tests.history_support import chromium_available, chromium_dom, quantbench, real_runs

DEVICES = {"pi5": "pi5", "jetson": None, "gpu": None}  # target -> pool


def fleet_run(real: Path, out_root: Path, run_id: str, shape: dict[str, dict[str, float]], speed: dict[str, float] = {}) -> Path:
    """The real run's rows on each device: every latency x speed[device] (default 1), and each
    mode in shape[device] scaled to p50 = ratio x the fastest p50 among the device's other modes."""
    manifest = json.loads((real / "run.json").read_text())
    how = f"test-made: rows of run {manifest['run_id']} copied to {', '.join(DEVICES)}; p50 shape {shape}, speed {speed}"
    manifest.update(run_id=run_id, derived_from=manifest["run_id"], derivation=how, target={"name": "pool:pi5,jetson,gpu"})
    store = RunStore(out_root, run_id)
    store.write_run(manifest)
    records = [json.loads(p.read_text()) for p in sorted((real / "cases").glob("*.json"))]
    for device, pool in DEVICES.items():
        rows, shaped = {}, shape.get(device, {})
        for record in records:
            row, lat = dict(record["row"]), np.asarray(record["latencies_ms"], dtype=np.float64) * speed.get(device, 1.0)
            row.update(run_id=run_id, case_id=f"{row['case_id']}@{device}", target=device, pool=pool,
                       board=f"{device}-a" if pool else device)
            rows[row["mode"]] = (row, lat)
        reference = min(np.median(lat) for mode, (row, lat) in rows.items() if row["status"] == "ok" and mode not in shaped)
        for mode, (row, lat) in rows.items():
            if row["status"] != "ok":
                continue
            if mode in shaped:
                lat *= shaped[mode] * reference / np.median(lat)
            row.update(latency_stats(lat, int(row["batch_size"])))
            row["reason"] = how
        fp32 = rows["fp32"][0]
        for mode, (row, lat) in rows.items():
            if mode != "fp32":
                report.compare_to_baseline(row, fp32)
            store.write_case(row, lat.tolist())
    store.rebuild()
    return store.dir


@pytest.fixture(scope="module")
def modes(real):
    """Two modes within 1 accuracy point of fp32 in the real run (which, depends on the machine)."""
    rows = [json.loads(p.read_text())["row"] for p in sorted((real / "cases").glob("*.json"))]
    good = [r["mode"] for r in rows if r["status"] == "ok" and r["mode"] != "fp32" and -100 * r["accuracy_delta"] <= 1.0]
    assert len(good) >= 2, rows
    return good[0], good[1]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return real_runs(tmp_path_factory)[0]  # the history tests' real runs (made once per session)


def test_the_table_has_a_column_group_per_device(real, modes, tmp_path):
    a, b = modes  # a is the fastest mode on the pool and the gpu, b on the jetson; the gpu is the fastest device
    run = fleet_run(real, tmp_path, "fleet", {"pi5": {a: 0.5}, "jetson": {b: 0.5}, "gpu": {a: 0.5}}, {"gpu": 0.2})
    ok = load_run(run)
    text = report.comparison_table(ok)
    header = text.splitlines()[0]
    assert re.search(r"gpu\s.*jetson\s.*pi5 \(pool\)", header), header
    assert text.splitlines()[1].split()[-9:] == ["p50_ms", "speedup", "accuracy"] * 3
    line = {mode: next(t for t in text.splitlines() if f" {mode} " in t).split()[-9:] for mode in ("fp32", a, b)}
    # columns: gpu 0-2, jetson 3-5, pi5 6-8; * the fastest device of a line, + each device's fastest mode
    assert all(line[mode][0].rstrip("+").endswith("*") for mode in line)
    assert line[a][0].endswith("*+") and line[a][6].endswith("+") and not line[a][3].endswith("+")
    assert line[b][3].endswith("+") and not line[b][6].endswith("+")
    rows = {(r["target"], r["mode"]): r for r in ok.to_dict("records")}
    for i, device in enumerate(("gpu", "jetson", "pi5")):  # the row's own speedup, against that device's fp32
        assert line[a][3 * i + 1] == f"{rows[(device, a)]['speedup']:.2f}x"
    assert "digits-cnn-onnxruntime-bf16-b1@gpu: n/a: onnxruntime" in text  # reasons are not lost
    cli = quantbench("report", str(run))
    assert cli.returncode == 0 and "pi5 (pool)" in cli.stdout


def test_recommend_per_device_and_for_the_fleet(real, modes, tmp_path):
    a, b = modes
    db_path = tmp_path / "h.sqlite"
    db = HistoryDB(f"sqlite:///{db_path}")
    # a trade-off: a is fastest on pi5 and gpu (b 3x slower there), b on the jetson (a 1.2x slower there)
    db.append_run_dir(fleet_run(real, tmp_path, "tradeoff", {"pi5": {a: 0.5, b: 1.5}, "gpu": {a: 0.5, b: 1.5},
                                                             "jetson": {b: 0.5, a: 0.6}}))
    out = quantbench("recommend", "--results-db", str(db_path))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for device, mode in (("pi5", a), ("jetson", b), ("gpu", a)):
        assert f"digits-cnn (batch 1) on {device}, budget 1 accuracy points: onnxruntime/{mode}" in text
    fleet = text[text.index("on the fleet"):]
    assert fleet.startswith(f"on the fleet (gpu, jetson, pi5), budget 1 accuracy points: onnxruntime/{a} (best trade-off)")
    assert re.search(rf"jetson: p50 .*; 1.20x its own fastest, onnxruntime/{b} ", fleet), fleet
    assert re.search(r"pi5: p50 [\d.]+ ms, [\d.]+x vs fp32; its own fastest", fleet)
    db.append_run_dir(fleet_run(real, tmp_path, "everywhere", {d: {a: 0.5} for d in DEVICES}))  # fastest everywhere
    text = quantbench("recommend", "--results-db", str(db_path)).stdout
    assert f"accuracy points: onnxruntime/{a} (fastest on every device)" in text
    # one target only: no fleet block; an unknown one: exit 2 naming the known ones
    one = quantbench("recommend", "--target", "pool:pi5", "--results-db", str(db_path))
    assert one.returncode == 0 and "on pi5" in one.stdout and "on the fleet" not in one.stdout
    unknown = quantbench("recommend", "--target", "pi5,nowhere", "--results-db", str(db_path))
    assert unknown.returncode == 2 and "no results for target 'nowhere'" in unknown.stderr and "jetson" in unknown.stderr
    assert list(db.runs(target="jetson")["run_id"]) == ["everywhere", "tradeoff"]  # a fleet run is a run of each target


def test_no_mode_within_budget_on_every_device(real, modes, tmp_path):
    from harness.fleet.recommend import recommend_fleet
    from harness.history.recommend import recommend

    db = HistoryDB(f"sqlite:///{tmp_path / 'h.sqlite'}")
    db.append_run_dir(fleet_run(real, tmp_path, "strict", {}))
    rows = db.results()
    rows = rows[rows["mode"] != "fp32"].copy()  # leave the baseline itself out of the candidates
    rows.loc[rows["target"] == "jetson", "accuracy_delta"] = -0.05  # the jetson loses 5 points in every mode
    (fleet,) = recommend_fleet(recommend(rows, 1.0))
    assert fleet.choice is None and fleet.answer == "none" and fleet.kind == "none"
    assert fleet.evidence()[0].startswith("no (framework, mode) of digits-cnn is within 1 accuracy points of fp32 on every device")
    assert any(line.endswith("not eligible on jetson") for line in fleet.evidence())


def test_the_dashboard_has_a_device_by_mode_heatmap(real, modes, tmp_path):
    chromium_available()
    db_path = tmp_path / "h.sqlite"
    HistoryDB(f"sqlite:///{db_path}").append_run_dir(
        fleet_run(real, tmp_path, "fleet", {"pi5": {modes[0]: 0.5}, "jetson": {modes[1]: 0.5, modes[0]: 0.6},
                                            "gpu": {modes[0]: 0.5, modes[1]: 1.5}}, {"gpu": 0.5}))
    out = quantbench("dashboard", "--results-db", str(db_path), "--out", str(tmp_path / "site"))
    assert out.returncode == 0, out.stderr
    dom = chromium_dom((tmp_path / "site" / "index.html").as_uri(), tmp_path / "profile")
    cells = {(d, m): (float(s) if s else None, float(x) if x else None, colour)
             for colour, d, m, s, x in re.findall(r'<td class="heat" style="background:(#\w+)" data-device="([^"]+)" '
                                                  r'data-mode="([^"]+)" data-speedup="([^"]*)" data-delta="([^"]*)"', dom)}
    rows = {(r["target"], f"{r['framework']}/{r['mode']}"): r for r in load_run(tmp_path / "fleet").to_dict("records")}
    assert {d for d, _ in cells} == set(DEVICES)
    for (device, mode), (speedup, delta, _) in cells.items():
        row = rows[(device, mode)]
        if mode.endswith("/fp32"):
            assert speedup == 1.0 and delta == 0.0
        else:
            assert speedup == pytest.approx(row["speedup"], abs=1e-4)
            assert delta == pytest.approx(100 * row["accuracy_delta"], abs=1e-4)
    # colour follows the speedup: the fastest cell is the greenest (least red)
    green = lambda colour: int(colour[3:5], 16) - int(colour[1:3], 16)  # noqa: E731
    ranked = sorted(cells.values(), key=lambda c: c[0] or 0)
    assert green(ranked[-1][2]) > green(ranked[len(ranked) // 2][2]) > green(ranked[0][2])
    assert re.search(rf'data-fleet-model="digits-cnn" data-recommended="onnxruntime/{modes[0]}"', dom)
    for device in DEVICES:
        assert (tmp_path / "site" / f"target-{device}.html").is_file()
    assert "pool of pi5-a" in (tmp_path / "site" / "target-pi5.html").read_text()


def test_the_fleet_ranks_by_the_objective(real, tmp_path):
    """--objective size: the fleet's answer is the smallest mode eligible on every device, through the same
    candidate rule and limits as each device's answer, even where another mode is fastest on every device
    (made so: its latencies scaled to half the others' fastest); by p50 that other mode is the answer."""
    rows = [json.loads(p.read_text())["row"] for p in sorted((real / "cases").glob("*.json"))]
    eligible = [r for r in rows if r["status"] == "ok" and (r["mode"] == "fp32" or -100 * r["accuracy_delta"] <= 1.0)]
    smallest = min(eligible, key=lambda r: (r["size_bytes"], r["latency_p50_ms"]))
    fast = max((r for r in eligible if r["size_bytes"] > smallest["size_bytes"]), key=lambda r: r["size_bytes"])
    db_path = tmp_path / "h.sqlite"
    HistoryDB(f"sqlite:///{db_path}").append_run_dir(fleet_run(real, tmp_path, "sized", {d: {fast["mode"]: 0.5} for d in DEVICES}))
    by_size = quantbench("recommend", "--results-db", str(db_path), "--objective", "size")
    assert by_size.returncode == 0, by_size.stderr
    fleet = by_size.stdout[by_size.stdout.index("on the fleet"):]
    assert fleet.startswith(f"on the fleet (gpu, jetson, pi5), budget 1 accuracy points, minimising size: "
                            f"onnxruntime/{smallest['mode']} (smallest on every device)"), fleet
    for device in DEVICES:
        assert f"{device}: size {smallest['size_bytes'] / 2 ** 20:.3g} MB, p50 " in fleet and "; its own smallest" in fleet
    by_p50 = quantbench("recommend", "--results-db", str(db_path))
    assert f"accuracy points: onnxruntime/{fast['mode']} (fastest on every device)" in by_p50.stdout, by_p50.stdout
    doc = json.loads(quantbench("recommend", "--results-db", str(db_path), "--objective", "size", "--json").stdout)
    [entry] = doc["fleet"]
    assert (entry["answer"], entry["kind"]) == (f"onnxruntime/{smallest['mode']}", "smallest on every device")
