"""A fleet in one command, with real sshd "devices" on loopback and real pytest-xdist workers:
a pool of three boards shared by three workers, a case on every named target, a board killed
mid-run, one build per artifact however many workers ask for it."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pytest

from harness import settings
from harness.testing.sshd import inventory_toml, make_sshd
from tests.conftest import FAST_TIMING
from tests.onnx_models import digits_flat, logistic_regression, write_npz

CACHE = settings.cache_dir()
BOARDS = ("dev-a", "dev-b", "dev-c")
MODES = ("fp32", "dynamic-int8", "static-int8")
LOGREG = 'onnx_model("logreg", HERE / "logreg.onnx", data=HERE / "data.npz")'
SUITE = """
from pathlib import Path

from harness import Suite
from harness.models import digits_cnn, onnx_model

HERE = Path(__file__).parent
suite = Suite(name="shelf", model={model}, frameworks=("onnxruntime",), modes={modes!r}, batch_sizes={batches!r})
test_shelf = suite.pytest_cases()
"""


@pytest.fixture
def shelf(tmp_path):
    """Three sshd 'devices' (each its own server, keys and work directory), an inventory with
    them as targets and as the pool `shelf`, and a suite on a small real ONNX model."""
    devices = {}
    try:
        for name in BOARDS:
            devices[name] = make_sshd(tmp_path / f"sshd-{name}")
        targets = {name: sshd.target(python=sys.executable, workdir=str(tmp_path / f"work-{name}"), threads=1)
                   for name, sshd in devices.items()}
        (tmp_path / "targets.toml").write_text(inventory_toml(targets) + f"[pools.shelf]\ntargets = {list(BOARDS)!r}\n".replace("'", '"'))
        x_train, y_train, x_calib, x_eval, y_eval = digits_flat()
        logistic_regression(tmp_path / "logreg.onnx")
        write_npz(tmp_path / "data.npz", x_eval, y_eval, x_calib)
        yield tmp_path, devices
    finally:
        for sshd in devices.values():
            sshd.stop()


def write_suite(where: Path, modes=MODES, batches=(1,), model=LOGREG) -> Path:
    path = where / "test_shelf.py"
    path.write_text(SUITE.format(model=model, modes=tuple(modes), batches=tuple(batches)))
    return path


def pytest_command(where: Path, run_id: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", str(where / "test_shelf.py"), "-p", "harness.pytest_plugin", "-p", "no:cacheprovider",
            "-q", f"--rootdir={where}", f"--qb-inventory={where / 'targets.toml'}", f"--qb-results-dir={where / 'results'}",
            f"--qb-run-id={run_id}", *FAST_TIMING, *extra]


def run(where: Path, run_id: str, *extra: str, env=None, timeout=600) -> tuple[int, str]:
    proc = subprocess.run(pytest_command(where, run_id, *extra), cwd=where, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout + proc.stderr


def rows(where: Path, run_id: str) -> dict:
    from harness.store import load_run

    return {r["case_id"]: r for r in load_run(where / "results" / run_id).to_dict("records")}


def leases(where: Path, run_id: str) -> dict[str, list[tuple[float, float, str]]]:
    """board -> [(from, to, case)] from run.log's lease lines."""
    found = defaultdict(list)
    for case, board, start, end in re.findall(r"^\[(\S+)\] lease (\S+) ([\d.]+)-([\d.]+)",
                                              (where / "results" / run_id / "run.log").read_text(), re.M):
        found[board].append((float(start), float(end), case))
    return found


def assert_one_case_per_board_at_a_time(held: dict) -> None:
    for board, spans in held.items():
        spans = sorted(spans)
        for (_, end, case), (start, _, other) in zip(spans, spans[1:]):
            assert start >= end, f"{board} ran {other} while it still held {case}"


