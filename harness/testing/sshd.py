"""A real OpenSSH server on loopback as an ssh target's device (for the ssh target's tests and
benchmarks), and a TCP proxy of our own between harness and server to cut the link or make it
go silent.

The server runs Debian's /usr/sbin/sshd (openssh-server, in requirements/debian.txt) with a
generated host key and user key, as the current user, listening on 127.0.0.1 only. Its
"device" is this machine: the runner runs with whatever Python the target names.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from harness.testing.processes import descendants as _children  # every descendant of a pid (from /proc)
from harness.testing.processes import free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "quantbench-test", "-f", str(path)], check=True)
    return path


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


@dataclass
class Sshd:
    dir: Path
    port: int
    host_key: Path
    user_key: Path
    known_hosts: Path  # holds this server's host key
    address: str = "127.0.0.1"
    netns: str = ""  # the network namespace sshd runs in ("" = the host's)
    proc: Optional[subprocess.Popen] = None
    orphans: list[int] = field(default_factory=list)  # sessions' processes left running by kill()

    @property
    def log(self) -> str:
        path = self.dir / "sshd.log"
        return path.read_text() if path.exists() else ""

    def target(self, **fields) -> dict:
        """An inventory table for an ssh target on this server (fields override)."""
        table = {"kind": "ssh", "host": self.address, "port": self.port, "user": _user(), "identity_file": str(self.user_key),
                 "known_hosts": str(self.known_hosts), "ssh_config": "", "connect_timeout_s": 5.0, "command_timeout_s": 20.0,
                 "keepalive_s": 1.0, "retries": 2, "backoff_s": 0.2, "reconnect_window_s": 0.0}  # exactly 2 attempts
        table.update(fields)
        return table

    def start(self) -> "Sshd":
        config = self.dir / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", f"ListenAddress {self.address}", f"HostKey {self.host_key}", f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}", "StrictModes no", "UsePAM no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp", "AllowTcpForwarding yes",
            "MaxStartups 50", "MaxSessions 50", "LogLevel VERBOSE", "",
        ]))
        netns = ["ip", "netns", "exec", self.netns] if self.netns else []  # ip execs sshd: the pid stays sshd's
        self.proc = subprocess.Popen(netns + [SSHD, "-D", "-f", str(config), "-E", str(self.dir / "sshd.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log}")
            try:
                with socket.create_connection((self.address, self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-2.0"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not answer on {self.address}:{self.port}: {self.log}")

    def kill(self) -> None:
        """SIGKILL the server and every sshd process serving a connection, as if it crashed.
        Processes the sessions started (a runner) are left running, as on a real device."""
        if self.proc is None:
            return
        descendants = _children(self.proc.pid)
        sshds = [self.proc.pid] + [p for p in descendants if _comm(p) == "sshd"]
        self.orphans += [p for p in descendants if p not in sshds]
        for pid in sshds:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.orphans += _children(self.proc.pid)
        self.kill()
        for pid in self.orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _user() -> str:
    import getpass

    return getpass.getuser()


def make_sshd(directory: Path, address: str = "127.0.0.1", netns: str = "") -> Sshd:
    if not os.path.exists(SSHD):
        pytest.fail("sshd not found: install Debian's openssh-server (scripts/test.sh installs requirements/debian.txt)")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    directory.mkdir(parents=True, exist_ok=True)
    host_key = keygen(directory / "host_ed25519")
    user_key = keygen(directory / "user_ed25519")
    shutil.copy(user_key.with_suffix(".pub"), directory / "authorized_keys")
    port = free_port()  # free on the host's loopback; a namespace of our own has no other listeners
    known_hosts = directory / "known_hosts"
    public = host_key.with_suffix(".pub").read_text().split()
    known_hosts.write_text(f"[{address}]:{port} {public[0]} {public[1]}\n")
    return Sshd(directory, port, host_key, user_key, known_hosts, address, netns).start()


class Proxy:
    """127.0.0.1:<port> -> 127.0.0.1:<upstream>. cut() drops every open connection (new ones
    still pass); freeze() stops forwarding anything, old or new, like a device that hangs."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self.closed.is_set():
                if self.frozen.is_set():  # hold everything: the other side sees silence, not a close
                    time.sleep(0.05)
                    continue
                ready, _, _ = select.select([a, b], [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):  # ValueError: a socket cut() closed while this pump was frozen
            return
        finally:
            if not self.frozen.is_set():
                for sock in (a, b):
                    try:
                        sock.close()
                    except OSError:
                        pass

    def cut(self) -> None:
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self.closed.set()
        self.frozen.clear()
        self.listener.close()
        self.cut()


def _toml(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    import json

    return json.dumps(value)  # strings, numbers and booleans read the same in TOML


def inventory_toml(targets: dict) -> str:
    """An inventory file's text from {target name: table}."""
    return "".join(f"[targets.{_toml(name)}]\n" + "".join(f"{key} = {_toml(v)}\n" for key, v in table.items()) + "\n"
                   for name, table in targets.items())
