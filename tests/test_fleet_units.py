"""The fleet's parts on their own: pools in the inventory, --target parsing, board leases
across processes, gone boards, and the controller's display of what each worker runs."""
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.fleet.shared import SharedRun, StatusProgress
from harness.fleet.display import FleetDisplay
from targets import TargetError
from targets.fleet import AllBoardsGone, BoardLeases, parse_placements
from targets.inventory import load_fleet

REPO = Path(__file__).resolve().parent.parent
INVENTORY = """
[targets.a]
kind = "local"
[targets.b]
kind = "local"
[targets.c]
kind = "local"
[targets.gpu]
kind = "cuda"
profile = "nvidia-gpu"
[pools.shelf]
targets = ["a", "b", "c"]
description = "three of a kind"
"""


@pytest.fixture
def fleet(tmp_path):
    path = tmp_path / "targets.toml"
    path.write_text(INVENTORY)
    return load_fleet(str(path))


def test_placements_from_target_lists_and_pools(fleet):
    (shelf,) = parse_placements("pool:shelf", fleet)
    assert shelf.pool == "shelf" and shelf.label == "pool:shelf" and [b.name for b in shelf.boards] == ["a", "b", "c"]
    assert parse_placements("shelf", fleet)[0].pool == "shelf"  # a bare pool name works too
    a, gpu = parse_placements("a, gpu", fleet)
    assert (a.name, a.pool, [b.name for b in a.boards]) == ("a", None, ["a"]) and gpu.name == "gpu"
    with pytest.raises(TargetError, match="unknown pool 'a'"):
        parse_placements("pool:a", fleet)
    with pytest.raises(TargetError, match=r"unknown target 'x'; known targets: a, b, c, cuda, gpu, local; pools: pool:shelf"):
        parse_placements("a,x", fleet)
    with pytest.raises(TargetError, match="names 'a' twice"):
        parse_placements("a,a", fleet)
    with pytest.raises(TargetError, match="separated by commas"):
        parse_placements("a,,b", fleet)


@pytest.mark.parametrize("pool, message", [
    ('targets = ["a", "gpu"]', r"identical boards, but a is local/generic-linux and gpu is cuda/nvidia-gpu"),
    ('targets = ["a", "nowhere"]', r"unknown target 'nowhere'"),
    ('targets = []', r"non-empty list of target names"),
    ('targets = ["a", "a"]', r"listed twice"),
    ('targets = ["a"]\nboards = 2', r"unknown field\(s\) boards"),
])
def test_a_wrong_pool_is_an_inventory_error(tmp_path, pool, message):
    path = tmp_path / "targets.toml"
    path.write_text(INVENTORY.split("[pools.shelf]")[0] + f"[pools.p]\n{pool}\n")
    with pytest.raises(TargetError, match=message):
        load_fleet(str(path))


def test_a_pool_cannot_share_a_targets_name(tmp_path):
    path = tmp_path / "targets.toml"
    path.write_text(INVENTORY + '[pools.a]\ntargets = ["b"]\n')
    with pytest.raises(TargetError, match="cannot share its name with a target"):
        load_fleet(str(path))


HOLD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from targets.fleet import BoardLeases, parse_placements
from targets.inventory import load_fleet
fleet = load_fleet(sys.argv[2])
(shelf,) = parse_placements("pool:shelf", fleet)
lease = BoardLeases(Path(sys.argv[3]), Path(sys.argv[4])).acquire(shelf, prefer=[sys.argv[5]])
print(lease.board.name, flush=True)
time.sleep(float(sys.argv[6]))
"""


def test_leases_hand_each_board_to_one_process_and_wait_when_all_are_busy(fleet, tmp_path):
    locks, gone = tmp_path / "leases", tmp_path / "gone"
    inventory = str(tmp_path / "targets.toml")
    holders = []
    try:
        for board in ("b", "c"):  # two other processes hold b and c
            proc = subprocess.Popen([sys.executable, "-c", HOLD, str(REPO), inventory, str(locks), str(gone), board, "600"],
                                    stdout=subprocess.PIPE, text=True)
            holders.append(proc)
            assert proc.stdout.readline().strip() == board
        (shelf,) = parse_placements("pool:shelf", fleet)
        leases = BoardLeases(locks, gone)
        first = leases.acquire(shelf, prefer=["c"])  # c is preferred but busy: the free one
        assert first.board.name == "a" and first.waited_s < 1.0
        waited = []
        started = time.monotonic()
        holders[0].kill()  # b's holder dies: the kernel frees its lock
        second = leases.acquire(shelf, waiting=waited.append)
        assert second.board.name == "b" and time.monotonic() - started < 10
        first.release()
        second.release()
    finally:
        for proc in holders:
            proc.kill()
            proc.wait()


def test_gone_boards_are_skipped_and_the_last_one_gone_says_why(fleet, tmp_path):
    leases = BoardLeases(tmp_path / "leases", tmp_path / "gone")
    (shelf,) = parse_placements("pool:shelf", fleet)
    leases.mark_gone("a", "the device stopped answering")
    with leases.acquire(shelf) as lease:
        assert lease.board.name == "b"
    leases.mark_gone("b", "unreachable")
    leases.mark_gone("c", "host key changed")
    with pytest.raises(AllBoardsGone, match=r"every board of pool shelf is gone \(a: the device stopped answering; "
                                            r"b: unreachable; c: host key changed\)"):
        leases.acquire(shelf)
    (a,) = parse_placements("a", fleet)
    with pytest.raises(AllBoardsGone, match="^target a is gone: the device stopped answering$"):
        leases.acquire(a)


def test_the_display_shows_which_board_runs_what(tmp_path):
    shared = SharedRun(tmp_path / "run")
    gw0, gw1 = StatusProgress(shared, "gw0"), StatusProgress(shared, "gw1")
    gw0.board, gw1.board = "pi5-a", "pi5-b"
    gw0.start("digits-cnn-onnxruntime-fp32-b1")
    gw0("measuring on pi5-a (up to 10 s)")
    gw1.start("digits-cnn-onnxruntime-static-int8-qdq-b1")
    written = []
    log = FleetDisplay(shared, written.append, live=False)
    log.render(shared.statuses())
    lines = "".join(written).splitlines()
    assert any(re.match(r"\[quantbench\] gw0\s+pi5-a\s+digits-cnn-onnxruntime-fp32-b1\s+[\d.]+s measuring on pi5-a", line)
               for line in lines), lines
    assert any("gw1   pi5-b" in line and "static-int8" in line and line.endswith("starting") for line in lines)
    written.clear()
    log.render(shared.statuses())
    assert written == []  # in a log, a line per change only
    gw1.finish()
    live = []
    screen = FleetDisplay(shared, live.append, live=True, column=lambda: 7)
    screen.render(shared.statuses())
    block = live[-1]
    assert block.startswith("\x1b[J\n") and block.endswith("\x1b[2A\r\x1b[7C")  # two lines, back to pytest's column
    assert "gw1   idle" in block
    screen.stop()
    assert live[-1] == "\x1b[J"  # erased before pytest's summary