def test_a_pool_of_three_boards_with_three_workers(shelf):
    """With rounds: each case's rounds and its fp32 baseline's rounds run on the case's board."""
    where, _ = shelf
    write_suite(where)
    code, output = run(where, "pool", "--target=pool:shelf", "-n", "3", "--qb-rounds", "2")
    assert code == 0, output
    found = rows(where, "pool")
    expected = {f"logreg-onnxruntime-{m}{'-dyn' if m == 'dynamic-int8' else '-qdq' if m == 'static-int8' else ''}-b1"
                for m in MODES}
    assert set(found) == expected  # every case exactly once (one row per case id)
    for row in found.values():
        assert row["status"] == "ok", row["reason"]
        assert row["target"] == "shelf" and row["pool"] == "shelf" and row["board"] in BOARDS
        assert row["worker"] in ("gw0", "gw1", "gw2")
    held = leases(where, "pool")
    assert set(held) <= set(BOARDS) and len(held) >= 2  # the work was shared
    assert_one_case_per_board_at_a_time(held)
    windows = {(r["board"], r["held_from"], r["held_until"]) for r in found.values()}  # an fp32 row may share its case's
    assert all(f < u for _, f, u in windows)  # every row's hold (UTC ISO stamps sort as times)
    assert_one_case_per_board_at_a_time({b: [(f, u, "") for bb, f, u in windows if bb == b] for b in BOARDS})
    run_dir = where / "results" / "pool"
    for row in found.values():
        if row["mode"] == "fp32":
            continue
        # compared with the fp32 measured on its own board, in rounds beside it there
        assert row["baseline_case"] == "logreg-onnxruntime-fp32-b1"
        assert (run_dir / "fleet" / "baselines" / row["board"] / "logreg-onnxruntime-fp32-b1.json").is_file()
        assert row["speedup_ci_low"] <= row["speedup"] <= row["speedup_ci_high"]
        for board in BOARDS:
            rounds = sorted(p.name for p in (run_dir / "work" / board / row["case_id"]).glob("baseline-round-*"))
            assert rounds == (["baseline-round-0", "baseline-round-1"] if board == row["board"] else []), (board, rounds)
    # one summary, by the controller; one history run with every row
    assert output.count("quantbench: run pool on pool:shelf") == 1, output
    from harness.history.db import HistoryDB

    db = HistoryDB.open(None, where / "results")
    runs = db.runs()
    assert list(runs["run_id"]) == ["pool"]
    assert len(db.results(run_id="pool")) == len(expected)
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["finished_at"] and manifest["placements"][0]["boards"] == list(BOARDS)
    # every board a worker opened (one may have measured only an fp32 baseline whose row another won)
    assert {r["board"] for r in found.values()} <= set(manifest["targets"]) <= set(BOARDS)


def test_every_case_runs_on_every_named_target_and_each_artifact_is_built_once(shelf, tmp_path):
    """Two workers, a case on each of two targets at a time, nothing in the artifact cache: the
    fp32 export of digits-cnn (seconds) is asked for by both at once, and built once."""
    where, _ = shelf
    modes = ("fp32", "dynamic-int8")
    write_suite(where, modes, model="digits_cnn")
    cache = tmp_path / "fresh-cache"
    trained = sorted((CACHE / "models").glob("digits-cnn-*.pt"))  # the trained weights, if any: no need to train again
    (cache / "models").mkdir(parents=True)
    for path in trained:
        shutil.copy(path, cache / "models" / path.name)
    code, output = run(where, "both", "--target=dev-a,dev-b", "-n", "2", env={"QUANTBENCH_CACHE": str(cache)})
    assert code == 0, output
    found = rows(where, "both")
    assert len(found) == 2 * len(modes)
    for board in ("dev-a", "dev-b"):
        mine = [r for r in found.values() if r["target"] == board]
        assert sorted(r["mode"] for r in mine) == sorted(modes)
        assert all(r["case_id"].endswith(f"@{board}") and r["board"] == board and r["status"] == "ok" for r in mine)
        assert all(pd.isna(r["pool"]) for r in mine)  # named targets, no pool
    log = (where / "results" / "both" / "run.log").read_text()
    builds = Counter(re.findall(r"artifact \S+/artifacts/(\w+) \(built\)", log))
    waits = Counter(re.findall(r"artifact \S+/artifacts/(\w+) \(waiting for another process's build", log))
    assert waits, "the premise: a worker asked for an artifact while the other was building it"
    assert len(builds) == len(modes) and set(builds.values()) == {1}, builds  # one build per artifact
    assert set(waits) <= set(builds)
    assert sorted(p.name for p in (cache / "artifacts").iterdir()) == sorted(builds)
    assert_one_case_per_board_at_a_time(leases(where, "both"))
    assert re.search(r"^digits-cnn on the fleet \(dev-a, dev-b\): ship onnxruntime/", output, re.M), output[-3000:]


def running_on(workdir: Path) -> bool:
    return any(p.read_text().strip() for p in workdir.glob("jobs/*/pid") if p.is_file())


