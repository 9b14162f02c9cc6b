"""The emulated Raspberry Pi 5's userland (for scripts/emulated_pi.py, which runs devices on it):
what the host needs to build and run it, and the arm64 Debian tree itself, built once per machine
outside the repository and keyed by everything that goes into it.

Standard library only: scripts/emulated_pi.py loads this file by its path, under the system
python3 run as root (where quantbench is not installed) and from the tests.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

HERE = Path(__file__).resolve().parent  # scripts/emulated_pi/: this file and the board's own files
REPO = HERE.parent.parent
CACHE_ENV = "QUANTBENCH_EMULATED_PI_CACHE"
DEFAULT_CACHE = Path("/var/cache/quantbench/emulated-pi")
RECIPE_VERSION = "4"  # bump when the build steps below change what goes into the userland
QEMU_CPU = "cortex-a76"  # the Pi 5's core; qemu's default `max` CPU advertises SVE/SME, which no Pi has
USER, UID = "pi", 1000
CPUINFO = HERE / "cpuinfo-raspberry-pi-5"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
MARKER = ".quantbench-emulated-pi"  # in a complete build: its key, build time and date


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
    "trixie": Userland("trixie", "3.13", (2, 41), {
        "/opt/quantbench-venv": "requirements/emulated-pi/trixie.txt",
    }),
}
MAIN_VENV, OLD_VENV = "/opt/quantbench-venv", "/opt/quantbench-venv-old"


def log(message: str) -> None:
    print(f"emulated-pi: {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


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


def run(argv: List[str], **kw) -> subprocess.CompletedProcess:
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
    run(["chroot", str(root), f"/usr/bin/python{land.python}", "-m", "venv", "--without-pip", venv])
    site = root / venv.lstrip("/") / "lib" / f"python{land.python}" / "site-packages"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run(pip + ["download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(wheels), "-r", str(requirements)]
         + _platform_args(land), timeout=1800)
    run(pip + ["install", "--quiet", "--no-deps", "--no-compile", "--no-index", "--find-links", str(wheels), "--only-binary=:all:",
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
        run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "root@emulated-pi", "-f", str(key)])


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
        run(["mmdebstrap", "--variant=extract", "--architectures=arm64", f"--include={','.join(land.packages)}",
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
    remove_in_background([p for p in cache.glob("stale-*")] + [p for p in cache.glob("build-*") if p != work])
    return target


def remove_in_background(paths: List[Path]) -> None:
    """rm -rf, detached: on a disk mounted with `discard` deleting a 1.5 GB tree takes minutes."""
    if paths:
        subprocess.Popen(["rm", "-rf", "--"] + [str(p) for p in paths], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
