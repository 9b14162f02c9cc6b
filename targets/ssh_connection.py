"""One SSH connection to a device (through its jump hosts), with host keys checked against
known_hosts, keepalives, and a timeout on every step.

Errors come in three kinds, because the target reacts to each differently (targets.ssh_errors):
  - TargetError: retrying cannot help (unknown or changed host key, authentication refused,
    a command that fails on the device). The message says what to do.
  - Unreachable: connecting failed (refused, timed out, no SSH banner); worth retrying.
  - ConnectionLost: an established connection broke or stopped answering mid-operation.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import shlex
import socket
import stat
from typing import Iterator, Optional

import paramiko

from targets.base import TargetError
from targets.ssh_config import Endpoint, SshSettings, resolve
from targets.ssh_errors import ConnectionLost, Unreachable


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint, as `ssh-keygen -lf` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class UnknownHostKey(Exception):
    def __init__(self, name: str, key: paramiko.PKey) -> None:
        super().__init__(name)
        self.name, self.key = name, key


class _Refuse(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(hostname, key)


class _RecordFirstUse(paramiko.MissingHostKeyPolicy):
    """trust_on_first_use: append the key to known_hosts, as `ssh -o StrictHostKeyChecking=accept-new` does."""

    def __init__(self, known_hosts: str) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        os.makedirs(os.path.dirname(self.known_hosts) or ".", mode=0o700, exist_ok=True)
        fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class SshConnection:
    """A connected paramiko client for one target; `connect()` again after a loss."""

    def __init__(self, target_name: str, settings: SshSettings) -> None:
        self.target_name = target_name
        self.settings = settings
        self.endpoint, self.jumps = resolve(settings)
        self.known_hosts = os.path.expanduser(settings.known_hosts)
        self._clients: list[paramiko.SSHClient] = []
        self._sftp: Optional[paramiko.SFTPClient] = None
        self.home: Optional[str] = None

    def __str__(self) -> str:
        via = f" via {', '.join(str(j) for j in self.jumps)}" if self.jumps else ""
        return f"{self.endpoint}{via}"

    # -- connecting ------------------------------------------------------------------------
    def _client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if os.path.isfile("/etc/ssh/ssh_known_hosts"):
            client.load_system_host_keys("/etc/ssh/ssh_known_hosts")
        if os.path.isfile(self.known_hosts):
            client.load_host_keys(self.known_hosts)
        client.set_missing_host_key_policy(_RecordFirstUse(self.known_hosts) if self.settings.trust_on_first_use else _Refuse())
        return client

    def _open(self, hop: Endpoint, sock=None) -> paramiko.SSHClient:
        client = self._client()
        timeout = self.settings.connect_timeout_s
        try:
            client.connect(hop.hostname, hop.port, username=hop.user, key_filename=list(hop.identity_files) or None,
                           look_for_keys=not hop.identity_files, allow_agent=True, sock=sock, timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout)
        except UnknownHostKey as exc:
            client.close()
            raise TargetError(self._unknown_key(hop, exc.key)) from None
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise TargetError(self._changed_key(hop, exc.key, exc.expected_key)) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            keys = ", ".join(hop.identity_files) or "the SSH agent and ~/.ssh/id_*"
            raise TargetError(f"target {self.target_name}: {hop} refused our key ({keys}): {exc}. Check `user` and "
                              f"`identity_file` in the inventory, and that the public key is in the device's "
                              f"~/.ssh/authorized_keys (try `ssh -p {hop.port} {hop.user}@{hop.hostname}`)") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            raise Unreachable(f"cannot connect to {hop}: {exc or type(exc).__name__}") from None
        transport = client.get_transport()
        if self.settings.keepalive_s:
            transport.set_keepalive(max(1, int(self.settings.keepalive_s)))
        return client

    def connect(self) -> None:
        """Connect through every jump host to the device (closing any previous connection)."""
        self.close()
        sock = None
        for hop in self.jumps + (self.endpoint,):
            if self._clients:
                try:
                    sock = self._clients[-1].get_transport().open_channel(
                        "direct-tcpip", (hop.hostname, hop.port), ("127.0.0.1", 0), timeout=self.settings.connect_timeout_s)
                except (OSError, EOFError, paramiko.SSHException) as exc:
                    self.close()
                    raise Unreachable(f"jump host {self.jumps[len(self._clients) - 1]} cannot reach {hop}: {exc}") from None
            try:
                self._clients.append(self._open(hop, sock))
            except BaseException:
                self.close()
                raise
        with self.guard("finding the home directory"):
            self.home = self.sftp.normalize(".")

    def _unknown_key(self, hop: Endpoint, key: paramiko.PKey) -> str:
        name = hop.known_hosts_name
        return (f"target {self.target_name}: host key of {name} is not in {self.known_hosts}, so the device cannot be "
                f"verified (it offers {key.get_name()} {fingerprint(key)}). Compare that fingerprint with "
                f"`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on the device, then trust it with "
                f"`ssh-keyscan -p {hop.port} {hop.hostname} >> {self.known_hosts}` (or one `ssh -p {hop.port} {hop.user}@{hop.hostname}`), "
                f"or set trust_on_first_use = true for [targets.{self.target_name}] to record it on the next connection")

    def _changed_key(self, hop: Endpoint, got: paramiko.PKey, expected: paramiko.PKey) -> str:
        name = hop.known_hosts_name
        return (f"target {self.target_name}: HOST KEY CHANGED for {name}: it offers {got.get_name()} {fingerprint(got)} but "
                f"{self.known_hosts} has {expected.get_name()} {fingerprint(expected)}. Someone may be intercepting the "
                f"connection, or the device was reinstalled. Refused. If you know why it changed, remove the old key with "
                f"`ssh-keygen -R '{name}' -f {self.known_hosts}` and trust the new one (trust_on_first_use never overrides a changed key)")

    # -- state -------------------------------------------------------------------------------
    @property
    def transport(self) -> Optional[paramiko.Transport]:
        return self._clients[-1].get_transport() if self._clients else None

    @property
    def connected(self) -> bool:
        return self.transport is not None and self.transport.is_active()

    def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        for client in reversed(self._clients):
            with contextlib.suppress(Exception):
                client.close()
        self._clients = []

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn a broken link into ConnectionLost; other errors (a missing file) pass through."""
        try:
            yield
        except (socket.timeout, EOFError, paramiko.SSHException) as exc:
            raise ConnectionLost(f"{what}: {exc or type(exc).__name__}") from exc
        except OSError as exc:
            if not self.connected:
                raise ConnectionLost(f"{what}: {exc}") from exc
            raise

    def answering(self) -> bool:
        """Does the device still answer? Opens (and closes) a channel, within connect_timeout_s."""
        if not self.connected:
            return False
        try:
            channel = self.transport.open_session(timeout=self.settings.connect_timeout_s)
        except (OSError, EOFError, paramiko.SSHException):
            return False
        channel.close()
        return True

    # -- commands ----------------------------------------------------------------------------
    def start(self, command: str) -> paramiko.Channel:
        """Start a POSIX shell command (built with shlex.quote by the caller); stdout+stderr combined.
        It runs as `exec /bin/sh -c COMMAND` whatever the user's login shell is (fish, csh),
        so `$$` is the process sshd started, the leader of its own process group."""
        if not self.connected:
            raise ConnectionLost("not connected")
        with self.guard("starting a command"):
            channel = self.transport.open_session(timeout=self.settings.command_timeout_s)
            channel.set_combine_stderr(True)
            channel.exec_command(f"exec /bin/sh -c {shlex.quote(command)}")
        return channel

    def run(self, command: str, timeout_s: Optional[float] = None) -> tuple[int, str]:
        """Run a short command to completion: (exit status, output)."""
        timeout_s = timeout_s or self.settings.command_timeout_s
        channel = self.start(command)
        chunks = []
        with self.guard(f"running `{command[:80]}`"):
            channel.settimeout(timeout_s)
            while True:
                data = channel.recv(65536)
                if not data:
                    break
                chunks.append(data)
            if not channel.status_event.wait(timeout_s):
                raise ConnectionLost(f"no exit status for `{command[:80]}` within {timeout_s:g} s")
            status = channel.recv_exit_status()
            channel.close()
        return status, b"".join(chunks).decode(errors="replace")

    def check(self, command: str, what: str) -> str:
        """Run a command that must succeed; TargetError with its output when it does not."""
        status, output = self.run(command)
        if status != 0:
            raise TargetError(f"target {self.target_name}: {what} failed on {self.endpoint} (exit {status}): {output.strip()[-300:]}")
        return output

    # -- files -------------------------------------------------------------------------------
    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            if not self.connected:
                raise ConnectionLost("not connected")
            with self.guard("opening SFTP"):
                self._sftp = self._clients[-1].open_sftp()
                self._sftp.get_channel().settimeout(self.settings.command_timeout_s)
        return self._sftp

    def exists(self, path: str) -> bool:
        with self.guard(f"checking {path}"):
            try:
                self.sftp.stat(path)
                return True
            except FileNotFoundError:
                return False

    def is_dir(self, path: str) -> bool:
        with self.guard(f"checking {path}"):
            try:
                return stat.S_ISDIR(self.sftp.stat(path).st_mode)
            except FileNotFoundError:
                return False

    def put(self, local: str, remote: str) -> int:
        with self.guard(f"uploading {os.path.basename(local)}"):
            return self.sftp.put(local, remote, confirm=True).st_size

    def put_bytes(self, data: bytes, remote: str) -> None:
        with self.guard(f"writing {remote}"):
            self.sftp.putfo(io.BytesIO(data), remote, file_size=len(data), confirm=True)

    def get(self, remote: str, local: str) -> None:
        with self.guard(f"fetching {remote}"):
            self.sftp.get(remote, local)

    def mkdir(self, path: str) -> None:
        with self.guard(f"creating {path}"):
            self.sftp.mkdir(path)

    def walk(self, top: str) -> Iterator[tuple[str, paramiko.SFTPAttributes]]:
        """(path, attributes) of everything under `top`, each directory after its contents
        (nothing when `top` does not exist)."""
        with self.guard(f"listing {top}"):
            try:
                entries = self.sftp.listdir_attr(top)
            except FileNotFoundError:
                return
        for entry in entries:
            path = f"{top}/{entry.filename}"
            if stat.S_ISDIR(entry.st_mode):
                yield from self.walk(path)
            yield path, entry

    def remove_tree(self, top: str) -> None:
        """rm -rf over SFTP: no shell, so no login-shell start-up (a .bashrc can cost 0.5 s a command)."""
        for path, entry in list(self.walk(top)):
            with self.guard(f"removing {path}"):
                (self.sftp.rmdir if stat.S_ISDIR(entry.st_mode) else self.sftp.remove)(path)
        with self.guard(f"removing {top}"), contextlib.suppress(FileNotFoundError):
            self.sftp.rmdir(top)

    def rename(self, old: str, new: str) -> None:
        with self.guard(f"renaming {old}"):
            self.sftp.rename(old, new)
