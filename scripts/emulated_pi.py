#!/usr/bin/env python3
"""An emulated Raspberry Pi 5 for trying quantbench (and testing it) without a board.

An arm64 Debian userland runs under qemu-user (binfmt_misc, `qemu-aarch64-static` with the F
flag), with a Raspberry Pi 5's /proc/cpuinfo bind-mounted over the emulated one and
QEMU_CPU=cortex-a76 (the Pi 5's core: float16 arithmetic, no SVE), and its own OpenSSH server on
a loopback port. quantbench reaches it as an ordinary `ssh` target with profile
`raspberry-pi-5`; the runner runs on the device's own Debian Python from a venv of aarch64 wheels.

    sudo python3 scripts/emulated_pi.py start            # builds on first use, prints the inventory
    .venv/bin/quantbench targets check emulated-pi --inventory .cache/emulated-pi/bookworm/targets.toml
    .venv/bin/pytest suites/test_digits.py --target=emulated-pi --inventory .cache/emulated-pi/bookworm/targets.toml
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
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "emulated_pi"
CACHE_ENV = "QUANTBENCH_EMULATED_PI_CACHE"
DEFAULT_CACHE = Path("/var/cache/quantbench/emulated-pi")
RECIPE_VERSION = "4"  # bump when the build steps below change what goes into the userland
QEMU_CPU = "cortex-a76"  # the Pi 5's core; qemu's default `max` CPU advertises SVE/SME, which no Pi has
USER, UID = "pi", 1000
CPUINFO = HERE / "cpuinfo-raspberry-pi-5"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
SSHD_CONFIG = "/etc/ssh/sshd_config.quantbench"
MARKER = ".quantbench-emulated-pi"  # in a complete build: its key, build time and date
TARGET_NAME = "emulated-pi"


@dataclass(frozen=True)
class Userland:
    """One emulated device's root filesystem."""

    suite: str  # Debian release
    python: str  # the release's CPython (major.minor)
    glibc: Tuple[int, int]  # the release's glibc: the newest manylinux tag its wheels may carry
    venvs: Dict[str, str] = field(default_factory=dict)  # device path -> requirements file (pinned, --no-deps)
    packages: Tuple[str, ...] = ("dash", "bash", "coreutils", "base-files", "base-passwd", "libc-bin", "grep", "sed",
                                 "findutils", "python3", "python3-venv", "openssh-server", "openssh-sftp-server",
                                 "libstdc++6", "libgomp1")


USERLANDS = {
    "bookworm": Userland("bookworm", "3.11", (2, 36), {
        "/opt/quantbench-venv": "requirements/emulated-pi/bookworm.txt",
        "/opt/quantbench-venv-old": "requirements/emulated-pi/bookworm-old.txt",
    }),
    "bullseye": Userland("bullseye", "3.9", (2, 31), {
        "/opt/quantbench-venv": "requirements/emulated-pi/bullseye.txt",
    }),
}
MAIN_VENV, OLD_VENV = "/opt/quantbench-venv", "/opt/quantbench-venv-old"


def log(message: str) -> None:
    print(f"emulated-pi: {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def default_dir(userland: str) -> Path:
    return REPO / ".cache" / "emulated-pi" / userland


# -- what the host needs ---------------------------------------------------------------------
TOOLS = {"mmdebstrap": "mmdebstrap", "qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support",
         "zstd": "zstd", "unshare": "util-linux", "chroot": "coreutils", "ssh-keygen": "openssh-client"}


def _binfmt_aarch64() -> str:
    """'' when arm64 binaries run through qemu with the F flag; else why not (after trying to fix it)."""
    if not (BINFMT / "status").exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True, capture_output=True, timeout=30)
    if not (BINFMT / "status").exists():
        return f"binfmt_misc is not mounted at {BINFMT} and mounting it failed (a container without it?)"
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() and shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True, timeout=60)
    if not entry.exists():
        return f"no qemu-aarch64 handler in {BINFMT} (`update-binfmts --enable qemu-aarch64` did not register it)"
    text = entry.read_text()
    if not text.startswith("enabled"):
        return f"{entry} is disabled"
    flags = re.search(r"^flags: (\S*)", text, re.M)
    if not flags or "F" not in flags.group(1):
        return f"{entry} lacks the F flag (the interpreter must be opened at registration to run inside a chroot)"
    return ""


def prerequisites() -> str:
    """'' when this machine can build and run the emulated Pi; else the reason, naming the fix."""
    if sys.platform != "linux":
        return f"needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "needs root (mmdebstrap, chroot and mounts in a private mount namespace)"
    missing = sorted({package for tool, package in TOOLS.items() if not shutil.which(tool)})
    if missing:
        return f"missing Debian package(s) {', '.join(missing)} (requirements/debian.txt; scripts/test.sh installs them)"
    return _binfmt_aarch64()


