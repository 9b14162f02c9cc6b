"""An ssh target's connection settings: the inventory fields, checked, and the host resolved
through ~/.ssh/config by OpenSSH itself (`ssh -G`: Include, Match and tokens as `ssh` sees them;
paramiko's parser where no ssh client is installed): HostName, Port, User, IdentityFile, ProxyJump.

    [targets.jetson]
    kind = "ssh"
    host = "jetson-orin.lab"        # or a Host alias from ~/.ssh/config
    user = "bench"
    identity_file = "~/.ssh/id_ed25519"
    python = "/usr/bin/python3"
    workdir = "~/.cache/quantbench"
    profile = "jetson-orin"

Fields given in the inventory win over the ssh config, as command-line options do for `ssh`.
"""
from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, Optional

from targets.base import TargetError

DEFAULT_PORT = 22


@dataclass(frozen=True)
class SshSettings:
    """How to reach one device. Passwords and passphrases never live here: use a key or the agent."""

    host: str  # host name, address, or a Host alias from the ssh config
    port: Optional[int] = None  # default: the ssh config's Port, else 22
    user: Optional[str] = None  # default: the ssh config's User, else the local user name
    identity_file: Optional[str] = None  # private key; default: the ssh config's IdentityFile, the agent, ~/.ssh/id_*
    workdir: str = "~/.cache/quantbench"  # on the device: the upload cache and per-case job directories
    ssh_config: str = "~/.ssh/config"  # OpenSSH client config consulted for `host` ("" to ignore it)
    known_hosts: str = "~/.ssh/known_hosts"  # host keys are checked against this file
    trust_on_first_use: bool = False  # record an unknown host key in known_hosts instead of refusing (a changed key is always refused)
    proxy_jump: Optional[str] = None  # jump host(s), `[user@]host[:port][,...]`; default: the ssh config's ProxyJump
    connect_timeout_s: float = 15.0  # TCP connect, SSH handshake and authentication, each
    command_timeout_s: float = 60.0  # any remote step besides the runner itself (upload, fetch, mkdir)
    keepalive_s: float = 10.0  # SSH keepalive interval; also how often a running case checks the device still answers
    reconnect_window_s: float = 180.0  # after a lost connection, keep reconnecting this long before the device counts as gone
    retries: int = 3  # at least this many reconnect attempts, even when the window is shorter (0 s: exactly this many)
    backoff_s: float = 2.0  # wait before the first reconnect attempt; doubles each time, up to max_backoff_s
    max_backoff_s: float = 20.0  # the longest wait between two reconnect attempts


FIELDS = {f.name: f for f in fields(SshSettings)}
OTHER_SETTINGS = ("sensors",  # non-connection tables an ssh target may also carry
                  "inputs_on_device", "cuda_provider_options",  # GPU profiles: targets.cuda.gpu_options
                  "torch_format", "onnx_opset",  # older artifact formats (harness.quantize.base.ExportFormat)
                  "labgrid")  # a labgrid place's board: coordinator, place, power port (targets/labgrid_place.py)


