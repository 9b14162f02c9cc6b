"""A real labgrid lab on loopback, for tests and benchmarks: `labgrid-coordinator` and one
`labgrid-exporter` (labgrid's own console scripts, from the `lab` extra) on free ports, boards
published as places with tags, and a small HTTP power switch that labgrid's `simplerest` power
driver drives (off = the board's sshd is killed, on = it is started again on the same port with
the same keys, like a board that boots).

    lab = Lab.start(tmp_path)                    # coordinator
    lab.export({"dev-a": Board(sshd, tags={"board": "shelf"}, power=True), ...})
    ...
    lab.stop()
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Mapping, Optional

import pytest

from harness.testing.processes import free_port


def bin_path(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not os.path.exists(found):
        pytest.skip(f"{name} not found: labgrid is not installed (pip install 'quantbench[lab]')")
    return found


def _wait(predicate, timeout_s: float, what: str, proc: Optional[subprocess.Popen] = None, log: Optional[Path] = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: exited with {proc.returncode}: {log.read_text()[-2000:] if log else ''}")
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not ready after {timeout_s:g} s: {log.read_text()[-2000:] if log and log.exists() else ''}")


class PowerSwitch:
    """An HTTP power switch on loopback: GET /<board>/0 turns a board off, /<board>/1 on,
    /<board> reads 1 or 0 (labgrid's simplerest protocol). `boards`: name -> anything with
    stop() and start() (an Sshd, the emulated Pi's Device)."""

    def __init__(self, boards: Mapping) -> None:
        self.boards = dict(boards)
        self.on = {name: True for name in self.boards}
        self.events: list[tuple[float, str, str]] = []  # (time, board, "on"/"off")
        switch = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                parts = [p for p in self.path.split("/") if p]
                sshd = switch.boards.get(parts[0]) if parts else None
                if sshd is None:
                    self.send_error(404, "no such board")
                    return
                if len(parts) > 1 and parts[1] in ("0", "1"):
                    if parts[1] == "0":
                        sshd.stop()
                    elif not switch.on[parts[0]]:
                        sshd.start()
                    switch.on[parts[0]] = parts[1] == "1"
                    switch.events.append((time.time(), parts[0], "on" if parts[1] == "1" else "off"))
                body = b"1" if switch.on[parts[0]] else b"0"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, board: str) -> str:
        return f"http://127.0.0.1:{self.port}/{board}/{{value}}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Board:
    """A board to publish: an sshd (harness.testing.sshd, or anything with address, port, stop()
    and start()), the place's tags, whether it has a power port; `username`, `address` and `port`
    override what its NetworkService says (a proxy in front of it, another account)."""

    sshd: object
    tags: Mapping[str, str] = field(default_factory=dict)
    power: bool = False
    username: Optional[str] = None
    address: Optional[str] = None
    port: Optional[int] = None


@dataclass
class Lab:
    dir: Path
    port: int
    coordinator: subprocess.Popen
    exporter: Optional[subprocess.Popen] = None
    switch: Optional[PowerSwitch] = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, directory: Path) -> "Lab":
        directory.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = directory / "coordinator.log"
        proc = subprocess.Popen([bin_path("labgrid-coordinator"), "-l", f"127.0.0.1:{port}"], cwd=directory,
                                stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        lab = cls(directory, port, proc)
        try:
            _wait(lambda: "listening on" in log.read_text(), 60, "labgrid-coordinator", proc, log)
        except BaseException:
            lab.stop()
            raise
        return lab

    def admin(self, *requests) -> None:
        """Send coordinator requests (AddPlace, AddPlaceMatch, SetPlaceTags, ...) as (method, request) pairs."""
        from targets.labgrid_client import LabClient

        client = LabClient(self.address)
        try:
            for method, request in requests:
                client._run(getattr(client.session.stub, method)(request), method)
        finally:
            client.close()

    def export(self, boards: Mapping[str, Board], name: str = "shelf-host") -> None:
        """Start an exporter publishing each board (NetworkService, and a NetworkPowerPort where
        `power`), and make a place per board with its tags."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        powered = {n: b.sshd for n, b in boards.items() if b.power}
        if powered:
            self.switch = PowerSwitch(powered)
        resources = {}
        import getpass

        for board, spec in boards.items():
            group = {"NetworkService": {"address": spec.address or spec.sshd.address, "username": spec.username or getpass.getuser(),
                                        "port": spec.port or spec.sshd.port}}
            if spec.power:
                group["NetworkPowerPort"] = {"model": "simplerest", "host": self.switch.url(board), "index": 0}
            resources[board] = group
        config = self.dir / f"exporter-{name}.yaml"
        config.write_text(json.dumps(resources, indent=1))  # YAML reads JSON
        log = self.dir / f"exporter-{name}.log"
        self.exporter = subprocess.Popen([bin_path("labgrid-exporter"), "-c", self.address, "-n", name, "--hostname", "127.0.0.1",
                                          str(config)], cwd=self.dir, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                         start_new_session=True)
        requests = []
        for board, spec in boards.items():
            requests += [("AddPlace", pb2.AddPlaceRequest(name=board)),
                         ("AddPlaceMatch", pb2.AddPlaceMatchRequest(placename=board, pattern=f"{name}/{board}/*")),
                         ("SetPlaceTags", pb2.SetPlaceTagsRequest(placename=board, tags=dict(spec.tags)))]
        self.admin(*requests)
        _wait(lambda: self._published(boards), 60, "labgrid-exporter", self.exporter, log)

    def _published(self, boards) -> bool:
        from targets.labgrid_client import LabClient

        client = LabClient(self.address)
        try:
            places = client.places()
        finally:
            client.close()
        return all(b in places and places[b].network_service for b in boards)

    def places(self):
        from targets.labgrid_client import LabClient

        client = LabClient(self.address)
        try:
            return client.places()
        finally:
            client.close()

    def kill_exporter(self) -> None:
        """The exporter dies (SIGKILL, as a crash or its host going down): the coordinator sees its
        stream break and drops the resources it published."""
        if self.exporter is not None and self.exporter.poll() is None:
            self.exporter.kill()
            self.exporter.wait()

    def stop_exporter(self) -> None:
        if self.exporter is not None and self.exporter.poll() is None:
            self.exporter.terminate()
            try:
                self.exporter.wait(10)
            except subprocess.TimeoutExpired:
                self.exporter.kill()
                self.exporter.wait()

    def stop(self) -> None:
        self.stop_exporter()
        if self.coordinator.poll() is None:
            self.coordinator.terminate()
            try:
                self.coordinator.wait(10)
            except subprocess.TimeoutExpired:
                self.coordinator.kill()
                self.coordinator.wait()
        if self.switch is not None:
            self.switch.close()
