"""A link that goes silent for a while (a board on Wi-Fi): the device is a real sshd in a network
namespace of our own, and the namespace's end of its veth goes down mid-case, so the harness's
packets vanish without a FIN or RST. A nightly run must lose the case in flight and nothing more
when the device comes back within the reconnect window; once the device has been declared gone,
each later case tries one quick connect and uses the device again when it answers; the summary
says how long it was away."""
import sys
import time
from pathlib import Path

import pytest

from harness.finish import outage_lines
from harness.testing.sshd import make_sshd
from tests.netns import Namespace
from tests.test_ssh_faults import cases, run_in_background, running_job, session, wait_for

MODES = ("fp32", "fp16", "dynamic-int8", "static-int8", "mixed", "qat-int8")


@pytest.fixture
def device_in_namespace(tmp_path):
    with Namespace() as ns:
        sshd = make_sshd(tmp_path / "sshd", address=ns.address, netns=ns.name)
        try:
            yield ns, sshd
        finally:
            sshd.stop()


def test_link_silent_within_the_reconnect_window_loses_only_the_case_in_flight(device_in_namespace, tmp_path):
    ns, sshd = device_in_namespace
    workdir = tmp_path / "work"
    table = sshd.target(python=sys.executable, workdir=str(workdir), keepalive_s=1.0, connect_timeout_s=2.0,
                        reconnect_window_s=60.0, retries=1, backoff_s=0.5, max_backoff_s=2.0)
    bench = session(tmp_path, table, min_duration_s=2.0, max_duration_s=4.0)
    todo = cases(*MODES[:4])
    silent_s = 8.0
    try:
        thread, rows, timings = run_in_background(bench, todo)
        wait_for(lambda: todo[0].case_id in rows, 900)  # the first case may build the model and its artifacts
        wait_for(lambda: running_job(workdir), 900)  # fp16's runner is measuring
        ns.cut()
        cut_at = time.monotonic()
        wait_for(lambda: todo[1].case_id in rows, 30)  # found out within keepalive + connect timeout
        time.sleep(max(0.0, silent_s - (time.monotonic() - cut_at)))
        ns.restore()
        thread.join(180)
        assert not thread.is_alive()
        report = bench.target.outage_report()
    finally:
        bench.close()
    assert rows[todo[0].case_id]["status"] == "ok"
    assert rows[todo[1].case_id]["status"] == "error" and "lost the connection" in rows[todo[1].case_id]["reason"]
    for case in todo[2:]:  # the next case waited for the device inside the window, then ran
        assert rows[case.case_id]["status"] == "ok", rows[case.case_id]["reason"]
    assert len(report) == 1 and report[0]["until"] is not None and report[0]["cases_failed"] == 1
    # counted from when the loss was noticed (within keepalive + connect timeout of the cut) until the reconnect
    assert silent_s - 3.5 <= report[0]["away_s"] <= silent_s + 30
    assert timings[todo[2].case_id] >= silent_s - (timings[todo[1].case_id] + 1)  # it waited for the device
    (line,) = outage_lines("edge", report)
    assert f"away {report[0]['away_s']:.0f} s, 1 case(s) failed" in line


def test_device_declared_gone_is_used_again_when_it_answers(device_in_namespace, tmp_path):
    ns, sshd = device_in_namespace
    workdir = tmp_path / "work"
    table = sshd.target(python=sys.executable, workdir=str(workdir), keepalive_s=1.0, connect_timeout_s=2.0,
                        reconnect_window_s=3.0, retries=1, backoff_s=0.5, max_backoff_s=1.0)
    bench = session(tmp_path, table, min_duration_s=2.0, max_duration_s=4.0)
    todo = cases(*MODES)
    started = {}
    try:
        thread, rows, timings = run_in_background(bench, todo, started)
        wait_for(lambda: todo[0].case_id in rows, 900)  # the first case may build the model and its artifacts
        wait_for(lambda: running_job(workdir), 900)
        ns.cut()
        wait_for(lambda: todo[2].case_id in rows, 60)  # the window ran out on this case: the device is gone
        ns.restore()
        restored = time.monotonic()
        thread.join(180)
        assert not thread.is_alive()
        report = bench.target.outage_report()
    finally:
        bench.close()
    status = {c.mode: (rows[c.case_id]["status"], rows[c.case_id]["reason"]) for c in todo}
    assert status["fp32"][0] == "ok"
    assert status["fp16"][0] == "error" and "lost the connection" in status["fp16"][1]
    gone = status["dynamic-int8"]
    assert gone[0] == "error" and "the device stopped answering at" in gone[1] and "tries one quick connect" in gone[1], gone
    # once the link is back, the next case's quick connect finds the device and the rest run (a case
    # that began its quick connect just before may go either way)
    after = [c for c in todo if started[c.case_id] > restored]
    assert after and all(status[c.mode][0] == "ok" for c in after), status
    assert len(report) == 1 and report[0]["until"] is not None and 2 <= report[0]["cases_failed"] <= 3
    run_json = (bench.store.dir / "run.json").read_text()
    assert '"outages"' in run_json and report[0]["since"] in run_json


def test_device_still_gone_fails_each_case_after_one_quick_connect(device_in_namespace, tmp_path):
    ns, sshd = device_in_namespace
    workdir = tmp_path / "work"
    table = sshd.target(python=sys.executable, workdir=str(workdir), keepalive_s=1.0, connect_timeout_s=2.0,
                        reconnect_window_s=2.0, retries=1, backoff_s=0.5, max_backoff_s=1.0)
    bench = session(tmp_path, table, min_duration_s=2.0, max_duration_s=4.0)
    todo = cases(*MODES)
    try:
        thread, rows, timings = run_in_background(bench, todo)
        wait_for(lambda: running_job(workdir), 900)
        ns.cut()
        thread.join(180)
        assert not thread.is_alive()
        report = bench.target.outage_report()
    finally:
        bench.close()
    reasons = [rows[c.case_id]["reason"] for c in todo[1:]]
    assert all("the device stopped answering at" in r for r in reasons), reasons
    assert len({r.split(" (details")[0] for r in reasons}) == 1  # one clear reason
    for case in todo[2:]:  # one quick connect each (connect timeout), not the whole window again
        assert timings[case.case_id] < 2.0 + 3.0, timings
    assert report[0]["until"] is None and report[0]["cases_failed"] == len(todo)
    (line,) = outage_lines("edge", report)
    assert "still away at the end of the run" in line
