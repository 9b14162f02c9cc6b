"""A content-addressed cache on the device: `<workdir>/cache/<hash>/<files>`.

A bundle (the runner package, one artifact directory, one inputs file) is named by the
hash of its files' names and bytes. It is uploaded into `.tmp-<hash>-<random>/` and
renamed into place only when complete, so a directory named by a hash is always whole;
a bundle already there is not sent again, and a re-run uploads nothing.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from harness.artifacts import sha256_file

if TYPE_CHECKING:
    from targets.ssh_connection import SshConnection

_FILE_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, for this process


def file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = sha256_file(path)
    return _FILE_HASHES[key]


def bundle_hash(files: Mapping[str, Path]) -> str:
    """Hash of (relative name, content hash) over the bundle's files, in name order."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + file_sha256(files[name]).encode() + b"\n")
    return h.hexdigest()[:32]


def directory_files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(Path(root).rglob("*")) if p.is_file()}


@dataclass
class Shipped:
    """What one ensure() did."""

    remote_dir: str
    files: int = 0  # uploaded now (0 when the bundle was already there)
    bytes: int = 0


class RemoteCache:
    def __init__(self, conn: "SshConnection", root: str) -> None:
        self.conn = conn
        self.root = root  # absolute path of <workdir>/cache on the device
        self._present: set[str] = set()  # hashes known to be on the device (this connection's session)

    def ensure(self, files: Mapping[str, Path]) -> Shipped:
        """The bundle's directory on the device, uploading it first if it is not there."""
        digest = bundle_hash(files)
        final = f"{self.root}/{digest}"
        if digest in self._present or self.conn.is_dir(final):
            self._present.add(digest)
            return Shipped(final)
        tmp = f"{self.root}/.tmp-{digest}-{secrets.token_hex(4)}"
        self.conn.mkdir(tmp)
        shipped = Shipped(final)
        made = {""}
        for name in sorted(files):
            parent = os.path.dirname(name)
            parts = parent.split("/") if parent else []
            for depth in range(1, len(parts) + 1):
                sub = "/".join(parts[:depth])
                if sub not in made:
                    self.conn.mkdir(f"{tmp}/{sub}")
                    made.add(sub)
            shipped.bytes += self.conn.put(str(files[name]), f"{tmp}/{name}")
            shipped.files += 1
        try:
            self.conn.rename(tmp, final)
        except OSError:
            if not self.conn.is_dir(final):  # not a concurrent upload of the same bundle: a real failure
                raise
            self.conn.run(f"rm -rf -- {shlex.quote(tmp)}")  # another run put the identical bundle there first
        self._present.add(digest)
        return shipped
