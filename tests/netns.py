"""A test host of our own: a network namespace joined to this machine by a veth pair, whose
link can go silent (packets dropped, no FIN, no RST) the way a board's Wi-Fi does.

Names carry this process's pid (other people's tests share the machine). Addresses come from
198.18.0.0/15, the range set aside for benchmarking network devices (RFC 2544), one /30 per
pid. `cut()` takes the namespace's end of the veth down: the host keeps its route through its
own end, so the device's address is silently unreachable rather than sent to the default gateway.
Needs root and iproute2.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess

import pytest


def _ip(*args: str, netns: str = "") -> None:
    argv = ["ip"] + (["netns", "exec", netns, "ip"] if netns else []) + list(args)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")


def unavailable() -> str:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "no `ip` (iproute2)"
    return ""


class Namespace:
    def __init__(self) -> None:
        pid = os.getpid()
        self.name = f"qb-link-{pid}"
        self.host_if, self.ns_if = f"qbh{pid}", f"qbn{pid}"  # interface names: at most 15 characters
        base = int(ipaddress.IPv4Address("198.18.0.0")) + 4 * (pid % 32768)
        self.host_address = str(ipaddress.IPv4Address(base + 1))
        self.address = str(ipaddress.IPv4Address(base + 2))  # the device's

    def __enter__(self) -> "Namespace":
        reason = unavailable()
        if reason:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"{reason}; CI must run the link tests as root")
            pytest.skip(reason)
        self.delete()  # left over from a killed run of this pid
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("addr", "add", f"{self.address}/30", "dev", self.ns_if, netns=self.name)
            _ip("link", "set", "lo", "up", netns=self.name)
            _ip("link", "set", self.ns_if, "up", netns=self.name)
        except BaseException:
            self.delete()
            raise
        return self

    def cut(self) -> None:
        """The device's link goes silent."""
        _ip("link", "set", self.ns_if, "down", netns=self.name)

    def restore(self) -> None:
        _ip("link", "set", self.ns_if, "up", netns=self.name)

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)  # takes its veth end along
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=30)

    def __exit__(self, *exc) -> None:
        self.delete()
