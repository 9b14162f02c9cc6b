"""A shared lab on labgrid, on real components: labgrid-coordinator and labgrid-exporter on
loopback, three sshd boards published as places with tags, real `pytest` runs of quantbench
(with pytest-xdist) that hold places at the coordinator, and a power port driven by labgrid's
own simplerest power driver (harness/testing/labgrid.py). Skipped only when labgrid is absent."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

pytest.importorskip("labgrid", reason="labgrid is not installed (the `lab` extra)")

from harness.testing.labgrid import Board, Lab  # noqa: E402
from harness.testing.sshd import inventory_toml, make_sshd  # noqa: E402
from tests.conftest import FAST_TIMING  # noqa: E402
from tests.onnx_models import digits_flat, logistic_regression, write_npz  # noqa: E402
from tests.test_fleet import leases, rows, running_on, write_suite  # noqa: E402

BOARDS = ("dev-a", "dev-b", "dev-c")


def _lab_inventory(where: Path, lab: Lab, sshds: dict, **entry) -> Path:
    """[labgrid] defaults (one user key and one known_hosts file for every board) and a
    `shelf` entry naming the tag pool."""
    first = next(iter(sshds.values()))
    known = where / "known_hosts"
    known.write_text("".join(s.known_hosts.read_text() for s in sshds.values()))
    for sshd in sshds.values():  # one user key opens every board, as in a lab
        (sshd.dir / "authorized_keys").write_text(first.user_key.with_suffix(".pub").read_text())
    defaults = {"coordinator": lab.address, "python": sys.executable, "identity_file": str(first.user_key),
                "known_hosts": str(known), "ssh_config": "", "workdir": str(where / "work-{place}"), "threads": 1,
                "connect_timeout_s": 5.0, "command_timeout_s": 20.0, "keepalive_s": 1.0, "retries": 2, "backoff_s": 0.2,
                "reconnect_window_s": 0.0}
    text = inventory_toml({"x": defaults}).replace('[targets."x"]', "[labgrid]").replace("[targets.x]", "[labgrid]")
    text += inventory_toml({"shelf": {"kind": "labgrid", "tags": {"board": "shelf"}, **entry}})
    path = where / "targets.toml"
    path.write_text(text)
    return path


@pytest.fixture
def lab(tmp_path):
    """Three sshd boards exported as places dev-a/b/c tagged board=shelf (dev-c also has a
    power port), an inventory, and a suite on a small real ONNX model."""
    sshds, started = {}, None
    try:
        for name in BOARDS:
            sshds[name] = make_sshd(tmp_path / f"sshd-{name}")
        started = Lab.start(tmp_path / "lab")
        started.export({name: Board(sshd, {"board": "shelf"}, power=(name == "dev-c")) for name, sshd in sshds.items()})
        _lab_inventory(tmp_path, started, sshds)
        x_train, y_train, x_calib, x_eval, y_eval = digits_flat()
        logistic_regression(tmp_path / "logreg.onnx")
        write_npz(tmp_path / "data.npz", x_eval, y_eval, x_calib)
        yield tmp_path, started, sshds
    finally:
        if started is not None:
            started.stop()
        for sshd in sshds.values():
            sshd.stop()


def command(where: Path, run_id: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", str(where / "test_shelf.py"), "-p", "harness.pytest_plugin", "-p", "no:cacheprovider",
            "-q", f"--rootdir={where}", f"--qb-inventory={where / 'targets.toml'}", f"--qb-results-dir={where / 'results'}",
            f"--qb-run-id={run_id}", "--qb-results-db=off", *FAST_TIMING, *extra]


def start(where: Path, run_id: str, *extra: str, env=None) -> subprocess.Popen:
    return subprocess.Popen(command(where, run_id, *extra), cwd=where, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, **(env or {})})


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, output


def wait_until(proc: subprocess.Popen, ready, timeout_s: float = 300, poll_s: float = 0.05) -> None:
    """Poll ready() until it holds, the run still going (else its output is the failure)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, finish(proc)[1][-3000:]
        time.sleep(poll_s)


def run_caught_on_dev_c(where: Path, run_id: str) -> subprocess.Popen:
    """A run of fp32 and dynamic-int8 on place dev-c, returned once a case of it is running there:
    the moment the power-cycle tests take the board away."""
    write_suite(where, modes=("fp32", "dynamic-int8"))
    proc = start(where, run_id, "--target=lab:dev-c", "--min-duration", "2", "--max-duration", "4")
    wait_until(proc, lambda: running_on(where / "work-dev-c"))
    return proc


