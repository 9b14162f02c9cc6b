"""A synchronous client of a labgrid coordinator (labgrid 25+: gRPC), for quantbench's lab places.

It wraps labgrid's own `labgrid.remote.client.ClientSession` (the object `labgrid-client` uses)
on a private event loop: the places and their resources as the coordinator publishes them,
acquire / release, reservations (tag filters, priorities) and a place's power port driven by
labgrid's power drivers. labgrid is imported when a `LabClient` is made, never at import time:
it is the optional `lab` extra.

Who holds a place: the coordinator records the client's `host/user` name. quantbench's name
is `<host>/<user>+qb-<pid>-<start>` (pid and the process start time in clock ticks, from
/proc), so a lock left by a run killed with SIGKILL can be told from a live run's: on the same
host, a holder whose process is gone (or whose pid now belongs to a younger process) is
provably dead (`holder_gone`).
"""
from __future__ import annotations

import asyncio
import getpass
import os
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

ENV_VAR = "LG_COORDINATOR"
DEFAULT_PORT = 20408
HOLDER = re.compile(r"^(?P<host>[^/]+)/(?P<user>.*)\+qb-(?P<pid>\d+)-(?P<start>\d+)$")
POWER_DRIVERS = {"NetworkPowerPort": "NetworkPowerDriver", "PDUDaemonPort": "PDUDaemonDriver"}


class LabError(Exception):
    """The coordinator cannot be used, or refused what was asked; the message says what to do."""


