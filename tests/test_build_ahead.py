"""Build ahead (harness/build_ahead.py): a single-target run builds every artifact before it
times the first case, two builds at a time, each artifact once; the second builder alone
builds what no one claimed, from the end of the list."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FAST_TIMING, SuiteRun

SUITE = """
from harness import Suite
from harness.models import digits_cnn

suite = Suite(model=digits_cnn, frameworks=("onnxruntime",), modes=("fp32", "fp16", "dynamic-int8", "static-int8", "mixed"))
test_case = suite.pytest_cases()
"""


@pytest.fixture
def cold(tmp_path):
    """A suite file and an empty artifact cache whose trained fp32 weights are the shared cache's
    (the digits CNN is trained once per test session)."""
    from harness import settings

    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "test_ahead.py").write_text(SUITE)
    shared_models = settings.cache_dir() / "models"
    shared_models.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "models").symlink_to(shared_models)
    return tmp_path


def run(work: Path, run_id: str, *extra: str) -> SuiteRun:
    cmd = [sys.executable, "-m", "pytest", str(work / "suites"), "-p", "harness.pytest_plugin", "-p", "no:cacheprovider",
           "-q", f"--qb-results-dir={work / 'results'}", f"--qb-cache-dir={work / 'cache'}", f"--qb-run-id={run_id}",
           f"--rootdir={work}", *FAST_TIMING, *extra]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    return SuiteRun(proc.returncode, proc.stdout + proc.stderr, work / "results" / run_id)


def artifact_lines(log: str) -> list[tuple[str, str, str, bool]]:
    """(case id, artifact dir, built/cached, ahead) for every artifact line of a run's log."""
    found = re.findall(r"\[([^\]\s]+)\] artifact (\S+) \((built|cached)\)( ahead of the timing)?", log)
    return [(case, path, how, bool(ahead)) for case, path, how, ahead in found]


def test_every_artifact_is_built_once_before_the_first_case_is_timed(cold):
    done = run(cold, "ahead", "--qb-build-jobs", "2")
    assert done.returncode == 0, done.output[-3000:]
    rows = done.results
    assert set(rows["status"]) == {"ok"}, rows[["case_id", "status", "reason"]]
    log = (done.run_dir / "run.log").read_text()
    lines = artifact_lines(log)
    ahead = [line for line in lines if line[3]]
    walked = [line for line in lines if not line[3]]
    # every case's artifact, in the walk: a cache hit; ahead: each artifact built exactly once
    assert sorted(case for case, *_ in walked) == sorted(rows["case_id"])
    assert all(how == "cached" for _, _, how, _ in walked), walked
    built = [path for _, path, how, _ in ahead if how == "built"]
    assert sorted(built) == sorted({path for _, path, *_ in walked}), (built, walked)
    # the ahead walk ended before the first timed case; the work directory is gone
    first_walked = re.search(r"\] artifact \S+ \(cached\)\n", log)
    assert log.index(f"build ahead: {len(rows)} artifacts") < first_walked.start()
    assert not list(done.run_dir.glob("build-ahead-*"))
    # the second builder started (an empty cache: at once), and said what it took; both built
    # with torch at their share of the CPUs
    share = max(1, (os.cpu_count() or 1) // 2)
    assert re.search(rf"\(second builder\) took \d+ of {len(rows)} cases in [\d.]+ s \(torch at {share} thread\(s\)\)", log), log[-2000:]
    assert re.search(rf"build ahead: {len(rows)} artifacts in [\d.]+ s, \d+ by this process \(torch at {share} thread", log)

    again = run(cold, "again", "--qb-build-jobs", "2")  # a warm cache: nothing built, no second process
    assert again.returncode == 0, again.output[-3000:]
    log = (again.run_dir / "run.log").read_text()
    assert all(how == "cached" for _, _, how, _ in artifact_lines(log))
    assert "(not started: every build was cached)" in log and "(second builder)" not in log


def test_one_build_job_builds_each_case_in_its_turn(cold):
    done = run(cold, "serial", "--qb-build-jobs", "1", "-k", "fp32 or dynamic")
    assert done.returncode == 0, done.output[-3000:]
    lines = artifact_lines((done.run_dir / "run.log").read_text())
    assert lines and not any(ahead for *_, ahead in lines)
    assert {how for _, _, how, _ in lines} == {"built"}


def test_the_second_builder_builds_what_no_one_claimed_from_the_end(cold, tmp_path):
    from harness.build_ahead import PLAN_FORMAT
    from harness.suite import Suite  # noqa: F401 - the suite file imports it

    claims = tmp_path / "claims"
    claims.mkdir()
    ids = ["digits-cnn-onnxruntime-fp32-b1", "digits-cnn-onnxruntime-fp16-b1", "digits-cnn-onnxruntime-dynamic-int8-dyn-b1"]
    (claims / ids[1]).write_text("main")  # the first builder has it
    log = tmp_path / "run.log"
    plan = {"format": PLAN_FORMAT, "cache_dir": str(cold / "cache"), "profile": "quick", "settings": {},
            "claims": str(claims), "log": str(log), "cwd": str(cold),
            "cases": [{"case_id": i, "file": str(cold / "suites" / "test_ahead.py")} for i in ids]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    done = subprocess.run([sys.executable, "-m", "harness.build_ahead", str(tmp_path / "plan.json")], cwd=cold,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = log.read_text()
    # from the end of the list (the int8 build makes its fp32 source first: then a cache hit); the claimed case left alone
    assert [(case, how) for case, _, how, _ in artifact_lines(text)] == [(ids[2], "built"), (ids[0], "cached")]
    assert sorted(p.name for p in claims.iterdir()) == sorted(ids)
    assert {p.read_text() for p in claims.iterdir() if p.name != ids[1]} == {"second"}
    assert "[quantbench] (second builder) digits-cnn-onnxruntime-dynamic-int8-dyn-b1" in done.stdout
    assert len(list((cold / "cache" / "artifacts").glob("*/manifest.json"))) == 2


def test_a_plan_of_another_format_is_refused(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps({"format": 99}))
    done = subprocess.run([sys.executable, "-m", "harness.build_ahead", str(tmp_path / "plan.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "plan format 99 is not" in done.stderr


def _second_builders(pid: int) -> list[int]:
    from harness.testing.processes import descendants

    found = []
    for child in descendants(pid):
        try:
            if b"harness.build_ahead" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            pass
    return found


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_leaves_no_second_builder(cold, signum):
    """The signal reaches the run's own process only (not its group): the second builder it started
    is stopped with it, and the run's work directory for the builds is gone."""
    cmd = [sys.executable, "-m", "pytest", str(cold / "suites"), "-p", "harness.pytest_plugin", "-p", "no:cacheprovider",
           "-q", f"--qb-results-dir={cold / 'results'}", f"--qb-cache-dir={cold / 'cache'}", "--qb-run-id=stopped",
           f"--rootdir={cold}", "--qb-build-jobs", "2", *FAST_TIMING]
    with open(cold / "stopped.out", "w") as out:
        proc = subprocess.Popen(cmd, cwd=cold, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline, second = time.monotonic() + 300, []
        while not second and proc.poll() is None and time.monotonic() < deadline:
            second = _second_builders(proc.pid)
            time.sleep(0.05)
        assert second, "the second builder never started: " + (cold / "stopped.out").read_text()[-2000:]
        os.kill(proc.pid, signum)
        assert proc.wait(120) != 0
        time.sleep(0.5)
        assert not [pid for pid in second if Path(f"/proc/{pid}").exists()], "the second builder outlived its run"
        assert not list((cold / "results" / "stopped").glob("build-ahead-*"))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