def parse_ssh_settings(settings: Mapping[str, Any], where: str) -> SshSettings:
    """The inventory's fields as SshSettings; TargetError naming the field when one is wrong."""
    unknown = sorted(k for k in settings if k not in FIELDS and k not in OTHER_SETTINGS)
    if unknown:
        raise TargetError(f"{where}: unknown ssh field(s) {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    host = settings.get("host")
    if not isinstance(host, str) or not host.strip():
        raise TargetError(f"{where}: an ssh target needs `host` (a host name, address or ~/.ssh/config alias)")
    values = {k: v for k, v in settings.items() if k in FIELDS}
    for name in ("port", "retries"):
        if name in values and (not isinstance(values[name], int) or isinstance(values[name], bool) or values[name] < (1 if name == "port" else 0)):
            raise TargetError(f"{where}: `{name}` must be a {'positive' if name == 'port' else 'non-negative'} integer, not {values[name]!r}")
    for name in ("connect_timeout_s", "command_timeout_s", "keepalive_s", "backoff_s", "max_backoff_s", "reconnect_window_s"):
        if name in values and (not isinstance(values[name], (int, float)) or isinstance(values[name], bool) or values[name] < 0
                               or (values[name] == 0 and name not in ("backoff_s", "reconnect_window_s"))):
            raise TargetError(f"{where}: `{name}` must be a positive number of seconds, not {values[name]!r}")
    if "trust_on_first_use" in values and not isinstance(values["trust_on_first_use"], bool):
        raise TargetError(f"{where}: `trust_on_first_use` must be true or false, not {values['trust_on_first_use']!r}")
    for name in ("user", "identity_file", "workdir", "ssh_config", "known_hosts", "proxy_jump"):
        if name in values and not isinstance(values[name], str):
            raise TargetError(f"{where}: `{name}` must be a string, not {values[name]!r}")
    if not values.get("workdir", "x").strip():
        raise TargetError(f"{where}: `workdir` must not be empty")
    return SshSettings(**values)


@dataclass(frozen=True)
class Endpoint:
    """One resolved hop: where to connect and as whom."""

    alias: str  # what the user wrote (inventory host or jump spec)
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]  # expanded paths; empty = agent and ~/.ssh/id_* keys

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH files this host's key under."""
        return self.hostname if self.port == DEFAULT_PORT else f"[{self.hostname}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def _ssh_g(alias: str, path: str) -> Optional[dict]:
    """`ssh -G -F path alias`: the options OpenSSH itself would use (Include, Match, tokens),
    keys lowercased, identityfile a list as paramiko gives it; None when there is no ssh client."""
    ssh = shutil.which("ssh")
    if ssh is None:
        return None

    def ask(config: str, host: str) -> dict:
        try:
            proc = subprocess.run([ssh, "-G", "-F", config, "--", host], capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TargetError(f"host {alias}: `ssh -G` could not read {path}: {exc}") from exc
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip() and "Pseudo-terminal" not in line]
            raise TargetError(f"host {alias}: OpenSSH cannot use {path}: {lines[-1] if lines else f'exit {proc.returncode}'}")
        options: dict = {}
        for line in proc.stdout.splitlines():
            key, _, value = line.strip().partition(" ")
            key = key.lower()
            if key in ("identityfile", "certificatefile", "localforward", "remoteforward", "sendenv", "setenv"):
                options.setdefault(key, []).append(value)
            elif key:
                options[key] = value
        return options

    options = ask(path, alias)
    # OpenSSH names its default keys (~/.ssh/id_*) when the config names none: paramiko's
    # answer had no identityfile then (the agent and the default keys are tried), keep that.
    if options.get("identityfile") == ask("none", alias).get("identityfile"):
        options.pop("identityfile", None)
    return options


def _lookup(alias: str, ssh_config: str) -> dict:
    """The host's options from the ssh config: `ssh -G` where OpenSSH's client is installed,
    else paramiko's parser (which ignores Include and some Match forms: paramiko issue 1609)."""
    path = os.path.expanduser(ssh_config) if ssh_config else ""
    if not path or not os.path.isfile(path):
        return {}
    options = _ssh_g(alias, path)
    if options is not None:
        return options
    import paramiko

    return paramiko.SSHConfig.from_path(path).lookup(alias)


def _jump_spec(spec: str) -> tuple[Optional[str], str, Optional[int]]:
    """`[user@]host[:port]` -> (user, host, port)."""
    user, _, rest = spec.rpartition("@")
    host, port = rest, None
    if rest.startswith("["):  # [v6addr]:port
        host, _, tail = rest[1:].partition("]")
        port = int(tail[1:]) if tail.startswith(":") else None
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = int(port_text)
    return user or None, host, port


def resolve(settings: SshSettings) -> tuple[Endpoint, tuple[Endpoint, ...]]:
    """The device's endpoint and the jump hosts before it, in order."""
    config = _lookup(settings.host, settings.ssh_config)
    if config.get("proxycommand") and not settings.proxy_jump:
        raise TargetError(f"host {settings.host}: ProxyCommand in {settings.ssh_config} is not supported; use ProxyJump")
    identities = (settings.identity_file,) if settings.identity_file else tuple(config.get("identityfile", ()))
    target = Endpoint(
        alias=settings.host,
        hostname=config.get("hostname", settings.host),
        port=settings.port or int(config.get("port", DEFAULT_PORT)),
        user=settings.user or config.get("user") or getpass.getuser(),
        identity_files=tuple(os.path.expanduser(p) for p in identities),
    )
    jump = settings.proxy_jump or config.get("proxyjump") or ""
    hops = []
    for spec in (s.strip() for s in jump.split(",") if s.strip() and s.strip().lower() != "none"):
        user, host, port = _jump_spec(spec)
        hop_settings = replace(settings, host=host, port=port, user=user, identity_file=None, proxy_jump="none")
        hop, _ = resolve(hop_settings)
        if not hop.identity_files and target.identity_files:  # the device's key is the best guess for its jump host
            hop = replace(hop, identity_files=target.identity_files)
        hops.append(hop)
    return target, tuple(hops)
