"""Boards from a labgrid lab: places as ssh targets, held through the coordinator across runs.

A placement names one labgrid place, or a pool of places by tags:

    [labgrid]                          # defaults for every place (all optional)
    coordinator = "labhost:20408"      # else $LG_COORDINATOR
    identity_file = "~/.ssh/lab"       # any ssh field, and profile / python / threads / case_timeout_s
    workdir = "~/qb-{place}"           # {place}: the place's name (boards that share a home directory)
    wait_s = 1800                      # the longest a case waits for a place held by others
    priority = 0                       # of the reservation a waiting run holds (labgrid's prio)
    power_wait_s = 300                 # after a power cycle, how long to wait for SSH

    [targets.rpi5]
    kind = "labgrid"
    tags = { board = "rpi5", ram = "8g" }     # or: place = "rpi5-a"
    profile = "raspberry-pi-5"

or on the command line `--target=lab:rpi5-a` (a place) / `--target=lab:board=rpi5+ram=8g` (tags).
Each matching place becomes an ssh board (`TargetConfig` kind "ssh"): host, user and port from
the place's `NetworkService`, the rest from the inventory. A place without a NetworkService is
left out (and named); none left is an error before anything runs.

Holding a board (`acquire`): the run's own lease file first (targets/fleet.py: it orders the
xdist workers of one run), then the place is acquired at the coordinator, so another run (another
CI job, another host) never measures on it at the same time; released with the lease. When every
matching place is held elsewhere, the case waits behind a labgrid reservation with the pool's
tags (fair across runs, by priority and age) and says who holds what, up to `wait_s`; past that,
the placement's cases fail at once with that line (`LabBusy`). A place held by a quantbench
process of this host that no longer runs (killed with SIGKILL) is released on the spot and said
so; any other holder is reported with the command that clears it. A place whose exporter died
(the coordinator then has no NetworkService for it) is not acquired until it is published again:
the case waits as for a held place, up to `wait_s`, and the run's log says so when it is first
found; the case already running on it finishes (its board still answers over SSH).
"""
from __future__ import annotations

import atexit
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from targets.base import TargetConfig, TargetError

PREFIX = "lab:"
SPEC_FIELDS = ("coordinator", "wait_s", "priority", "power_wait_s", "place", "tags", "kind", "description")
BOARD_FIELDS = ("profile", "python", "threads", "case_timeout_s")  # TargetConfig fields a lab entry may set
DEFAULT_WAIT_S = 1800.0


@dataclass(frozen=True)
class LabSpec:
    """What a placement asks of the lab: a place by name, or any place with these tags."""

    coordinator: Optional[str] = None  # HOST:PORT; None: $LG_COORDINATOR
    place: Optional[str] = None
    tags: tuple[tuple[str, str], ...] = ()
    wait_s: float = DEFAULT_WAIT_S  # the longest a case waits for a place others hold
    priority: float = 0.0  # the reservation's priority while waiting
    power_wait_s: float = 300.0  # after a power cycle: how long SSH may take to come back
    board: Mapping[str, Any] = field(default_factory=dict)  # ssh fields and profile/python/threads for every place

    @property
    def filter(self) -> dict[str, str]:
        return {"name": self.place} if self.place else dict(self.tags)

    @property
    def wanted(self) -> str:
        return f"place {self.place}" if self.place else "places tagged " + ", ".join(f"{k}={v}" for k, v in self.tags)


