"""The emulated Raspberry Pi 5 (scripts/emulated_pi.py) as test fixtures: built once per machine
(cached outside the repo), started per test module on an overlay of its own, stopped by pid afterwards.

Where root or binfmt_misc is missing the tests skip with that reason; in CI (CI=true) they fail,
because CI must run them."""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "emulated_pi.py"


def script():
    """scripts/emulated_pi.py as a module (it is a script, not part of a package)."""
    if "emulated_pi" not in sys.modules:
        spec = importlib.util.spec_from_file_location("emulated_pi", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["emulated_pi"] = module
        spec.loader.exec_module(module)
    return sys.modules["emulated_pi"]


def require() -> None:
    """Skip (fail in CI) when this machine cannot run the emulated Pi."""
    reason = script().prerequisites()
    if reason:
        message = f"emulated Raspberry Pi: {reason}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI must be able to run it (root, binfmt_misc, requirements/debian.txt)")
        pytest.skip(message)


def start(directory: Path, userland: str = "bookworm", **fields):
    """A started Device; the build (first time on a machine) or restore is timed in its `timings`."""
    require()
    module = script()
    device = module.Device(directory, userland, **fields)
    started = time.monotonic()
    cached = (module.tree(userland) / module.MARKER).exists()
    try:
        device.start()
    except SystemExit as exc:  # the script's way of saying what failed
        pytest.fail(str(exc))
    device.timings = {"start_s": round(time.monotonic() - started, 1), "built_now": not cached}
    return device


def device_fixture(folder: str, userland: str = "bookworm"):
    """A module-scoped fixture: a device started on a fresh tmp folder named `folder`, stopped
    after the module's tests (assign it to the fixture's name: `pi = device_fixture("emulated-pi")`)."""

    @pytest.fixture(scope="module")
    def device(tmp_path_factory):
        started = start(tmp_path_factory.mktemp(folder), userland)
        yield started
        stop(started)

    return device


def stop(device) -> None:
    device.remove()  # sshd by pid, then the device's own layer (the build stays for the next session)