# -- building the userland -------------------------------------------------------------------
def debian_mirror() -> str:
    """The host's own Debian mirror, from its apt sources (nothing else is reachable here)."""
    if os.environ.get("QUANTBENCH_DEBIAN_MIRROR"):
        return os.environ["QUANTBENCH_DEBIAN_MIRROR"]
    texts = [p.read_text() for p in sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    for text in texts:  # deb822: a stanza with the Debian archive keyring
        for stanza in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            if uris and "debian-archive-keyring" in stanza and "security" not in uris.group(1):
                return uris.group(1)
    lists = [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    for path in lists:
        if path.is_file():
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1] and "/debian" in parts[1]:
                    return next(p for p in parts[1:] if "://" in p)
    raise SystemExit("emulated-pi: no Debian mirror found in /etc/apt/sources.list*; set QUANTBENCH_DEBIAN_MIRROR")


def build_key(name: str) -> str:
    land = USERLANDS[name]
    h = hashlib.sha256()
    h.update(json.dumps([RECIPE_VERSION, land.suite, land.python, list(land.packages), sorted(land.venvs.items()), QEMU_CPU]).encode())
    for path in [CPUINFO] + [REPO / f for f in sorted(land.venvs.values())]:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def tree(name: str) -> Path:
    """Where the built userland lives on this machine (complete once it holds MARKER)."""
    return cache_dir() / f"{name}-{build_key(name)}"


def _run(argv: List[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"emulated-pi: `{' '.join(argv)}` failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc


def _platform_args(land: Userland) -> List[str]:
    tags = [f"manylinux_{land.glibc[0]}_{minor}_aarch64" for minor in range(17, land.glibc[1] + 1)] + ["manylinux2014_aarch64"]
    py = land.python.replace(".", "")
    args = []
    for tag in tags:
        args += ["--platform", tag]
    return args + ["--python-version", land.python, "--implementation", "cp", "--abi", f"cp{py}", "--abi", "abi3", "--abi", "none"]


def _install_venv(root: Path, land: Userland, venv: str, requirements: Path, wheels: Path) -> None:
    """A venv made by the device's Python, filled with aarch64 wheels by the host's pip
    (--target, no dependency resolution: the requirements file is the whole closure). The
    host resolves nothing for the device, so environment markers never see x86_64."""
    _run(["chroot", str(root), f"/usr/bin/python{land.python}", "-m", "venv", "--without-pip", venv])
    site = root / venv.lstrip("/") / "lib" / f"python{land.python}" / "site-packages"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(pip + ["download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(wheels), "-r", str(requirements)]
         + _platform_args(land), timeout=1800)
    _run(pip + ["install", "--quiet", "--no-deps", "--no-compile", "--no-index", "--find-links", str(wheels), "--only-binary=:all:",
                "--target", str(site), "-r", str(requirements)] + _platform_args(land), timeout=1800)


def _compile(root: Path, land: Userland) -> None:
    """Byte-compile the device's Python code once, at build time: the runner runs with
    PYTHONDONTWRITEBYTECODE, and compiling torch under emulation costs a minute per import."""
    paths = [f"/usr/lib/python{land.python}"] + [f"{venv}/lib/python{land.python}/site-packages" for venv in land.venvs]
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == land.python:  # same bytecode: compile natively
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j0", "-s", str(root), "-p", "/"] + [str(root / p.lstrip("/")) for p in paths],
                       capture_output=True)  # a few test files in site-packages do not compile; that is fine
    # Another Python (bullseye's 3.9): compiling everything under emulation took minutes; its venv
    # has no torch, and what the runner imports compiles in seconds when it runs.


def _accounts(root: Path) -> None:
    share = root / "usr/share/base-passwd"
    passwd = (share / "passwd.master").read_text().rstrip("\n").splitlines()
    group = (share / "group.master").read_text().rstrip("\n").splitlines()
    passwd += ["sshd:x:100:65534::/run/sshd:/usr/sbin/nologin", f"{USER}:x:{UID}:{UID}:{USER}:/home/{USER}:/bin/bash"]
    group += [f"{USER}:x:{UID}:"]
    (root / "etc/passwd").write_text("\n".join(passwd) + "\n")
    (root / "etc/group").write_text("\n".join(group) + "\n")
    # '*': no password can log in; keys can ('!' would lock the account for sshd without PAM)
    shadow = root / "etc/shadow"
    shadow.write_text("".join(f"{line.split(':')[0]}:*:19000:0:99999:7:::\n" for line in passwd))
    shadow.chmod(0o640)
    home = root / "home" / USER
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    for path in (home, home / ".ssh"):
        os.chown(path, UID, UID)
    (home / ".ssh").chmod(0o700)


def _sshd(root: Path) -> None:
    (root / "run/sshd").mkdir(parents=True, exist_ok=True)
    (root / "run/sshd").chmod(0o755)
    for kind in ("ed25519", "rsa"):  # the device's host keys, made once per build like a real install
        key = root / f"etc/ssh/ssh_host_{kind}_key"
        key.unlink(missing_ok=True)
        Path(f"{key}.pub").unlink(missing_ok=True)
        _run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "root@emulated-pi", "-f", str(key)])


def _system(root: Path) -> None:
    """What the extract variant leaves out, and the emulated board's own files."""
    sh = root / "bin/sh"
    if not sh.exists():
        sh.symlink_to("dash")
    (root / "etc/hostname").write_text("emulated-pi\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\temulated-pi\n")
    board = root / "etc/quantbench-emulated-pi"
    board.mkdir(parents=True, exist_ok=True)
    shutil.copy(CPUINFO, board / "cpuinfo")
    # The CPU list that cpuinfo libraries (pytorch/cpuinfo in torch and onnxruntime) read; no
    # cpufreq, thermal or power nodes: the emulated board has none, and its sensors say so.
    cpu = root / "sys/devices/system/cpu"
    cpu.mkdir(parents=True, exist_ok=True)
    cores = CPUINFO.read_text().count("processor\t:")
    for name in ("possible", "present", "online"):
        (cpu / name).write_text(f"0-{cores - 1}\n")
    (cpu / "kernel_max").write_text(f"{cores - 1}\n")


def build(name: str, force: bool = False) -> Path:
    """The userland's root tree, built (about 2-4 minutes) unless this machine already has it.
    Devices never write into it: each runs on an overlay whose upper layer is its own."""
    land = USERLANDS[name]
    target = tree(name)
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions never build the same thing twice at once
        if (target / MARKER).exists() and not force:
            return target
        reason = prerequisites()
        if reason:
            raise SystemExit(f"emulated-pi: cannot build: {reason}")
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f"build-{name}-", dir=cache))
        root = work / "root"
        log(f"building the {name} arm64 userland in {root} (mmdebstrap, extract variant)")
        _run(["mmdebstrap", "--variant=extract", "--architectures=arm64", f"--include={','.join(land.packages)}",
              land.suite, str(root), debian_mirror()], timeout=1800)
        _system(root)
        _accounts(root)
        _sshd(root)
        for venv, requirements in land.venvs.items():
            log(f"installing {requirements} into {venv}")
            _install_venv(root, land, venv, REPO / requirements, cache / "wheels" / f"cp{land.python.replace('.', '')}")
        log("byte-compiling the device's Python code")
        _compile(root, land)
        record = {"userland": name, "key": build_key(name), "build_s": round(time.monotonic() - started, 1),
                  "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (root / MARKER).write_text(json.dumps(record, indent=1) + "\n")
        stale = [p for p in cache.glob(f"{name}-*") if p.is_dir()]  # older builds, or this one forced again
        for old in stale:
            old.rename(cache / f"stale-{old.name}-{os.getpid()}")
        root.rename(target)
        work.rmdir()
        log(f"built {target} in {record['build_s']} s")
    _remove_in_background([p for p in cache.glob("stale-*")] + [p for p in cache.glob("build-*") if p != work])
    return target


def _remove_in_background(paths: List[Path]) -> None:
    """rm -rf, detached: on a disk mounted with `discard` deleting a 1.5 GB tree takes minutes."""
    if paths:
        subprocess.Popen(["rm", "-rf", "--"] + [str(p) for p in paths], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)


# -- one running device ----------------------------------------------------------------------
def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> List[int]:
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
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "quantbench@host", "-f", str(self.user_key)])
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
            for p in [pid] + _descendants(pid):
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
        _remove_in_background([self.dir])


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
                       help="bookworm: Debian 12, Python 3.11 (Raspberry Pi OS's base); bullseye: Debian 11, Python 3.9")
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
          f"             .venv/bin/pytest suites/test_digits.py --target={TARGET_NAME} --inventory {rel} --case-budget 1800\n"
          f"  stop:      sudo python3 scripts/emulated_pi.py stop{' --dir ' + str(args.dir) if args.dir else ''}\n"
          f"  (emulation is 30-400x slower than a real Pi: its timings mean nothing; accuracy, plumbing and numerics do)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
