"""Small process and socket helpers for test hosts (sshd on loopback, the emulated Pi).

Standard library only, Python 3.8+: scripts/emulated_pi.py loads this file by its path under the
system python3 (run as root, where quantbench is not installed)."""
from __future__ import annotations

import os
import socket
from typing import Dict, List


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at `address` right now."""
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def descendants(pid: int) -> List[int]:
    """Every descendant of `pid` (children, grandchildren, ...), from /proc."""
    parents: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
