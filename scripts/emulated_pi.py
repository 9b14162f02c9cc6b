#!/usr/bin/env python3
"""An emulated Raspberry Pi 5 for trying quantbench (and testing it) without a board.

An arm64 Debian userland runs under qemu-user (binfmt_misc, `qemu-aarch64-static` with the F
flag), with a Raspberry Pi 5's /proc/cpuinfo bind-mounted over the emulated one and
QEMU_CPU=cortex-a76 (the Pi 5's core: float16 arithmetic, no SVE), and its own OpenSSH server on
a loopback port. quantbench reaches it as an ordinary `ssh` target with profile
`raspberry-pi-5`; the runner runs on the device's own Debian Python from a venv of aarch64 wheels.

    sudo python3 scripts/emulated_pi.py start            # builds on first use, prints the inventory
    .venv/bin/quantbench targets check emulated-pi --inventory .cache/emulated-pi/bookworm/targets.toml
    .venv/bin/pytest suites/test_digits.py --target=emulated-pi --qb-inventory .cache/emulated-pi/bookworm/targets.toml
    sudo python3 scripts/emulated_pi.py stop

The built userland is kept outside the repository ($QUANTBENCH_EMULATED_PI_CACHE, default
/var/cache/quantbench/emulated-pi/<userland>-<key>), keyed by everything that goes into it, and
never written to: each device runs on an overlay whose upper layer is its own directory, so a
second start on the same machine takes seconds, and many devices can share one build.

Needs root (mmdebstrap, chroot, mounts in a private mount namespace), binfmt_misc and Debian's
qemu-user-static, binfmt-support, mmdebstrap and zstd (requirements/debian.txt). `check` says what
is missing. The host's own sshd is never touched: the device's sshd is started and stopped by its
pid, and its mounts live in a mount namespace of its own, so they vanish with it.

Emulation is 30-400x slower than a real Pi: its timings mean nothing; correctness, plumbing and
numerics do. Standard library only.

This file is the command and one running device; `scripts/emulated_pi/userland.py` checks the host
and builds the userland.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path):
    """A module of this script's from its file. scripts/ is a folder of scripts, not a package, and
    this one runs under the system python3 as root, where quantbench is not installed."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


userland = _load("emulated_pi_userland", REPO / "scripts" / "emulated_pi" / "userland.py")  # the build
processes = _load("quantbench_testing_processes", REPO / "harness" / "testing" / "processes.py")  # stdlib only
# What the device below and this script's users (tests/emulated_pi.py) take from those two.
USERLANDS, MAIN_VENV, OLD_VENV, USER, UID, QEMU_CPU, MARKER = (
    userland.USERLANDS, userland.MAIN_VENV, userland.OLD_VENV, userland.USER, userland.UID, userland.QEMU_CPU, userland.MARKER)
prerequisites, build, tree, run = userland.prerequisites, userland.build, userland.tree, userland.run
free_port, descendants = processes.free_port, processes.descendants
SSHD_CONFIG = "/etc/ssh/sshd_config.quantbench"
TARGET_NAME = "emulated-pi"


def default_dir(name: str) -> Path:
    return REPO / ".cache" / "emulated-pi" / name