def test_a_board_killed_mid_run_loses_one_case_and_the_pool_finishes_without_it(shelf):
    where, devices = shelf
    write_suite(where, batches=(1, 2, 4))
    victim = "dev-b"
    command = pytest_command(where, "kill", "--target=pool:shelf", "-n", "3", "--min-duration", "1.0", "--max-duration", "3")
    proc = subprocess.Popen(command, cwd=where, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not running_on(where / f"work-{victim}"):  # a runner is measuring on the victim
            assert proc.poll() is None and time.monotonic() < deadline, "no case ever ran on the victim"
            time.sleep(0.05)
        devices[victim].kill()
        output, _ = proc.communicate(timeout=300)  # no hang
    finally:
        if proc.poll() is None:
            proc.kill()
    found = rows(where, "kill")
    assert len(found) == len(MODES) * 3, output  # every case has its row
    errors = [r for r in found.values() if r["status"] != "ok"]
    assert len(errors) == 1, [(r["case_id"], r["reason"]) for r in errors]
    assert errors[0]["board"] == victim and "lost the connection" in errors[0]["reason"], errors[0]["reason"]
    assert proc.returncode == 1  # the lost case fails its test; every other passed
    gone = (where / "results" / "kill" / "fleet" / "gone" / f"{victim}.txt").read_text()
    assert "stopped answering" in gone
    held = leases(where, "kill")
    lost_at = max(end for _, end, case in held[victim] if case == errors[0]["case_id"])
    assert all(end <= lost_at for _, end, _ in held[victim])  # nothing ran on the victim afterwards
    assert_one_case_per_board_at_a_time(held)


def test_a_named_target_that_dies_fails_its_remaining_cases_fast(shelf):
    """--target=dev-a,dev-b in one process: dev-a dies during a case; that case is an error,
    dev-a's later cases fail at once with the reason (one quick connect each), dev-b's all run."""
    import threading

    from harness import Suite
    from harness.models import onnx_model
    from harness.session import BenchSession, SessionOptions
    from targets.fleet import parse_placements
    from targets.inventory import load_fleet

    where, devices = shelf
    placements = parse_placements("dev-a,dev-b", load_fleet(str(where / "targets.toml")))
    suite = Suite(name="shelf", model=onnx_model("logreg", where / "logreg.onnx", data=where / "data.npz"),
                  frameworks=("onnxruntime",), modes=MODES)
    from dataclasses import replace

    todo = [replace(c, target=p.name) for p in placements for c in suite.cases()]
    bench = BenchSession(placements, SessionOptions(results_dir=where / "results", cache_dir=CACHE, run_id="named",
                                                    min_runs=20, min_duration_s=2.0, max_duration_s=4.0, warmup_runs=2))
    rows_, timings = {}, {}

    def work():
        for case in todo:
            started = time.monotonic()
            rows_[case.case_id] = bench.run_case(case)
            timings[case.case_id] = time.monotonic() - started

    thread = threading.Thread(target=work, daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 120
        while not (todo[0].case_id in rows_ and running_on(where / "work-dev-a")):  # dev-a's 2nd case measures
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)
        devices["dev-a"].kill()
        thread.join(120)
        assert not thread.is_alive(), "the run hung"
    finally:
        bench.close()
    a = [rows_[c.case_id] for c in todo if c.target == "dev-a"]
    assert a[0]["status"] == "ok"
    assert a[1]["status"] == "error" and "lost the connection" in a[1]["reason"]
    assert a[2]["status"] == "error" and "target dev-a: the device stopped answering" in a[2]["reason"], a[2]["reason"]
    assert a[2]["reason"].endswith("(not run)")
    assert timings[todo[2].case_id] < 2.0  # failed fast: one quick connect, refused
    assert all(rows_[c.case_id]["status"] == "ok" for c in todo if c.target == "dev-b")


def test_targets_lists_pools_and_checks_every_board(shelf):
    where, devices = shelf
    cli = [sys.executable, "-m", "harness.cli", "targets"]
    inventory = ["--inventory", str(where / "targets.toml")]
    listed = subprocess.run(cli + inventory, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^pool:shelf\s+dev-a, dev-b, dev-c\s+ssh/generic-linux", listed.stdout, re.M), listed.stdout
    devices["dev-c"].kill()
    check = subprocess.run(cli + ["check", "pool:shelf"] + inventory, capture_output=True, text=True, timeout=120)
    assert check.returncode == 1, check.stdout + check.stderr  # not every board is usable
    assert re.search(r"^dev-a: usable$", check.stdout, re.M) and re.search(r"^dev-b: usable$", check.stdout, re.M)
    assert re.search(r"^dev-c: NOT usable: target dev-c: .*Is the device on", check.stdout, re.M), check.stdout
    assert "pool shelf: 2 of 3 board(s) usable (dev-a, dev-b)" in check.stdout
    assert check.stdout.count("  runtimes ") == 2  # the facts of each usable board
    wrong = subprocess.run(cli + ["check", "pool:dev-a"] + inventory, capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "unknown pool 'dev-a'" in wrong.stderr
