"""The build host's part of an AOTInductor package's cache key, remembered per build host.

Which vector ISA Inductor compiles CPU kernels for (torch_aoti.isa_key) is found by importing
Inductor (and sympy) and compiling and loading a probe library per candidate ISA: about 4 s of a
warm run, whose only AOTInductor work is computing the packages' keys. The answer depends only on
what `identity()` lists (torch's version, the CPU's architecture and flags, the compiler Inductor
would call, and the environment variables Inductor reads to pick the ISA), so it is kept in
<cache>/inductor/isa/ under that identity (artifacts.JsonCache: one file per identity; concurrent
processes wait for one probe) and probed again when any of it changes. A build still probes for
itself (the package's notes["built_isa"]). No torch import here.
"""
from __future__ import annotations

import os
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from harness.artifacts import JsonCache
from harness.quantize import inductor_cache

# what Inductor reads from the environment when it picks the ISA or the C++ compiler (torch 2.13:
# cpu_vec_isa.pick_vec_isa, config.cpp.vec_isa_ok, config.cpp.cxx)
ISA_ENV = ("ATEN_CPU_CAPABILITY", "TORCHINDUCTOR_VEC_ISA_OK", "CXX")
FOLDER = "isa"  # under <cache>/inductor/


def compiler_identity() -> dict[str, Any]:
    """The C++ compiler Inductor would call ($CXX, else g++; clang++ on macOS): its resolved file,
    size and modification time (an upgrade changes them)."""
    name = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
    found = shutil.which(name)
    if not found:
        return {"name": name, "path": None}
    real = os.path.realpath(found)
    stat = os.stat(real)
    return {"name": name, "path": real, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def identity() -> dict[str, Any]:
    """Everything the ISA probe's answer depends on, on this host now."""
    from harness.runner.system import cpu_flags

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "missing"
    return {"torch": torch_version, "platform": sys.platform, "machine": platform.machine(),
            "cpu_flags": " ".join(sorted(set(cpu_flags().split()))), "compiler": compiler_identity(),
            "env": {name: os.environ.get(name) for name in ISA_ENV}}


def remembered(cache_root: Path, probe: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """(the probe's answer for this host's identity, whether it was probed now): from
    <cache_root>/inductor/isa/, else `probe()`, kept there."""
    return JsonCache(inductor_cache.inductor_dir(cache_root) / FOLDER).get_or_compute(identity(), probe)
