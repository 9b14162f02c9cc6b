"""An ssh target with a GPU profile reports the device's GPU (`facts["gpu"]`, from runner.facts on
the device), and the torch GPU recipes read its compute capability: on a Jetson Orin (8.7) bf16
and torchao's int8 are measured, not `n/a` with "compute capability unknown".

A Jetson cannot exist here, so the device's tree is replayed: `/proc/device-tree/compatible` as
the mainline kernel's device trees for those boards declare it (tests/fixtures/sensors/*/proc),
through a real sshd on loopback and the real runner.facts. This machine's own answer is checked
against the driver's own evidence."""
from __future__ import annotations

import sys

import pytest

from harness.models import digits_cnn
from harness.quantize import recipes_for
from harness.runner.gpu_facts import describe_gpu, from_device_tree
from targets import open_target
from targets.inventory import parse_target
from harness.testing.sshd import make_sshd
from tests.replay import SENSORS
from tests.test_suite_declarations import gpu_evidence


@pytest.mark.parametrize("board, soc, capability", [
    ("jetson-agx-orin", "nvidia,tegra234", "8.7"),
    ("jetson-orin-nano", "nvidia,tegra234", "8.7"),
    ("jetson-nano", "nvidia,tegra210", "5.3"),
])
def test_the_soc_in_the_device_tree_names_the_gpu(board, soc, capability):
    gpu = describe_gpu(str(SENSORS / board))
    assert (gpu["compute_capability"], gpu["soc"], gpu["integrated"]) == (capability, soc, True)
    assert gpu["source"].startswith(f"device tree ({soc} in ")


def test_no_gpu_source_says_why(tmp_path):
    gpu = describe_gpu(str(tmp_path))  # a replayed tree with no device tree
    assert "compute_capability" not in gpu
    assert gpu["error"].startswith(f"NVML and the CUDA driver are not asked for a replayed tree ({tmp_path})")
    assert "device tree: no device tree to name the SoC" in gpu["error"]
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/compatible").write_bytes(b"raspberrypi,5-model-b\0brcm,bcm2712\0")
    with pytest.raises(LookupError, match="names no Tegra SoC with a known GPU \\(raspberrypi,5-model-b, brcm,bcm2712\\)"):
        from_device_tree(str(tmp_path))


def test_this_hosts_answer_matches_the_driver():
    gpu, evidence = describe_gpu("/"), gpu_evidence()
    if evidence:
        assert gpu.get("compute_capability"), (evidence, gpu)
    else:  # every live source answered why not
        assert "compute_capability" not in gpu and "NVML: " in gpu["error"] and "CUDA driver: " in gpu["error"], gpu


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    sshd = make_sshd(tmp_path_factory.mktemp("sshd"))
    yield sshd
    sshd.stop()


def _info(device, tmp_path, profile, board):
    table = device.target(python=sys.executable, workdir=str(tmp_path / "workdir"), profile=profile,
                          sensors={"root": str(SENSORS / board), "idle_s": 0.1})
    target = open_target(parse_target("jetson", table, "test"), tmp_path / "cache")
    try:
        return target.info()
    finally:
        target.close()


def test_an_ssh_jetson_reports_its_gpu_and_the_torch_gpu_recipes_use_it(device, tmp_path):
    info = _info(device, tmp_path, "jetson-orin", "jetson-agx-orin")
    assert info.facts["gpu"]["compute_capability"] == "8.7" and info.facts["gpu"]["soc"] == "nvidia,tegra234"
    # AOTInductor packages are built for the CPU only so far (issue 21): said, not silently dropped
    aoti = [r for r in recipes_for("torch", "bf16") + recipes_for("torch", "dynamic-int8") if r.execution == "aoti"]
    assert aoti and all("CUDA packages" in r.not_applicable_reason(digits_cnn, info) for r in aoti)
    bf16 = [r for r in recipes_for("torch", "bf16") if r.execution != "aoti"]
    torchao = [r for r in recipes_for("torch", "dynamic-int8")
               if r.name.startswith("torchao.quantize_(") and r.execution != "aoti"]
    assert bf16 and torchao
    for recipe in (*bf16, *torchao):
        assert recipe.not_applicable_reason(digits_cnn, info) is None, recipe.name

    nano = _info(device, tmp_path, "jetson-nano", "jetson-nano")  # Maxwell, 5.3: below Ampere, said with the figure
    reason = bf16[0].not_applicable_reason(digits_cnn, nano)
    assert "needs compute capability 8.0 (Ampere) or newer" in reason and "is 5.3" in reason


def test_a_cpu_profile_asks_for_no_gpu(device, tmp_path):
    info = _info(device, tmp_path, "generic-linux", "jetson-agx-orin")
    assert "gpu" not in info.facts


def test_targets_check_prints_the_gpu(device, tmp_path):
    from harness.cli_targets import format_facts

    table = device.target(python=sys.executable, workdir=str(tmp_path / "workdir"), profile="jetson-orin",
                          sensors={"root": str(SENSORS / "jetson-orin-nano")})
    config = parse_target("jetson", table, "test")
    info = _info(device, tmp_path, "jetson-orin", "jetson-orin-nano")
    assert "  gpu       NVIDIA Tegra Orin (nvgpu), compute capability 8.7 (from device tree (nvidia,tegra234" \
        in format_facts(config, info.facts)
