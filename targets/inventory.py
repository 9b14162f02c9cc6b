"""The target inventory: `targets.toml` (repo root by default), `--inventory PATH` or
$QUANTBENCH_INVENTORY. `local` (this CPU) and `cuda` (this machine's GPU 0) exist even without a file."""
from __future__ import annotations

import os
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Optional

from harness.vocabulary import PROFILES, TARGET_KINDS
from targets.base import TargetConfig, TargetError
from targets.ssh_config import parse_ssh_settings

ENV_VAR = "QUANTBENCH_INVENTORY"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = REPO_ROOT / "targets.toml"
COMMON_FIELDS = {f.name for f in fields(TargetConfig)} - {"name", "settings"}
SECRET_FIELDS = ("password", "passphrase")
# [targets.X.sensors] keys the runner reads, and their TOML types (other keys pass through unchecked)
SENSOR_SETTINGS: dict[str, tuple[type, ...]] = {
    "root": (str,),  # where the device's /sys is (a recorded tree in tests, /host in a container)
    "idle_s": (int, float),  # idle power is sampled this long before the timed window
    "meter_command": (str, list),  # an external power meter that prints watts
    "meter_interval_s": (int, float),
    "vcgencmd": (str, list),  # Raspberry Pi firmware tool, if not on PATH
    "tegrastats": (str, list),  # Jetson tool, if not on PATH
    "tegrastats_interval_ms": (int,),
}

BUILTIN = {"local": TargetConfig(name="local", kind="local"),
           "cuda": TargetConfig(name="cuda", kind="cuda", profile="nvidia-gpu")}  # GPU 0 of this machine


def inventory_path(explicit: Optional[str] = None) -> Optional[Path]:
    """The inventory in force: --inventory, else $QUANTBENCH_INVENTORY, else ./targets.toml if present."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return DEFAULT_FILE if DEFAULT_FILE.is_file() else None


def parse_target(name: str, table: dict, source: str) -> TargetConfig:
    where = f"{source} [targets.{name}]"
    for secret in SECRET_FIELDS:
        if secret in table:
            raise TargetError(f"{where}: `{secret}` must not live in the inventory; use an identity file or the SSH agent")
    kind = table.get("kind")
    if kind not in TARGET_KINDS:
        raise TargetError(f"{where}: kind must be one of {', '.join(TARGET_KINDS)}, not {kind!r}")
    profile = table.get("profile", "generic-linux")
    if profile not in PROFILES:
        raise TargetError(f"{where}: profile must be one of {', '.join(PROFILES)}, not {profile!r}")
    threads = table.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise TargetError(f"{where}: threads must be a positive integer, not {threads!r}")
    common = {k: v for k, v in table.items() if k in COMMON_FIELDS}
    settings = {k: v for k, v in table.items() if k not in COMMON_FIELDS}
    if kind == "ssh":
        parse_ssh_settings(settings, where)  # host, port, user, ... checked now, not at the first case
    sensors = settings.get("sensors", {})
    if not isinstance(sensors, dict):
        raise TargetError(f"{where}: `sensors` must be a table ([targets.{name}.sensors]), not {sensors!r}")
    for key, kinds in SENSOR_SETTINGS.items():
        if key in sensors and not isinstance(sensors[key], kinds):
            raise TargetError(f"{where}: sensors.{key} must be {' or '.join(k.__name__ for k in kinds)}, not {sensors[key]!r}")
    return TargetConfig(name=name, settings=settings, **common)


def load_inventory(explicit: Optional[str] = None) -> dict[str, TargetConfig]:
    targets = dict(BUILTIN)
    path = inventory_path(explicit)
    if path is None:
        return targets
    if not path.is_file():
        raise TargetError(f"inventory {path} does not exist")
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"inventory {path} is not valid TOML: {exc}") from exc
    for name, table in document.get("targets", {}).items():
        if not isinstance(table, dict):
            raise TargetError(f"{path}: [targets.{name}] must be a table")
        targets[name] = parse_target(name, table, str(path))
    return targets
