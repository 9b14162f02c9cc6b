"""RAPL package energy: the reader on powercap trees (sub-zones, the MMIO mirror and psys
left out, the counter unwrapped at max_energy_range_uj, the exact reason when RAPL cannot
be used), and the real runner and session measuring with a tree as the sensors' root."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harness.runner.sensors import NoSensor, PowerWindow, discover, min_window
from harness.runner.sensors_rapl import find_rapl
from tests.runner_job import run_runner

TREES = Path(__file__).parent / "fixtures" / "powercap"


@pytest.fixture
def tree(tmp_path):
    """A writable copy of tests/fixtures/powercap/<name>, as a filesystem root."""
    def copy(name: str) -> Path:
        root = tmp_path / name
        shutil.copytree(TREES / name, root)
        return root
    return copy


def zone_file(root: Path, zone: str, name: str) -> Path:
    return root / "sys/class/powercap" / zone / name


def test_one_sensor_per_package(tree):
    server = find_rapl(str(tree("xeon-2socket")), {})
    assert [s.name for s in server] == ["rapl:package-0", "rapl:package-1"]
    assert all(s.kind == "energy" for s in server)
    assert server[1].source == "RAPL package-1 (CPU package energy counter, intel-rapl:1)"
    # psys is the platform, intel-rapl-mmio:0 mirrors package-0, core/uncore are inside it
    laptop = find_rapl(str(tree("intel-laptop")), {})
    assert [s.name for s in laptop] == ["rapl:package-0"]
    assert [s.name for s in find_rapl(str(tree("amd-epyc")), {})] == ["rapl:package-0"]


def test_counter_is_unwrapped_at_max_energy_range(tree):
    root = tree("amd-epyc")
    [package] = find_rapl(str(root), {})
    counter = zone_file(root, "intel-rapl:0", "energy_uj")
    max_range = int(zone_file(root, "intel-rapl:0", "max_energy_range_uj").read_text())
    start = int(counter.read_text())
    assert max_range - start == 509655  # the recorded counter is half a joule from wrapping

    assert package.read() == 0.0
    counter.write_text(f"{start + 400000}\n")
    assert package.read() == pytest.approx(0.4)
    counter.write_text("1490345\n")  # passed max_energy_range_uj, restarted from zero
    assert package.read() == pytest.approx(2.0)  # 0.4 + (max - start - 400000 + 1490345) uJ
    counter.write_text("3490345\n")
    assert package.read() == pytest.approx(4.0)


def test_window_power_across_a_wrap(tree):
    root = tree("amd-epyc")
    sensors = find_rapl(str(root), {})
    counter = zone_file(root, "intel-rapl:0", "energy_uj")
    with PowerWindow(sensors) as window:
        counter.write_text("1490345\n")  # 2 J later, through the wrap
        time.sleep(0.05)
    assert window.mean_power_w() == pytest.approx(2.0 / window.seconds)


def test_package_energy_is_summed_over_sockets(tree):
    root = tree("xeon-2socket")
    sensors = find_rapl(str(root), {})
    with PowerWindow(sensors) as window:
        for zone, joules in (("intel-rapl:0", 3), ("intel-rapl:1", 5)):
            path = zone_file(root, zone, "energy_uj")
            path.write_text(f"{int(path.read_text()) + joules * 1000000}\n")
        # the dram sub-zones moving must not count
        dram = zone_file(root, "intel-rapl:0:0", "energy_uj")
        dram.write_text(f"{int(dram.read_text()) + 7000000}\n")
    assert window.mean_power_w() * window.seconds == pytest.approx(8.0)


def test_exact_reasons_when_rapl_is_unusable(tmp_path):
    with pytest.raises(NoSensor, match=r"^no .*/sys/class/powercap on this host \(RAPL is not exposed"):
        find_rapl(str(tmp_path), {})
    found, _, reason = discover("x86-rapl", str(tmp_path))
    assert found == [] and "(tried rapl: no " in reason and "sys/class/powercap on this host" in reason
    (tmp_path / "sys/class/powercap/intel-rapl").mkdir(parents=True)  # the control type, no zone
    with pytest.raises(NoSensor, match="has no RAPL package domain .*intel_rapl_msr"):
        find_rapl(str(tmp_path), {})


def _this_hosts_packages() -> tuple[str, list[str], list[str]]:
    """What /sys/class/powercap holds here, read independently of the reader: ('absent', [], []) or
    ('present', package labels whose counter reads, zones whose counter does not)."""
    base = Path("/sys/class/powercap")
    if not base.is_dir():
        return "absent", [], []
    readable, unreadable = [], []
    for zone in sorted(base.glob("intel-rapl:*")):
        if zone.name.count(":") != 1 or not (zone / "name").is_file():
            continue  # sub-zones (intel-rapl:0:0) and the MMIO mirror are not packages
        label = (zone / "name").read_text().strip()
        if not label.startswith("package"):
            continue
        try:
            int((zone / "energy_uj").read_text())
            readable.append(label)
        except (OSError, ValueError):
            unreadable.append(zone.name)
    return "present", readable, unreadable


def test_this_host_verdict_matches_its_filesystem():
    """The reader's verdict on this host equals what the filesystem says, each case with its own
    expected outcome (no branch accepts whatever happened)."""
    state, readable, unreadable = _this_hosts_packages()
    if state == "absent":
        with pytest.raises(NoSensor, match=r"^no /sys/class/powercap on this host"):
            find_rapl("/", {})
    elif unreadable:
        with pytest.raises(NoSensor) as err:
            find_rapl("/", {})
        assert all(zone in str(err.value) for zone in unreadable), (str(err.value), unreadable)
    elif not readable:
        with pytest.raises(NoSensor, match="has no RAPL package domain"):
            find_rapl("/", {})
    else:
        assert [s.name for s in find_rapl("/", {})] == [f"rapl:{label}" for label in readable]


def test_root_only_counter_is_reported_as_such():
    """Since CVE-2020-8694 energy_uj is 0400 root: a non-root runner gets the exact reason."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the reader as another user")
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    # A world-readable copy outside pytest's 0700 tmp dirs, so user nobody can walk into it.
    root = Path(tempfile.mkdtemp(prefix="qb-rapl-"))
    try:
        shutil.copytree(TREES / "xeon-2socket", root, dirs_exist_ok=True)
        shutil.copytree(Path(__file__).resolve().parent.parent / "harness" / "runner", root / "code" / "runner")
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        for zone in ("intel-rapl:0", "intel-rapl:1"):
            zone_file(root, zone, "energy_uj").chmod(0o400)
        script = ("import sys; from runner.sensors import NoSensor; from runner.sensors_rapl import find_rapl\n"
                  "try: find_rapl(sys.argv[1], {})\nexcept NoSensor as exc: print(exc)\n")
        try:
            proc = subprocess.run([python, "-c", script, str(root)], cwd=str(root), capture_output=True, text=True,
                                  env={"PYTHONPATH": str(root / "code")}, user=65534, group=65534, extra_groups=[], timeout=60)
        except PermissionError as exc:
            pytest.skip(f"cannot run {python} as nobody: {exc}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    assert f"{root}/sys/class/powercap/intel-rapl:0/energy_uj is readable only by root (since CVE-2020-8694)" in proc.stdout
    assert "intel-rapl:1/energy_uj is readable only by root" in proc.stdout


def test_min_window_comes_from_the_slowest_sensor_or_the_setting(tree):
    sensors = find_rapl(str(tree("xeon-2socket")), {})
    assert min_window(sensors, {}) == (0.0, "")  # RAPL updates every ~1 ms: no minimum
    assert min_window([], {"min_window_s": 2}) == (0.0, "")  # nothing to measure, nothing to extend
    assert min_window(sensors, {"min_window_s": 0.5})[0] == 0.5


def test_runner_measures_with_a_powercap_tree_and_extends_the_window(tmp_path, tree):
    root = tree("xeon-2socket")
    result, outputs = run_runner(tmp_path / "job", min_duration_s=0.05, max_duration_s=0.1, sensors={
        "profile": "x86-rapl", "root": str(root), "idle_s": 0.1, "settings": {"min_window_s": 0.4}})
    assert result["status"] == "ok", result["reason"]
    power = result["power"]
    # Nothing moves the recorded counters: a stuck counter is no figure, with the reason, never 0 W.
    assert power["power_source"] == (
        "none: RAPL package-0 (CPU package energy counter, intel-rapl:0), RAPL package-1 (CPU package energy counter, "
        f"intel-rapl:1): the counter did not advance over {power['window_s']:.2f} s (rapl:package-0, rapl:package-1)")
    assert power["idle_power_w"] is None and power["power_mean_w"] is None
    assert power["idle_power_note"].startswith("none: the counter did not advance over")
    # the loop ran past its own 0.1 s cap, to the sensors' minimum window, and says so
    assert result["duration_s"] >= 0.4 and result["valid"]
    assert power["window_extended"] == ("timed loop extended from 0.05 s to at least 0.4 s for the energy figure "
                                        "(the target's sensors.min_window_s setting)")
    assert outputs["logits"].shape == (len(outputs["logits"]), 10)


def test_session_row_has_rapl_power_columns(tmp_path, tree):
    from harness import Suite
    from harness.models import digits_cnn
    from harness import settings
    from harness.session import BenchSession, SessionOptions
    from targets.inventory import parse_target

    root = tree("xeon-2socket")
    config = parse_target("xeon", {"kind": "local", "profile": "x86-rapl",
                                   "sensors": {"root": str(root), "idle_s": 0.1, "min_window_s": 0.3}}, "test")
    cache = settings.cache_dir()
    options = SessionOptions(results_dir=tmp_path / "results", cache_dir=cache, min_runs=10, min_duration_s=0.05,
                             max_duration_s=1, warmup_runs=2, run_id="rapl")
    stop = threading.Event()

    def packages_draw_power():  # what the CPUs do to the counters: +10 mJ and +5 mJ every 10 ms
        while not stop.wait(0.01):
            for zone, step in (("intel-rapl:0", 10000), ("intel-rapl:1", 5000)):
                counter = zone_file(root, zone, "energy_uj")
                tmp = counter.with_name("energy_uj.tmp")
                tmp.write_text(f"{int(counter.read_text()) + step}\n")
                tmp.replace(counter)

    drawing = threading.Thread(target=packages_draw_power)
    session = BenchSession(config, options)
    drawing.start()
    try:
        case = Suite(model=digits_cnn, modes=("fp32",), name="rapl").cases()[0]
        row = session.run_case(case)
    finally:
        stop.set()
        drawing.join()
        session.close()
    assert row["status"] == "ok", row["reason"]
    assert row["power_source"].startswith("RAPL package-0 (CPU package energy counter, intel-rapl:0), RAPL package-1")
    power = json.loads((session.store.dir / "work" / case.case_id / "result.json").read_text())["power"]
    # the counters moved by whatever the drawing thread managed on this machine: derive, do not assume
    assert row["power_mean_w"] > 0 and row["idle_power_w"] > 0
    assert row["energy_mj_per_inf"] == pytest.approx(1000 * row["power_mean_w"] * power["window_s"] / row["n_runs"])
    assert row["energy_mj_per_sample"] == pytest.approx(row["energy_mj_per_inf"] / row["batch_size"])
    assert power["window_s"] == pytest.approx(row["duration_s"], abs=0.05)  # the window is the timed loop
    assert row["duration_s"] >= 0.3 and "extended from 0.05 s to at least 0.3 s" in row["power_window_note"]