# -- one running device ----------------------------------------------------------------------
@dataclass
class Device:
    """An emulated Pi under `dir`: upper/ (everything the device writes, over the shared build),
    the client key, known_hosts, targets.toml, sshd.pid."""

    dir: Path
    userland: str = "bookworm"
    address: str = "127.0.0.1"  # where sshd listens (a namespace's address with netns)
    port: int = 0  # 0: a free port at start
    netns: str = ""  # run sshd inside this network namespace (ip netns exec)
    proc: Optional[subprocess.Popen] = None

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def user_key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def pid_file(self) -> Path:
        return self.dir / "sshd.pid"

    @property
    def log_file(self) -> Path:
        return self.upper / "var/log/quantbench-sshd.log"

    def home(self) -> Path:
        """The device user's home as the host sees what the device wrote there."""
        return self.upper / "home" / USER

    def _write(self, path: str, text: str, uid: int = 0, mode: int = 0o644) -> None:
        """A file in the device's own layer (parents made with the build's owners)."""
        target = self.upper / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        os.chown(target, uid, uid)
        target.chmod(mode)

    def _authorize(self, lower: Path) -> None:
        if not self.user_key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "quantbench@host", "-f", str(self.user_key)])
        ssh = self.upper / "home" / USER / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        for path in (ssh.parent, ssh):
            os.chown(path, UID, UID)
        ssh.chmod(0o700)
        self._write(f"/home/{USER}/.ssh/authorized_keys", self.user_key.with_suffix(".pub").read_text(), UID, 0o600)
        public = (lower / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
        self.known_hosts.write_text(f"[{self.address}]:{self.port} {public[0]} {public[1]}\n")

    def _sshd_config(self) -> None:
        self._write(SSHD_CONFIG, "\n".join([
            f"Port {self.port}", f"ListenAddress {self.address}", "HostKey /etc/ssh/ssh_host_ed25519_key",
            "HostKey /etc/ssh/ssh_host_rsa_key", "PidFile none", "UsePAM no", "StrictModes yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "PermitRootLogin no", f"AllowUsers {USER}", "Subsystem sftp internal-sftp", "MaxStartups 50", "MaxSessions 50",
            # qemu-user reads QEMU_CPU in every process it starts: the sessions' processes too
            f"SetEnv QEMU_CPU={QEMU_CPU}", "LogLevel VERBOSE", "",
        ]))

    def start(self) -> "Device":
        reason = prerequisites()
        if reason:
            raise SystemExit(f"emulated-pi: cannot start: {reason}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stop()  # a previous start from this directory that was never stopped
        lower = build(self.userland)
        for sub in ("upper", "overlay-work", "merged"):
            (self.dir / sub).mkdir(exist_ok=True)
        self.port = self.port or free_port(self.address)
        self._authorize(lower)
        self._sshd_config()
        self.log_file.unlink(missing_ok=True)
        # Private mount and UTS namespaces: the overlay, /proc (with the Pi's cpuinfo over it,
        # whatever CPU the host has) and /dev exist only for sshd and its sessions, and go away
        # with them; the device has its own host name.
        script = ('m="$2/merged" && mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/overlay-work" "$m" '
                  '&& mount -t proc proc "$m/proc" && mount --bind "$m/etc/quantbench-emulated-pi/cpuinfo" "$m/proc/cpuinfo" '
                  '&& mount --rbind /dev "$m/dev" && hostname emulated-pi '
                  f'&& exec chroot "$m" /usr/sbin/sshd -D -f {SSHD_CONFIG} -E /var/log/quantbench-sshd.log')
        argv = ["unshare", "--mount", "--uts", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh",
                str(lower), str(self.dir)]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns] + argv
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "QEMU_CPU": QEMU_CPU, "LANG": "C.UTF-8"}
        with open(self.dir / "sshd.stderr", "wb") as err:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT)
        self.pid_file.write_text(f"{self.proc.pid}\n")
        self._wait_for_banner()
        return self

    def _wait_for_banner(self, seconds: float = 120.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.dir / "sshd.stderr").read_text(errors="replace")
                log_text = self.log_file.read_text() if self.log_file.exists() else ""
                raise SystemExit(f"emulated-pi: sshd exited with {self.proc.returncode}: {err}{log_text}")
            if self._banner():
                return
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"emulated-pi: sshd did not answer on {self.address}:{self.port} within {seconds:g} s")

    def _banner(self) -> bool:
        argv = [sys.executable, "-c", "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); "
                "sys.exit(0 if s.recv(64).startswith(b'SSH-2.0') else 1)", self.address, str(self.port)]
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0

    def pid(self) -> Optional[int]:
        if self.proc is not None and self.proc.poll() is None:
            return self.proc.pid
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        try:  # the pid is ours only while it still runs sshd (or the wrapper that becomes it)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            return None
        try:
            root = os.readlink(f"/proc/{pid}/root")
        except OSError:
            root = ""
        merged = str(self.dir / "merged")
        return pid if root == merged or merged.encode() in cmdline or str(self.dir).encode() in cmdline else None

    def stop(self) -> None:
        """Kill this device's sshd (by pid) and every process of its sessions."""
        pid = self.pid()
        if pid is not None:
            for p in [pid] + descendants(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            if self.proc is not None:
                self.proc.wait()
            else:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
                    time.sleep(0.05)
        self.proc = None
        self.pid_file.unlink(missing_ok=True)

    # -- what quantbench needs ---------------------------------------------------------------
    def target(self, venv: str = MAIN_VENV, **fields) -> dict:
        """An inventory table for this device (fields override). Emulation makes everything slow:
        timeouts are generous, and one thread per case keeps two cores' worth of emulation fair."""
        table = {"kind": "ssh", "host": self.address, "port": self.port, "user": USER, "identity_file": str(self.user_key),
                 "known_hosts": str(self.known_hosts), "ssh_config": "", "python": f"{venv}/bin/python",
                 "workdir": "~/.cache/quantbench", "profile": "raspberry-pi-5", "threads": 1,
                 "connect_timeout_s": 30.0, "command_timeout_s": 300.0, "keepalive_s": 15.0, "case_timeout_s": 1800.0}
        table.update(fields)
        return table

    def inventory(self) -> Dict[str, dict]:
        targets = {TARGET_NAME: self.target()}
        if OLD_VENV in USERLANDS[self.userland].venvs:
            targets[f"{TARGET_NAME}-old"] = self.target(OLD_VENV)
        return targets

    def write_inventory(self) -> Path:
        path = self.dir / "targets.toml"
        lines = [f"# written by scripts/emulated_pi.py start: the emulated Pi ({self.userland}) at {self.address}:{self.port}\n"]
        for name, table in self.inventory().items():
            lines.append(f"\n[targets.{name}]\n")
            lines += [f"{key} = {json.dumps(value)}\n" for key, value in table.items()]
        path.write_text("".join(lines))
        return path

    def remove(self) -> None:
        """Stop it and delete its directory (its own layer: what it wrote; the build stays)."""
        self.stop()
        userland.remove_in_background([self.dir])


# -- command line ----------------------------------------------------------------------------
def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/emulated_pi.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    for action, help_text in (("check", "say whether this machine can run the emulated Pi, and why not"),
                              ("build", "build the userland (or say where the cached build is)"),
                              ("start", "start the device's sshd (building the userland first if needed), write DIR/targets.toml"),
                              ("stop", "stop the device's sshd and its sessions"),
                              ("status", "is it running, and where")):
        p = sub.add_parser(action, help=help_text)
        p.add_argument("--userland", default="bookworm", choices=sorted(USERLANDS),
                       help="bookworm: Debian 12, Python 3.11 (Raspberry Pi OS's base); bullseye: Debian 11, Python 3.9; "
                            "trixie: Debian 13, Python 3.13, numpy-only ExecuTorch runtime, no torch")
        p.add_argument("--dir", default=None, help="where the device lives (default: .cache/emulated-pi/USERLAND in the repo)")
        if action == "build":
            p.add_argument("--force", action="store_true", help="build again even if a build is cached")
        if action == "start":
            p.add_argument("--port", type=int, default=0, help="sshd port on 127.0.0.1 (default: a free one)")
    args = parser.parse_args(argv)
    device = Device(Path(args.dir) if args.dir else default_dir(args.userland), args.userland)
    if args.action == "check":
        reason = prerequisites()
        print(f"emulated-pi: {'ready' if not reason else 'not possible here: ' + reason}")
        cached = tree(args.userland)
        built = (cached / MARKER).exists()
        print(f"emulated-pi: userland {args.userland}: {'built at ' + str(cached) if built else 'not built yet (start builds it)'}")
        return 1 if reason else 0
    if args.action == "build":
        print(build(args.userland, force=args.force))
        return 0
    if args.action == "stop":
        pid = device.pid()
        device.stop()
        print(f"emulated-pi: {'stopped sshd (pid ' + str(pid) + ')' if pid else 'was not running'} in {device.dir}")
        return 0
    if args.action == "status":
        pid = device.pid()
        inventory = device.dir / "targets.toml"
        print(f"emulated-pi: {'running, sshd pid ' + str(pid) if pid else 'not running'}; inventory {inventory}")
        return 0 if pid else 1
    started = time.monotonic()
    device.port = args.port
    device.start()
    # The device must outlive this command: detach sshd from us (it is already in its own namespaces).
    device.proc = None
    inventory = device.write_inventory()
    if os.environ.get("SUDO_UID"):  # started with sudo: the user who runs quantbench must read the key and inventory
        uid, gid = int(os.environ["SUDO_UID"]), int(os.environ.get("SUDO_GID", os.environ["SUDO_UID"]))
        for path in (device.dir, device.user_key, device.user_key.with_suffix(".pub"), device.known_hosts, inventory):
            os.chown(path, uid, gid)
    rel = os.path.relpath(inventory, os.getcwd())
    rel = str(inventory) if rel.startswith("..") else rel
    print(f"emulated-pi: a Raspberry Pi 5 ({args.userland}, arm64 under qemu {QEMU_CPU}) answers ssh on "
          f"{device.address}:{device.port} (ready in {time.monotonic() - started:.0f} s, sshd pid {device.pid()})\n"
          f"  inventory: {inventory}\n"
          f"  next:      .venv/bin/quantbench targets check {TARGET_NAME} --inventory {rel}\n"
          f"             .venv/bin/pytest suites/test_digits.py --target={TARGET_NAME} --qb-inventory {rel} --case-budget 1800\n"
          f"  stop:      sudo python3 scripts/emulated_pi.py stop{' --dir ' + str(args.dir) if args.dir else ''}\n"
          f"  (emulation is 30-400x slower than a real Pi: its timings mean nothing; accuracy, plumbing and numerics do)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))