def parse_spec(table: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> LabSpec:
    """An inventory entry (`kind = "labgrid"`) or a --target spelling, over the [labgrid] defaults."""
    merged = {**defaults, **{k: v for k, v in table.items() if k != "kind"}}
    place, tags = merged.pop("place", None), merged.pop("tags", None)
    if (place is None) == (tags is None):
        raise TargetError(f"{where}: a labgrid target names either `place = \"NAME\"` or `tags = {{ key = \"value\" }}`")
    if tags is not None and (not isinstance(tags, Mapping) or not tags
                             or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())):
        raise TargetError(f"{where}: `tags` must be a non-empty table of strings, e.g. tags = {{ board = \"rpi5\" }}")
    if place is not None and (not isinstance(place, str) or not place):
        raise TargetError(f"{where}: `place` must be a place's name")
    numbers = {}
    for name, default in (("wait_s", DEFAULT_WAIT_S), ("priority", 0.0), ("power_wait_s", 300.0)):
        value = merged.pop(name, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or (value < 0 and name != "priority"):
            raise TargetError(f"{where}: `{name}` must be a number{' of seconds' if name != 'priority' else ''}, not {value!r}")
        numbers[name] = float(value)
    coordinator = merged.pop("coordinator", None)
    merged.pop("description", None)
    from targets.ssh_config import FIELDS, OTHER_SETTINGS

    for key in merged:
        if key not in FIELDS and key not in OTHER_SETTINGS and key not in BOARD_FIELDS:
            raise TargetError(f"{where}: unknown field {key!r} for a labgrid target (place, tags, {', '.join(SPEC_FIELDS[:4])}, "
                              f"ssh fields, {', '.join(BOARD_FIELDS)})")
        if key in ("host", "port"):
            raise TargetError(f"{where}: `{key}` comes from the place's NetworkService, not the inventory")
    return LabSpec(coordinator, place, tuple(sorted(tags.items())) if tags else (), board=merged, **numbers)


def parse_spelling(entry: str, defaults: Mapping[str, Any]) -> LabSpec:
    """`lab:PLACE` or `lab:key=value+key=value`."""
    body = entry[len(PREFIX):]
    if not body:
        raise TargetError(f"--target {entry!r}: name a place (lab:rpi5-a) or tags (lab:board=rpi5+ram=8g)")
    if "=" not in body:
        return parse_spec({"place": body}, defaults, f"--target {entry}")
    pairs = [p.split("=", 1) for p in body.split("+")]
    if not all(len(p) == 2 and p[0] and p[1] for p in pairs):
        raise TargetError(f"--target {entry!r}: tags are key=value pairs joined by '+', e.g. lab:board=rpi5+ram=8g")
    return parse_spec({"tags": dict(pairs)}, defaults, f"--target {entry}")


# -- one client per process and coordinator -----------------------------------------------------
_CLIENTS: dict[str, Any] = {}
_HELD: dict[tuple[str, str], Any] = {}  # (address, place) -> client, what this process holds now


def client(spec: LabSpec):
    from targets.labgrid_client import LabClient, LabError, coordinator_address

    try:
        address = coordinator_address(spec.coordinator)
        if address not in _CLIENTS or _CLIENTS[address].session.stopping.is_set():
            _CLIENTS[address] = LabClient(address)
        return _CLIENTS[address]
    except LabError as exc:
        raise TargetError(str(exc)) from None


@atexit.register
def release_all() -> None:
    """Whatever this process still holds (an interrupted run), released; then the sessions closed."""
    for (address, place), lab in list(_HELD.items()):
        try:
            lab.release(place)
        except Exception:  # noqa: BLE001 - the coordinator may be gone; the lock then shows as stale
            pass
        _HELD.pop((address, place), None)
    for lab in list(_CLIENTS.values()):
        lab.close()
    _CLIENTS.clear()


def clear_command(address: str, place: str, holder: str) -> str:
    return f"labgrid-client -x {address} -p {place} release-from {holder}"


# -- places as boards ---------------------------------------------------------------------------
def boards(name: str, spec: LabSpec) -> tuple[list[TargetConfig], list[str]]:
    """The ssh boards of the places the spec matches, and a note per matching place left out
    (no NetworkService). TargetError when the coordinator is down or nothing usable matches."""
    from targets.labgrid_client import LabError

    lab = client(spec)
    try:
        places = lab.places()
    except LabError as exc:
        raise TargetError(str(exc)) from None
    wanted = spec.filter
    matching = [p for p in places.values() if (p.name == spec.place if spec.place else p.matches(wanted))]
    if not matching:
        known = "; ".join(f"{p.name} [{', '.join(f'{k}={v}' for k, v in sorted(p.tags.items())) or 'no tags'}]"
                          for p in sorted(places.values(), key=lambda p: p.name)) or "none"
        raise TargetError(f"{name}: no place of labgrid coordinator {lab.address} matches {spec.wanted} (places: {known})")
    found, left_out = [], []
    for place in sorted(matching, key=lambda p: p.name):
        service = place.network_service
        if not service:
            left_out.append(f"place {place.name} has no NetworkService resource (its exporter publishes none, or is not running)")
            continue
        settings = {k: v for k, v in spec.board.items() if k not in BOARD_FIELDS}
        if isinstance(settings.get("workdir"), str):  # boards that share a home (NFS, one test host): a directory each
            settings["workdir"] = settings["workdir"].replace("{place}", place.name)
        settings.update(host=service["address"], port=int(service.get("port") or 22), user=service["username"],
                        labgrid={"coordinator": lab.address, "place": place.name, "power": bool(place.power_port)})
        common = {k: v for k, v in spec.board.items() if k in BOARD_FIELDS}
        found.append(TargetConfig(name=name if spec.place else place.name, kind="ssh", settings=settings, **common))
    if not found:
        raise TargetError(f"{name}: {'; '.join(left_out)}; quantbench reaches a place's board over the SSH its NetworkService names")
    from targets.ssh_config import parse_ssh_settings

    for config in found:
        parse_ssh_settings(config.settings, f"{name} (labgrid place {config.settings['labgrid']['place']})")
    return found, left_out


def place_of(board: TargetConfig) -> Optional[str]:
    lab = board.settings.get("labgrid") if isinstance(board.settings, Mapping) else None
    return lab["place"] if lab else None


# -- holding a place ------------------------------------------------------------------------------
class LabBusy(TargetError):
    """Every matching place stayed held by others past the wait limit."""


@dataclass
class Held:
    """A place this process acquired at the coordinator."""

    address: str
    place: str
    holder: str
    lab: Any
    power_wait_s: float = 300.0
    log: Callable[[str], None] = lambda line: None

    def release(self) -> None:
        """Release at the coordinator; a coordinator that is gone is said in the run's log (never
        raised: it would hide the case's own outcome) with the command that clears the place."""
        from targets.labgrid_client import LabError

        try:
            self.lab.release(self.place)
        except LabError as exc:
            self.log(f"labgrid place {self.place} could not be released ({exc}); once the coordinator is back: "
                     f"{clear_command(self.address, self.place, self.holder)}")
        finally:
            _HELD.pop((self.address, self.place), None)

    def power_cycle(self, delay_s: float = 2.0) -> None:
        from targets.labgrid_client import LabError

        try:
            self.lab.power_cycle(self.lab.places()[self.place], delay_s)
        except (LabError, KeyError) as exc:
            raise TargetError(str(exc)) from None


_GAVE_UP: dict[str, str] = {}  # placement name -> the line it gave up with (later cases fail at once)
_UNPUBLISHED: set[tuple[str, str]] = set()  # (address, place) found without its NetworkService (said once)


def published(lab, state, spec: LabSpec, log: Callable[[str], None]) -> bool:
    """Whether the place's exporter still publishes its NetworkService. An exporter that died (or
    lost the coordinator) takes its resources with it: the place is not used until they are back
    (the board may be fine, but the lab no longer vouches for it, nor can power it), which the
    run's log says once, when it is first found so, and again when it is back."""
    key = (lab.address, state.name)
    if state.network_service:
        if key in _UNPUBLISHED:
            _UNPUBLISHED.discard(key)
            log(f"labgrid place {state.name}: its NetworkService is published again; using it")
        return True
    if key not in _UNPUBLISHED:
        _UNPUBLISHED.add(key)
        log(f"labgrid place {state.name}: no exporter publishes its NetworkService at coordinator {lab.address} any more "
            f"(its exporter stopped, or lost the coordinator); the case waits for another place, or for this one to be "
            f"published again, up to wait_s = {spec.wait_s:g} s")
    return False


def holders_line(spec: LabSpec, lab, places: Mapping[str, Any], names: Sequence[str]) -> str:
    from targets.labgrid_client import since

    parts = []
    for name in names:
        p = places.get(name)
        if p is None:
            continue
        if p.acquired:
            parts.append(f"{name} held by {p.acquired} for {since(p)}")
        elif p.reservation:
            parts.append(f"{name} reserved for another run")
        elif not p.network_service:
            parts.append(f"{name} not published (no exporter offers its NetworkService now)")
    return "; ".join(parts) or "none free"


def acquire(placement, board_lock: Callable[[TargetConfig], Any], prefer: Sequence[str],
            waiting: Callable[[float, str], None], log: Callable[[str], None], gone: Callable[[str], Optional[str]],
            poll_s: float = 0.5) -> tuple[TargetConfig, Any, Held]:
    """A board of the placement held both by this run (`board_lock(board)`: the run's lease file,
    None when another worker has it) and at the coordinator. Waits behind a reservation while
    others hold every matching place, up to the spec's wait_s (then LabBusy)."""
    from targets.labgrid_client import LabError, holder_gone

    spec = placement.lab
    if placement.name in _GAVE_UP:
        raise LabBusy(_GAVE_UP[placement.name])
    lab = client(spec)
    by_place = {place_of(b): b for b in placement.boards}
    order = sorted(placement.boards, key=lambda b: (b.name not in prefer, placement.boards.index(b)))
    started = time.monotonic()
    token = None
    try:
        while True:
            try:
                places = lab.places()
                for p in places.values():  # a SIGKILLed quantbench run of this host: provably gone
                    if p.name in by_place and p.acquired and holder_gone(p.acquired):
                        lab.release(p.name, p.acquired)
                        log(f"labgrid place {p.name}: released the acquisition of {p.acquired}, a quantbench process "
                            f"of this host that no longer runs (killed?)")
                        places = lab.places()
                allocated = lab.allocated(token) if token else None
                candidates = [by_place[allocated]] if allocated in by_place else [] if token else order
                for board in candidates:
                    place = place_of(board)
                    state = places.get(place)
                    if state is None or gone(board.name) or (not allocated and (state.acquired or state.reservation)):
                        continue
                    if not published(lab, state, spec, log):
                        continue
                    lock = board_lock(board)
                    if lock is None:
                        continue
                    refused = lab.acquire(place)
                    if refused is None:
                        held = Held(lab.address, place, lab.holder, lab, spec.power_wait_s, log)
                        _HELD[(lab.address, place)] = lab
                        return board, lock, held
                    lock.release()
                if allocated and allocated in by_place and (gone(by_place[allocated].name) or not (
                        places.get(allocated) and places[allocated].network_service)):
                    lab.cancel(token)  # labgrid gave us a board this run found dead, or no exporter publishes: look again
                    token = None
                elif token is None and all((places.get(place_of(b)) is None or places[place_of(b)].acquired
                                            or places[place_of(b)].reservation) for b in order if not gone(b.name)):
                    token = lab.reserve(spec.filter, spec.priority)
            except LabError as exc:
                raise TargetError(str(exc)) from None
            waited = time.monotonic() - started
            names = [place_of(b) for b in order]
            if waited >= spec.wait_s:
                held = [(n, places[n].acquired) for n in names if n in places and places[n].acquired]
                clear = "; if a holder is a run that was killed, clear it with: " + " ; ".join(
                    clear_command(lab.address, n, h) for n, h in held) if held else ""
                line = (f"{placement.name}: no place free after waiting {waited:.0f} s (the limit, wait_s = {spec.wait_s:g}): "
                        f"{holders_line(spec, lab, places, names)}{clear}")
                _GAVE_UP[placement.name] = line
                raise LabBusy(line)
            waiting(waited, holders_line(spec, lab, places, names))
            time.sleep(poll_s)
    finally:
        if token:
            try:
                lab.cancel(token)
            except Exception:  # noqa: BLE001
                pass
