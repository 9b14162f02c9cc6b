"""What `quantbench targets` says about a labgrid lab: the places each coordinator offers
(tags, free / reserved / held by whom and for how long, the SSH its NetworkService names, a power
port), and `targets check` on places (each acquired for the check, so a run measuring there is
never disturbed; a held place is reported, not checked)."""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Optional

from targets.base import TargetConfig, TargetError


def coordinators(labs: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """Every coordinator the inventory names (its [labgrid] table, its labgrid entries), else $LG_COORDINATOR."""
    from targets.labgrid_client import ENV_VAR

    found = [defaults.get("coordinator")] + [spec.coordinator for spec in labs.values()]
    if any(spec.coordinator is None for spec in labs.values()) or not any(found):
        found.append(os.environ.get(ENV_VAR))
    return list(dict.fromkeys(a for a in found if a))


def state(place, now: Optional[float] = None) -> str:
    from targets.labgrid_client import holder_gone, since

    if place.acquired:
        stale = " (stale: that quantbench process no longer runs)" if holder_gone(place.acquired) else ""
        return f"held by {place.acquired} for {since(place, now)}{stale}"
    return "reserved" if place.reservation else "free"


def list_places(labs: Mapping[str, Any], defaults: Mapping[str, Any]) -> tuple[str, bool]:
    """The places of every coordinator in force, and whether each answered."""
    from targets.labgrid_client import LabClient, LabError

    blocks, ok = [], True
    for address in coordinators(labs, defaults):
        try:
            lab = LabClient(address)
            try:
                places = lab.places()
            finally:
                lab.close()
        except LabError as exc:
            blocks.append(str(exc))  # names the coordinator
            ok = False
            continue
        rows = [("place", "tags", "state", "ssh", "power", "inventory")]
        for name, p in sorted(places.items()):
            service = p.network_service
            ssh = f"{service['username']}@{service['address']}:{service.get('port', 22)}" if service else "no NetworkService"
            entries = [n for n, spec in labs.items() if (spec.place == name if spec.place else p.matches(dict(spec.tags)))]
            rows.append((name, ", ".join(f"{k}={v}" for k, v in sorted(p.tags.items())) or "-", state(p), ssh,
                         p.power_port[0] if p.power_port else "-", ", ".join(entries) or "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        table = "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)
        blocks.append(f"labgrid {address}: {len(places)} place(s)\n{table}" if places else f"labgrid {address}: no places")
    if blocks:
        blocks.append("(--target=lab:PLACE, --target=lab:key=value+key=value, or an inventory entry of kind \"labgrid\")")
    return "\n".join(blocks), ok


def check_places(boards: list[TargetConfig], spec, facts_of: Callable[[TargetConfig], dict]) -> dict[str, tuple[Optional[dict], str]]:
    """Each place acquired for its check and released after; name -> (facts, '') or (None, why not)."""
    from targets.labgrid_client import LabError
    from targets.labgrid_place import client, place_of

    lab = client(spec)
    results = {}
    for board in boards:
        place = place_of(board)
        try:
            refused = lab.acquire(place)
        except LabError as exc:
            results[board.name] = (None, str(exc))
            continue
        if refused:
            current = lab.places().get(place)
            results[board.name] = (None, f"labgrid place {place} not checked: {state(current) if current else refused}")
            continue
        try:
            results[board.name] = (facts_of(board), "")
        except TargetError as exc:
            results[board.name] = (None, " ".join(str(exc).split()))
        finally:
            lab.release(place)
    return results