def _start_ticks(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def holder_name(pid: Optional[int] = None) -> str:
    """This process's name at the coordinator: `<host>/<user>+qb-<pid>-<start ticks>`."""
    pid = pid or os.getpid()
    host = os.environ.get("LG_HOSTNAME", socket.gethostname())
    user = os.environ.get("LG_USERNAME", getpass.getuser())
    return f"{host}/{user}+qb-{pid}-{_start_ticks(pid) or 0}"


def holder_gone(holder: str) -> bool:
    """True only when `holder` is a quantbench process of this host that no longer runs (its pid
    is gone or belongs to another process now). A holder on another host, or not quantbench's,
    is never judged gone."""
    m = HOLDER.match(holder or "")
    if not m or m["host"] != os.environ.get("LG_HOSTNAME", socket.gethostname()):
        return False
    return _start_ticks(int(m["pid"])) != int(m["start"])


def coordinator_address(configured: Optional[str] = None) -> str:
    """The inventory's address, else $LG_COORDINATOR; LabError when neither names one."""
    address = configured or os.environ.get(ENV_VAR, "")
    if not address:
        raise LabError(f"no labgrid coordinator: set `coordinator = \"HOST:PORT\"` in the inventory's [labgrid] table "
                       f"or the {ENV_VAR} environment variable")
    return address


@dataclass(frozen=True)
class PlaceState:
    """A place as the coordinator published it."""

    name: str
    tags: Mapping[str, str]
    acquired: Optional[str]  # holder `host/user`, None when free
    reservation: Optional[str]  # token of the reservation it is allocated to
    changed: float  # when it was last acquired/released (coordinator's clock)
    comment: str = ""
    resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # class -> {params, avail, acquired}

    @property
    def network_service(self) -> Optional[Mapping[str, Any]]:
        found = self.resources.get("NetworkService")
        return found["params"] if found else None

    @property
    def power_port(self) -> Optional[tuple[str, Mapping[str, Any]]]:
        for cls in POWER_DRIVERS:
            if cls in self.resources:
                return cls, self.resources[cls]["params"]
        return None

    def matches(self, tags: Mapping[str, str]) -> bool:
        return all(self.tags.get(k) == v for k, v in tags.items())


def _labgrid_pump_record(record) -> bool:
    """False for a record labgrid's client module logs on the root logger (its message pump logs a
    down coordinator with logging.error; quantbench says so itself, once, as a LabError)."""
    return not record.pathname.replace("\\", "/").endswith("labgrid/remote/client.py")


def _quiet_labgrid_pump() -> None:
    """Drop labgrid's own root-logger lines, and only those: the process's other logging is left as it was."""
    import logging

    root = logging.getLogger()
    if _labgrid_pump_record not in root.filters:
        root.addFilter(_labgrid_pump_record)


class LabClient:
    """One session with a coordinator; every call waits for its answer (`timeout_s` each)."""

    def __init__(self, address: str, timeout_s: float = 10.0) -> None:
        try:
            from labgrid.remote import client as lg_client
            from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2
        except ImportError as exc:
            raise LabError(f"labgrid is not installed ({exc}); install the lab extra: pip install 'quantbench[lab]'") from None
        self.address = address
        self.timeout_s = timeout_s
        self.holder = holder_name()
        self._pb2 = pb2
        self._loop = lg_client.ensure_event_loop()  # one loop per thread: grpc.aio does not mix loops
        host, user = self.holder.split("/", 1)

        class Session(lg_client.ClientSession):  # the coordinator records this name as the holder
            def gethostname(self):
                return host

            def getuser(self):
                return user

            def __attrs_post_init__(self):
                super().__attrs_post_init__()
                # a channel of its own: gRPC shares one connection between channels to the same
                # address, and the coordinator keys client sessions by connection (two sessions
                # of one process, e.g. a test's admin beside the run, would collide)
                import grpc

                self.channel = grpc.aio.insecure_channel(target=self.address, options=[
                    ("grpc.keepalive_time_ms", 7500), ("grpc.keepalive_timeout_ms", 10000),
                    ("grpc.http2.ping_timeout_ms", 10000), ("grpc.http2.max_pings_without_data", 0),
                    ("grpc.use_local_subchannel_pool", 1)])
                self.stub = lg_client.labgrid_coordinator_pb2_grpc.CoordinatorStub(self.channel)

        _quiet_labgrid_pump()
        address = lg_client.proxymanager.get_grpc_address(address, default_port=DEFAULT_PORT)
        self.session = Session(address, self._loop)
        try:
            self._run(self.session.start(), "connecting")
        except BaseException:
            self.close()
            raise

    def _run(self, coroutine, what: str):
        import grpc

        try:
            return self._loop.run_until_complete(asyncio.wait_for(coroutine, self.timeout_s))
        except asyncio.TimeoutError:
            raise LabError(f"labgrid coordinator {self.address} did not answer within {self.timeout_s:g} s ({what}); "
                           f"is labgrid-coordinator running there?") from None
        except grpc.aio.AioRpcError as exc:
            raise LabError(f"labgrid coordinator {self.address}: {exc.details()} ({what})") from None
        except Exception as exc:  # labgrid's ServerError: the stream to the coordinator broke
            if type(exc).__name__ in ("ServerError", "UserError"):
                raise LabError(f"labgrid coordinator {self.address} is not reachable ({what}: {exc}); is labgrid-coordinator "
                               f"running there (labgrid-coordinator -l HOST:PORT), and is {ENV_VAR} or the inventory's "
                               f"coordinator right?") from None
            raise

    def _sync(self) -> None:
        if self.session.stopping.is_set() or not self._run(self.session.sync_with_coordinator(), "sync"):
            raise LabError(f"labgrid coordinator {self.address} went away; is labgrid-coordinator still running?")

    def close(self) -> None:
        try:
            if getattr(self, "session", None) is not None and self.session.pump_task is not None:
                self._loop.run_until_complete(asyncio.wait_for(self.session.stop(), 5))
                self._loop.run_until_complete(asyncio.wait_for(self.session.close(), 5))
        except BaseException:  # noqa: BLE001 - closing must not hide what ended the run
            pass

    # -- what the coordinator offers ------------------------------------------------------------
    def places(self) -> dict[str, PlaceState]:
        self._sync()
        out = {}
        for name, place in self.session.places.items():
            resources = {}
            for exporter, groups in self.session.resources.items():
                for group_name, group in groups.items():
                    for resource_name, entry in group.items():
                        if not entry.data.get("cls"):  # deleted: its exporter is gone (labgrid keeps it, empty)
                            continue
                        if place.hasmatch((exporter, group_name, entry.cls, resource_name)):
                            resources.setdefault(entry.cls, {"params": dict(entry.args), "avail": entry.avail,
                                                             "acquired": entry.acquired, "extra": dict(entry.extra or {})})
            out[name] = PlaceState(name, dict(place.tags), place.acquired or None, place.reservation or None,
                                   float(place.changed or 0), place.comment or "", resources)
        return out

    # -- holding a place ----------------------------------------------------------------------
    def acquire(self, place: str) -> Optional[str]:
        """Acquire the place for this process: None when done, else why not (held, reserved for another)."""
        import grpc

        try:
            self._loop.run_until_complete(asyncio.wait_for(
                self.session.stub.AcquirePlace(self._pb2.AcquirePlaceRequest(placename=place)), self.timeout_s))
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED):
                return exc.details()
            raise LabError(f"labgrid coordinator {self.address}: acquiring {place}: {exc.details()}") from None
        except asyncio.TimeoutError:
            raise LabError(f"labgrid coordinator {self.address} did not answer within {self.timeout_s:g} s (acquiring {place})") from None
        self._sync()
        return None

    def release(self, place: str, holder: Optional[str] = None) -> None:
        """Release the place if `holder` (default: this process) still holds it."""
        self._run(self.session.stub.ReleasePlace(self._pb2.ReleasePlaceRequest(placename=place, fromuser=holder or self.holder)),
                  f"releasing {place}")

    def reserve(self, tags: Mapping[str, str], priority: float = 0.0) -> str:
        """A reservation for one place matching `tags` (`name` = a place's name); its token."""
        fltr = self._pb2.Reservation.Filter(filter=dict(tags))
        request = self._pb2.CreateReservationRequest(filters={"main": fltr}, prio=float(priority))
        return self._run(self.session.stub.CreateReservation(request), "reserving").reservation.token

    def allocated(self, token: str) -> Optional[str]:
        """The place the reservation was allocated (polling keeps it alive), None while it waits."""
        response = self._run(self.session.stub.PollReservation(self._pb2.PollReservationRequest(token=token)), "polling")
        return response.reservation.allocations.get("main") or None  # one filter group: one place

    def cancel(self, token: str) -> None:
        try:
            self._run(self.session.stub.CancelReservation(self._pb2.CancelReservationRequest(token=token)), "cancelling")
        except LabError:
            pass  # expired already: the coordinator drops an unpolled reservation within a minute

    # -- power ---------------------------------------------------------------------------------
    def power_cycle(self, place: PlaceState, delay_s: float = 2.0) -> None:
        """Off, `delay_s`, on through the place's power port with labgrid's own driver; LabError if it fails."""
        port = place.power_port
        if port is None:
            raise LabError(f"place {place.name} has no power port")
        cls, params = port
        from labgrid import Target
        from labgrid.factory import target_factory

        target = Target(f"quantbench-{place.name}")
        try:
            target_factory.make_resource(target, cls, cls, {k: v for k, v in params.items() if k != "extra"})
            driver = target_factory.make_driver(target, POWER_DRIVERS[cls], None, {"delay": float(delay_s)})
            target.activate(driver)
            driver.cycle()
        except Exception as exc:  # noqa: BLE001 - any backend error: the switch did not cycle
            raise LabError(f"power cycle of place {place.name} through its {cls} ({params.get('model', '')} "
                           f"{params.get('host', '')}) failed: {type(exc).__name__}: {exc}") from None
        finally:
            try:
                target.deactivate_all_drivers()
            except Exception:  # noqa: BLE001
                pass


def since(place: PlaceState, now: Optional[float] = None) -> str:
    """How long a place has been in its state, e.g. '3 min'."""
    seconds = max(0.0, (now or time.time()) - place.changed)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