def acquired(lab: Lab) -> dict:
    return {name: p.acquired for name, p in lab.places().items() if p.acquired}


def quantbench_run(where: Path, run_id: str, target: str, *extra: str) -> subprocess.Popen:
    """`quantbench run` (the CLI, as scripts/run.sh runs it) on the suite file, its own run id."""
    cmd = [sys.executable, "-m", "harness.cli", "run", f"--target={target}", f"--inventory={where / 'targets.toml'}",
           str(where / "test_shelf.py"), "-q", f"--rootdir={where}", f"--qb-results-dir={where / 'results'}",
           f"--qb-run-id={run_id}", "--qb-results-db=off", *FAST_TIMING, *extra]
    return subprocess.Popen(cmd, cwd=where, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def instant(stamp: str) -> float:
    """A row's held_from/held_until (UTC ISO-8601, milliseconds) as epoch seconds."""
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def windows(where: Path, run_id: str) -> tuple[list[dict], set[tuple[str, float, float]]]:
    """The run's rows (a list: a case twice would show) and its distinct per-board windows from
    the rows (an fp32 row measured first under a case's hold shares that case's window)."""
    from harness.store import load_run

    found = load_run(where / "results" / run_id).to_dict("records")
    spans = {(r["board"], instant(r["held_from"]), instant(r["held_until"])) for r in found}
    logged = leases(where, run_id)
    for board, s, e in spans:  # each window is a hold of the run, as run.log's lease line has it (to the ms)
        assert any(abs(s - a) < 0.002 and abs(e - b) < 0.002 for a, b, _ in logged[board]), (board, s, e, logged[board])
    return found, spans


def test_two_runs_on_one_tag_pool_never_share_a_board(lab):
    """Two `quantbench run` processes (each with two xdist workers) started together on the tag
    pool: the per-board windows in their rows never overlap across the runs, every case ran once
    per run, and no place is left acquired."""
    where, started, _ = lab
    write_suite(where, batches=(1, 2))
    first = quantbench_run(where, "one", "shelf", "-n", "2", "--min-duration", "0.5")
    second = quantbench_run(where, "two", "lab:board=shelf", "-n", "2", "--min-duration", "0.5")
    results = {"one": finish(first), "two": finish(second)}
    for run_id, (code, output) in results.items():
        assert code == 0, output[-4000:]
    held = defaultdict(list)  # board -> [(from, until, run)]
    span, cases = {}, {}  # run -> (its first window's start, its last window's end); run -> its case ids
    for run_id in results:
        found, spans = windows(where, run_id)
        cases[run_id] = sorted(r["case_id"] for r in found)
        assert len(cases[run_id]) == len(set(cases[run_id])) == 6  # every case once
        assert all(r["status"] == "ok" for r in found), [r["reason"] for r in found]
        for row in found:
            assert row["lab_place"] == row["board"] in BOARDS and "+qb-" in row["lab_holder"]
        assert all(s < e for _, s, e in spans)
        for board, s, e in spans:
            held[board].append((s, e, run_id))
        span[run_id] = (min(s for _, s, _ in spans), max(e for _, _, e in spans))
    assert cases["one"] == cases["two"]
    (a1, b1), (a2, b2) = span["one"], span["two"]
    assert a1 < b2 and a2 < b1, f"the premise: the two runs held boards during the same minutes ({span})"
    for board, spans in held.items():
        spans.sort()
        for (s1, e1, r1), (s2, e2, r2) in zip(spans, spans[1:]):
            assert s2 >= e1, f"{board}: run {r2} held it from {s2:.3f} while run {r1} held it until {e1:.3f}"
    assert len({r for spans in held.values() for _, _, r in spans}) == 2 and not acquired(started)


def test_an_exporter_that_dies_mid_run_is_said_and_the_finished_cases_stay(lab):
    """The exporter of every place is killed while a case runs (a row already written): that case
    finishes (its board still answers over SSH) and stays with the rows before it; the next case
    finds no place published, run.log says so then, once per place, and after wait_s the rest
    are errors naming it; no place is left acquired."""
    where, started, _ = lab
    write_suite(where, modes=("fp32", "dynamic-int8"), batches=(1, 2))
    inventory = (where / "targets.toml").read_text()
    (where / "targets.toml").write_text(inventory.replace('tags = { "board" = "shelf" }', 'tags = { "board" = "shelf" }\nwait_s = 3'))
    proc = start(where, "exporter", "--target=shelf", "--min-duration", "1", "--max-duration", "3")
    cases = where / "results" / "exporter" / "cases"
    wait_until(proc, lambda: any(cases.glob("*.json")) and any(running_on(where / f"work-{b}") for b in BOARDS))
    before = {p.stem for p in cases.glob("*.json")}
    died = time.time()
    started.kill_exporter()
    code, output = finish(proc)
    assert code == 1, output[-4000:]
    found = rows(where, "exporter")
    assert len(found) == 4, output[-6000:]
    ok = {c for c, r in found.items() if r["status"] == "ok"}
    assert before < ok, (before, {c: r["reason"] for c, r in found.items()})  # the running case finished too
    assert all(instant(found[c]["held_from"]) < died for c in ok)  # ... and nothing ran on a place after
    for case_id in set(found) - ok:
        reason = found[case_id]["reason"]
        assert found[case_id]["status"] == "error" and "wait_s = 3" in reason and reason.count(
            "not published (no exporter offers its NetworkService now)") == 3, reason
    log = (where / "results" / "exporter" / "run.log").read_text()
    said = [i for i, line in enumerate(log.splitlines()) if "no exporter publishes its NetworkService at coordinator" in line]
    assert len(said) == 3, log[-3000:]  # once per place
    last_lease = max(i for i, line in enumerate(log.splitlines()) if " lease dev-" in line)
    assert min(said) > last_lease, log[-3000:]  # said when the next case looked for a place, after the running one
    assert not acquired(started)


def test_coordinator_down_no_match_and_held_too_long_each_give_one_line(lab, tmp_path):
    where, started, _ = lab
    write_suite(where, modes=("fp32",))
    inventory = (where / "targets.toml").read_text()
    (where / "nocoord.toml").write_text(inventory.replace(f'coordinator = "{started.address}"\n', ""))
    down = subprocess.run(command(where, "down", "--target=lab:board=shelf", f"--qb-inventory={where / 'nocoord.toml'}"),
                          cwd=where, capture_output=True, text=True, timeout=300, env={**os.environ, "LG_COORDINATOR": "127.0.0.1:9"})
    assert down.returncode != 0
    lines = [line for line in (down.stdout + down.stderr).splitlines() if "labgrid coordinator 127.0.0.1:9" in line]
    assert len(lines) == 1 and "is not reachable" in lines[0], down.stdout + down.stderr

    nomatch = subprocess.run(command(where, "nomatch", "--target=lab:board=nothing"), cwd=where, capture_output=True,
                             text=True, timeout=300)
    assert nomatch.returncode != 0
    lines = [line for line in (nomatch.stdout + nomatch.stderr).splitlines() if "matches places tagged board=nothing" in line]
    assert len(lines) == 1 and "dev-a [board=shelf]" in lines[0], nomatch.stdout + nomatch.stderr

    from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

    started.admin(("AddPlace", pb2.AddPlaceRequest(name="bare")),  # a place whose exporter publishes nothing
                  ("SetPlaceTags", pb2.SetPlaceTagsRequest(placename="bare", tags={"board": "bare"})))
    bare = subprocess.run(command(where, "bare", "--target=lab:board=bare"), cwd=where, capture_output=True, text=True,
                          timeout=300)
    assert bare.returncode != 0
    lines = [line for line in (bare.stdout + bare.stderr).splitlines() if "place bare has no NetworkService" in line]
    assert len(lines) == 1, bare.stdout + bare.stderr

    from targets.labgrid_client import LabClient

    other = LabClient(started.address)  # another user holds every place
    try:
        for name in BOARDS:
            assert other.acquire(name) is None
        (where / "targets.toml").write_text(inventory.replace('tags = { "board" = "shelf" }', 'tags = { "board" = "shelf" }\nwait_s = 3'))
        proc = subprocess.run(command(where, "busy", "--target=shelf"), cwd=where, capture_output=True, text=True, timeout=300)
    finally:
        for name in BOARDS:
            other.release(name)
        other.close()
    found = rows(where, "busy")
    assert proc.returncode == 1 and len(found) == 1
    reason = next(iter(found.values()))["reason"]
    assert "no place free after waiting 3 s (the limit, wait_s = 3)" in reason and other.holder in reason, reason
    assert f"labgrid-client -x {started.address} -p dev-a release-from {other.holder}" in reason
    assert not acquired(started)


def test_sigterm_releases_and_a_sigkilled_holder_is_cleared(lab):
    where, started, _ = lab
    write_suite(where, modes=("fp32", "dynamic-int8"))
    proc = start(where, "term", "--target=lab:dev-a", "--min-duration", "3", "--max-duration", "5")
    wait_until(proc, lambda: "dev-a" in acquired(started), poll_s=0.2)
    proc.send_signal(signal.SIGTERM)
    code, output = finish(proc, 120)
    assert code != 0 and not acquired(started), output[-3000:]

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom targets.labgrid_client import LabClient\n"
                               f"c = LabClient({started.address!r}); assert c.acquire('dev-a') is None\n"
                               "print(c.holder, flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    name = holder.stdout.readline().strip()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert acquired(started) == {"dev-a": name}  # a killed run's lock stays at the coordinator
    write_suite(where, modes=("fp32",))
    proc = start(where, "after", "--target=lab:dev-a")
    code, output = finish(proc)
    assert code == 0, output[-3000:]
    log = (where / "results" / "after" / "run.log").read_text()
    assert f"labgrid place dev-a: released the acquisition of {name}, a quantbench process of this host that no longer runs" in log
    assert not acquired(started)


def test_a_board_that_stops_answering_is_power_cycled_through_labgrid_and_the_case_retried(lab):
    """The place's sshd is killed mid-case; past the reconnect window quantbench cycles the
    place's NetworkPowerPort (labgrid's simplerest driver against a small HTTP switch that
    stops and starts that sshd), waits for SSH, checks the board, and runs the case again."""
    where, started, sshds = lab
    proc = run_caught_on_dev_c(where, "power")
    sshds["dev-c"].kill()
    code, output = finish(proc)
    assert code == 0, output[-4000:]
    found = rows(where, "power")
    assert all(r["status"] == "ok" for r in found.values()), [r["reason"] for r in found.values()]
    cycled = [r for r in found.values() if isinstance(r.get("power_cycled"), str)]
    assert len(cycled) == 1 and "power-cycled labgrid place dev-c" in cycled[0]["power_cycled"], cycled
    assert [e[2] for e in started.switch.events] == ["off", "on"]
    manifest = json.loads((where / "results" / "power" / "run.json").read_text())
    assert manifest["targets"]["lab:dev-c"]["power_cycles"][0]["place"] == "dev-c", manifest["targets"]
    assert not acquired(started)


def test_targets_lists_places_with_their_holders_and_checks_a_tag_pool(lab):
    import re

    where, started, _ = lab
    cli = [sys.executable, "-m", "harness.cli", "targets"]
    inventory = ["--inventory", str(where / "targets.toml")]
    from targets.labgrid_client import LabClient

    other = LabClient(started.address)
    try:
        assert other.acquire("dev-b") is None
        listed = subprocess.run(cli + inventory, capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert f"labgrid {started.address}: 3 place(s)" in listed.stdout, listed.stdout
        assert re.search(r"^dev-a\s+board=shelf\s+free\s+\S+@127\.0\.0\.1:\d+\s+-\s+shelf$", listed.stdout, re.M), listed.stdout
        assert re.search(rf"^dev-b\s+board=shelf\s+held by {re.escape(other.holder)} for \d+ s\s", listed.stdout, re.M)
        assert re.search(r"^dev-c\s+.*NetworkPowerPort\s+shelf$", listed.stdout, re.M), listed.stdout
        check = subprocess.run(cli + ["check", "lab:board=shelf"] + inventory, capture_output=True, text=True, timeout=300)
    finally:
        other.release("dev-b")
        other.close()
    assert check.returncode == 1, check.stdout + check.stderr  # dev-b was held: reported, not checked
    assert re.search(r"^dev-a: usable$", check.stdout, re.M) and re.search(r"^dev-c: usable$", check.stdout, re.M), check.stdout
    assert re.search(rf"^dev-b: NOT usable: labgrid place dev-b not checked: held by {re.escape(other.holder)}", check.stdout, re.M)
    assert check.stdout.count("  runtimes ") == 2
    assert not acquired(started)  # the check released what it acquired
    down = subprocess.run(cli + inventory, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LG_COORDINATOR": "127.0.0.1:9"})
    assert down.returncode == 0  # the inventory names its own coordinator; LG_COORDINATOR is not consulted


def test_a_power_port_that_fails_to_cycle_is_said_and_the_board_handled_as_lost(lab):
    """As above, but the power switch itself is gone: the cycle's failure is in run.log, the
    interrupted case is an error (the finished ones stay), and the place is released."""
    where, started, sshds = lab
    proc = run_caught_on_dev_c(where, "nopower")
    started.switch.close()
    sshds["dev-c"].kill()
    code, output = finish(proc)
    assert code == 1, output[-4000:]
    found = rows(where, "nopower")
    assert len(found) == 2 and [r["status"] for r in found.values()].count("error") >= 1, output[-3000:]
    assert not any(isinstance(r.get("power_cycled"), str) for r in found.values())
    log = (where / "results" / "nopower" / "run.log").read_text()
    assert "power cycle of labgrid place dev-c did not bring lab:dev-c back: power cycle of place dev-c through its " \
           "NetworkPowerPort (simplerest http://127.0.0.1:" in log, log[-3000:]
    assert not acquired(started)


class _PiPower:
    """The emulated Pi behind a proxy, as its power switch sees it: off stops the device (its sshd
    and every process of its sessions), on starts it again on the same port and lets the link carry
    traffic again (a board whose network hung comes back with the board)."""

    def __init__(self, device, proxy) -> None:
        self.device, self.proxy = device, proxy
        self.address, self.port = "127.0.0.1", proxy.port

    def stop(self) -> None:
        self.device.stop()

    def start(self) -> None:
        self.device.start()
        self.proxy.frozen.clear()
        self.proxy.cut()  # the connections frozen before the cycle belong to the old boot


def test_the_emulated_pi_power_cycled_through_labgrid_after_its_link_goes_silent(tmp_path):
    """The issue's end-to-end case: an emulated Raspberry Pi 5 published as a labgrid place with
    a power port; its link goes silent (a proxy freezes) mid-case, past the reconnect window;
    quantbench power-cycles the place through labgrid, waits for SSH, checks the board, and the
    interrupted case runs again, ok, with the row saying it was power-cycled."""
    from harness.testing.sshd import Proxy
    from tests import emulated_pi

    device = emulated_pi.start(tmp_path / "pi")
    module = emulated_pi.script()
    proxy = Proxy(device.port)
    started = proc = None
    try:
        started = Lab.start(tmp_path / "lab")
        started.export({"pi5-a": Board(_PiPower(device, proxy), {"board": "rpi5"}, power=True, username=module.USER)})
        known = tmp_path / "known_hosts"
        known.write_text(device.known_hosts.read_text().replace(f"]:{device.port} ", f"]:{proxy.port} "))
        defaults = {"coordinator": started.address, "python": f"{module.MAIN_VENV}/bin/python",
                    "identity_file": str(device.user_key), "known_hosts": str(known), "ssh_config": "",
                    "workdir": "~/.cache/quantbench", "profile": "raspberry-pi-5", "threads": 1, "case_timeout_s": 1800.0,
                    "connect_timeout_s": 10.0, "command_timeout_s": 300.0, "keepalive_s": 2.0, "retries": 1,
                    "backoff_s": 0.5, "reconnect_window_s": 5.0, "power_wait_s": 300.0}
        (tmp_path / "targets.toml").write_text(
            inventory_toml({"x": defaults}).replace('[targets."x"]', "[labgrid]").replace("[targets.x]", "[labgrid]"))
        x_train, y_train, x_calib, x_eval, y_eval = digits_flat()
        logistic_regression(tmp_path / "logreg.onnx")
        write_npz(tmp_path / "data.npz", x_eval, y_eval, x_calib)
        write_suite(tmp_path, modes=("fp32", "dynamic-int8"))
        proc = start(tmp_path, "pi", "--target=lab:board=rpi5", "--min-runs", "3", "--min-duration", "0",
                     "--max-duration", "1", "--warmup-runs", "1")
        on_pi = device.home() / ".cache" / "quantbench"  # a runner works here while a case runs on the Pi
        wait_until(proc, lambda: running_on(on_pi), timeout_s=900, poll_s=0.1)
        proxy.freeze()
        code, output = finish(proc, 1500)
        assert code == 0, output[-4000:]
        found = rows(tmp_path, "pi")
        assert all(r["status"] == "ok" for r in found.values()), [r["reason"] for r in found.values()]
        cycled = [r for r in found.values() if isinstance(r.get("power_cycled"), str)]
        assert len(cycled) == 1 and "power-cycled labgrid place pi5-a" in cycled[0]["power_cycled"], cycled
        assert cycled[0]["profile"] == "raspberry-pi-5" and cycled[0]["lab_place"] == "pi5-a"
        assert [e[2] for e in started.switch.events] == ["off", "on"]
        manifest = json.loads((tmp_path / "results" / "pi" / "run.json").read_text())
        assert manifest["targets"]["pi5-a"]["power_cycles"][0]["place"] == "pi5-a"
        assert not acquired(started)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if started is not None:
            started.stop()
        proxy.close()
        emulated_pi.stop(device)
