"""The target inventory: `--inventory PATH`, else $QUANTBENCH_INVENTORY, else `targets.toml` in
the base directory (the pytest rootdir or the working directory, see harness/settings.py). `local` (this CPU) and `cuda` (this machine's GPU 0) exist even without a file.

`[targets.NAME]` declares one place to run; `[pools.NAME] targets = [...]` names a set of
identical boards (same kind and profile), of which a run uses whichever is free
(`--target=pool:NAME`, see targets/fleet.py). `kind = "labgrid"` entries name a labgrid place
or a pool of places by tags, with defaults in a `[labgrid]` table (targets/labgrid_place.py);
they are kept as specs (`Inventory.labs`) and resolved at the coordinator when a run uses them."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

from harness import settings
from harness.vocabulary import PROFILES, TARGET_KINDS
from targets.base import TargetConfig, TargetError
from targets.ssh_config import parse_ssh_settings

ENV_VAR = settings.INVENTORY_ENV
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


@dataclass(frozen=True)
class Pool:
    """Identical boards that share a run's work: each case runs once, on whichever is free."""

    name: str  # the `target` column of its rows (the `pool` column too; `board` names the member)
    targets: tuple[str, ...]  # member target names, in the inventory
    description: str = ""  # one line for `quantbench targets`


@dataclass(frozen=True)
class Inventory:
    targets: dict[str, TargetConfig]
    pools: dict[str, Pool]
    labs: dict = field(default_factory=dict)  # name -> targets.labgrid_place.LabSpec (kind = "labgrid" entries)
    lab_defaults: dict = field(default_factory=dict)  # the [labgrid] table: coordinator, wait_s, ssh fields, ...


def inventory_path(explicit: Optional[str] = None, base: Optional[Path] = None) -> Optional[Path]:
    """The inventory in force: --inventory, else $QUANTBENCH_INVENTORY, else <base>/targets.toml if present
    (base: the pytest rootdir or the working directory; harness.settings.inventory_path)."""
    return settings.inventory_path(explicit, base)


def _check_export_settings(table: dict, where: str) -> None:
    """torch_format / onnx_opset: older artifact formats for a device with older runtimes."""
    from harness.quantize.base import TORCH_FORMATS

    if "torch_format" in table and table["torch_format"] not in TORCH_FORMATS:
        raise TargetError(f"{where}: torch_format must be one of {', '.join(TORCH_FORMATS)}, not {table['torch_format']!r}")
    if "onnx_opset" in table:
        from harness.quantize.onnx_graph import OPSET

        opset = table["onnx_opset"]
        if not isinstance(opset, int) or isinstance(opset, bool) or not 7 <= opset <= OPSET:
            raise TargetError(f"{where}: onnx_opset must be an integer from 7 to {OPSET} (the opset this host exports), not {opset!r}")


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
    _check_export_settings(table, where)
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


def parse_pool(name: str, table: dict, targets: dict[str, TargetConfig], source: str) -> Pool:
    where = f"{source} [pools.{name}]"
    if name in targets:
        raise TargetError(f"{where}: a pool cannot share its name with a target ({name!r} is a target)")
    unknown = set(table) - {"targets", "description"}
    if unknown:
        raise TargetError(f"{where}: unknown field(s) {', '.join(sorted(unknown))} (a pool has `targets` and `description`)")
    members = table.get("targets")
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise TargetError(f"{where}: `targets` must be a non-empty list of target names, e.g. targets = [\"pi5-a\", \"pi5-b\"]")
    if len(set(members)) != len(members):
        raise TargetError(f"{where}: a target is listed twice in {members}")
    for member in members:
        if member not in targets:
            raise TargetError(f"{where}: unknown target {member!r} (declared: {', '.join(sorted(targets))})")
    first = targets[members[0]]
    for member in members[1:]:
        other = targets[member]
        if (other.kind, other.profile) != (first.kind, first.profile):
            raise TargetError(f"{where}: a pool holds identical boards, but {members[0]} is {first.kind}/{first.profile} "
                              f"and {member} is {other.kind}/{other.profile}; list them as separate targets instead "
                              f"(--target={members[0]},{member})")
    return Pool(name, tuple(members), str(table.get("description", "")))


def load_fleet(explicit: Optional[str] = None, base: Optional[Path] = None) -> Inventory:
    """Every target and pool of the inventory in force (built-in targets included)."""
    targets = dict(BUILTIN)
    path = inventory_path(explicit, base)
    if path is None:
        return Inventory(targets, {})
    if not path.is_file():
        raise TargetError(f"inventory {path} does not exist")
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"inventory {path} is not valid TOML: {exc}") from exc
    lab_defaults = document.get("labgrid", {})
    if not isinstance(lab_defaults, dict):
        raise TargetError(f"{path}: [labgrid] must be a table")
    labs = {}
    for name, table in document.get("targets", {}).items():
        if not isinstance(table, dict):
            raise TargetError(f"{path}: [targets.{name}] must be a table")
        if table.get("kind") == "labgrid":
            from targets.labgrid_place import parse_spec  # labgrid itself is imported only when a run uses the place

            labs[name] = parse_spec(table, lab_defaults, f"{path} [targets.{name}]")
            continue
        targets[name] = parse_target(name, table, str(path))
    pools = {}
    for name, table in document.get("pools", {}).items():
        if not isinstance(table, dict):
            raise TargetError(f"{path}: [pools.{name}] must be a table")
        pools[name] = parse_pool(name, table, targets, str(path))
    return Inventory(targets, pools, labs, lab_defaults)


def load_inventory(explicit: Optional[str] = None, base: Optional[Path] = None) -> dict[str, TargetConfig]:
    """The targets of the inventory in force, by name."""
    return load_fleet(explicit, base).targets
