"""`quantbench targets`: list the inventory (targets and pools, and the places of a labgrid
coordinator: targets/labgrid_listing.py); `targets check NAME`: connect and print what a user
needs before a long run (`check pool:NAME` checks every board of the pool and says which are
usable; `check lab:...` each matching place, acquired for the check); `targets clean NAME`:
empty an ssh device's upload cache.
Registered in harness.cli.COMMANDS."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

from targets import TargetConfig, TargetError
from targets.fleet import POOL_PREFIX, parse_placements
from targets.inventory import Inventory, Pool, load_fleet

ACTIONS = ("list", "check", "clean")


def add_targets(sub) -> None:
    p = sub.add_parser("targets", help="list targets and pools; `check NAME` connects and reports the device "
                                       "(`check pool:NAME`: every board of a pool); `clean NAME` empties its cache")
    p.add_argument("action", nargs="?", default="list", choices=ACTIONS)
    p.add_argument("name", nargs="?", help="target name, or pool:NAME for every board of a pool (for check and clean)")
    p.add_argument("--inventory", default=None, help="inventory file (default: $QUANTBENCH_INVENTORY or ./targets.toml)")
    p.add_argument("--cache-dir", default=None, help="host cache (default: $QUANTBENCH_CACHE or .cache/quantbench)")
    p.add_argument("--json", action="store_true", help="check: print the facts as JSON")


def _where(config: TargetConfig) -> str:
    if config.kind != "ssh":
        return "this machine"
    s = config.settings
    where = f"{s.get('user') + '@' if s.get('user') else ''}{s['host']}{':' + str(s['port']) if s.get('port') else ''}"
    return where + (f" via {s['proxy_jump']}" if s.get("proxy_jump") else "")


def _columns(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)


def list_targets(inventory: Mapping[str, TargetConfig], pools: Mapping[str, Pool] = {}) -> str:
    rows = [("name", "kind", "where", "profile", "python", "workdir")]
    for name, c in sorted(inventory.items()):
        rows.append((name, c.kind, _where(c), c.profile, c.python or ("python3" if c.kind == "ssh" else sys.executable),
                     c.settings.get("workdir", "~/.cache/quantbench") if c.kind == "ssh" else "-"))
    text = _columns(rows)
    if pools:
        rows = [("pool", "boards", "kind/profile", "description")]
        for name, pool in sorted(pools.items()):
            first = inventory[pool.targets[0]]
            rows.append((f"{POOL_PREFIX}{name}", ", ".join(pool.targets), f"{first.kind}/{first.profile}", pool.description or "-"))
        text += "\n\n" + _columns(rows) + "\n(--target=pool:NAME runs each case once, on whichever board of the pool is free)"
    return text


def _cache_dir(args: argparse.Namespace) -> Path:
    from harness import settings

    return settings.cache_dir(args.cache_dir)


def local_facts(config: TargetConfig, cache_dir: Path) -> dict:
    """runner.facts with the target's Python on this machine (local and cuda kinds)."""
    from harness.runner_bundle import stage_runner
    from targets.local import runner_env

    python = config.python or sys.executable
    proc = subprocess.run([python, "-m", "runner.facts", "--workdir", str(cache_dir), "--profile", config.profile,
                           "--settings", json.dumps(dict(config.settings.get("sensors", {})))],
                          env=runner_env(stage_runner(cache_dir / "runner")), capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise TargetError(f"target {config.name}: `{python} -m runner.facts` failed: {(proc.stdout + proc.stderr).strip()[-400:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def device_facts(config: TargetConfig, cache_dir: Path) -> dict:
    if config.kind != "ssh":
        return local_facts(config, cache_dir)
    from targets.ssh import SshTarget

    target = SshTarget(config, cache_dir)
    try:
        facts = target.facts()
        facts["ssh"] = str(target.conn)
        return facts
    finally:
        target.close()


def executorch_line(facts: Mapping[str, Any]) -> str:
    """The ExecuTorch runtime the runner uses on the device and the program formats it reads."""
    if "executorch" not in facts:
        return "not reported"
    found = facts.get("executorch") or {}
    if not found:
        return "none (pip install executorch, or executorch-numpy-runtime on Python >= 3.12)"
    others = [f"{o['runtime']} {o['version']}" for o in found.get("installed") or [] if o["runtime"] != found["runtime"]]
    return (f"{found['runtime']} {found['version']} (ExecuTorch {found.get('executorch_version') or '?'}), reads programs "
            f"{', '.join(found.get('programs') or []) or 'of an unknown format'}"
            + (f"; also installed: {', '.join(others)}" if others else ""))


def format_facts(config: TargetConfig, facts: Mapping[str, Any]) -> str:
    runtimes = ", ".join(f"{name} {version}" for name, version in facts.get("runtimes", {}).items())
    memory = facts.get("memory") or {}
    sensors = facts.get("sensors") or {}
    lines = [
        ("target", f"{config.name} ({config.kind}{', ' + facts['ssh'] if facts.get('ssh') else ''}), profile {config.profile}"),
        ("device", f"{facts.get('device_model') or facts.get('cpu_model')} ({facts.get('machine')}), host {facts.get('host')}"),
        ("cores", f"{facts.get('physical_cores')} physical, {facts.get('logical_cores')} logical"),
        ("os", f"{facts['os_release']}, {facts.get('os')}" if facts.get("os_release") else facts.get("os")),
        ("python", f"{facts.get('python')} {facts.get('python_version')}"),
        ("runtimes", runtimes or "none found"),
        ("executorch", executorch_line(facts)),
        ("footprint", ", ".join(f"{name} {mb:g} MB" for name, mb in (facts.get("footprint_mb") or {}).items())
         or "not reported"),
        ("memory", f"{memory.get('available_mb', '?')} MB available of {memory.get('total_mb', '?')} MB"),
        ("disk", f"{facts.get('free_disk_mb')} MB free in {facts.get('workdir')}"),
        ("power", "; ".join(sensors.get("power") or []) or f"none: {sensors.get('power_none')}"),
        ("probes", ", ".join(sensors.get("probes") or []) or "none"),
        ("governor", ", ".join(facts.get("governors") or []) or "not reported (no cpufreq)"),
    ]
    gpu = facts.get("gpu")
    if isinstance(gpu, Mapping):  # targets with a GPU profile
        lines.append(("gpu", f"{gpu.get('name')}, compute capability {gpu.get('compute_capability')} (from {gpu.get('source')})"
                      if gpu.get("compute_capability") else f"unknown: {gpu.get('error')}"))
    from harness.compat import skew_lines

    lines += [("formats", line) for line in skew_lines(facts, config.name)]  # version skew: what loads there
    return "\n".join(f"  {key:<9} {value}" for key, value in lines)


def check_boards(boards: list[TargetConfig], cache_dir: Path) -> dict[str, tuple[Optional[dict], str]]:
    """Check boards at once (each connects on its own): name -> (facts, '') or (None, why not)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(config: TargetConfig) -> tuple[Optional[dict], str]:
        try:
            return device_facts(config, cache_dir), ""
        except TargetError as exc:
            return None, " ".join(str(exc).split())

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(boards)))) as pool:
        return dict(zip([b.name for b in boards], pool.map(one, boards)))


def check_pool(name: str, boards: list[TargetConfig], cache_dir: Path, as_json: bool, lab=None) -> int:
    if lab is not None:  # labgrid places: each acquired at the coordinator while it is checked
        from targets.labgrid_listing import check_places

        results = check_places(boards, lab, lambda board: device_facts(board, cache_dir))
    else:
        results = check_boards(boards, cache_dir)
    if as_json:
        print(json.dumps({b: {"usable": facts is not None, "facts": facts, "reason": why or None}
                          for b, (facts, why) in results.items()}, indent=1))
    else:
        for board in boards:
            facts, why = results[board.name]
            print(f"{board.name}: {'usable' if facts is not None else 'NOT usable: ' + why}")
            if facts is not None:
                print(format_facts(board, facts))
        usable = [b for b, (facts, _) in results.items() if facts is not None]
        print(f"pool {name}: {len(usable)} of {len(boards)} board(s) usable"
              + (f" ({', '.join(usable)})" if usable and len(usable) < len(boards) else ""))
    return 0 if all(facts is not None for facts, _ in results.values()) else 1


def cmd_targets(args: argparse.Namespace, rest: list[str]) -> int:
    try:
        fleet: Inventory = load_fleet(args.inventory)
    except TargetError as exc:
        print(f"quantbench targets: {exc}", file=sys.stderr)
        return 2
    inventory = fleet.targets
    if args.action == "list":
        print(list_targets(inventory, fleet.pools))
        from targets.labgrid_listing import coordinators

        if coordinators(fleet.labs, fleet.lab_defaults):  # a labgrid lab in the inventory or $LG_COORDINATOR
            from targets.labgrid_listing import list_places

            text, ok = list_places(fleet.labs, fleet.lab_defaults)
            print("\n" + text)
            return 0 if ok else 1
        return 0
    if not args.name:
        print(f"quantbench targets {args.action}: name a target or pool:NAME; known: {', '.join(sorted(inventory))}"
              + (f"; pools: {', '.join(POOL_PREFIX + p for p in sorted(fleet.pools))}" if fleet.pools else ""), file=sys.stderr)
        return 2
    if "," in args.name:
        print(f"quantbench targets {args.action}: one target or pool at a time, not {args.name!r}", file=sys.stderr)
        return 2
    try:
        (placement,) = parse_placements(args.name, fleet)
    except TargetError as exc:
        print(f"quantbench targets {args.action}: {exc}", file=sys.stderr)
        return 2
    if placement.pool or (placement.lab and args.action == "check"):
        if args.action == "check":
            return check_pool(placement.name, list(placement.boards), _cache_dir(args), args.json, placement.lab)
        return max(clean_target(board, args) for board in placement.boards)
    config = placement.boards[0]
    try:
        if args.action == "check":
            facts = device_facts(config, _cache_dir(args))
            print(json.dumps(facts, indent=1) if args.json else format_facts(config, facts))
            return 0
        return clean_target(config, args)
    except TargetError as exc:
        print(f"quantbench targets {args.action}: {exc}", file=sys.stderr)
        return 1


def clean_target(config: TargetConfig, args: argparse.Namespace) -> int:
    if config.kind != "ssh":
        print(f"target {config.name} runs on this machine from {_cache_dir(args)}: nothing to clean on a device")
        return 0
    from targets.ssh import SshTarget

    try:
        target = SshTarget(config, _cache_dir(args))
        try:
            files, size = target.clean()
            print(f"target {config.name}: removed {files} file(s), {size / 1e6:.1f} MB, from {target.conn.endpoint}:{target.workdir} (cache/ and jobs/)")
        finally:
            target.close()
    except TargetError as exc:
        print(f"quantbench targets clean: {exc}", file=sys.stderr)
        return 1
    return 0


COMMANDS = {
    "targets": (add_targets, cmd_targets),
}
