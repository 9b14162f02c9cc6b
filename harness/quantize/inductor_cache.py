"""Where AOTInductor compiles a package: inside quantbench's cache directory, never /tmp.

Inductor writes each build's generated sources, objects and shared library under
TORCHINDUCTOR_CACHE_DIR (default /tmp/torchinductor_<user>), and the headers it precompiles for
every package under /tmp/torchinductor_<user>/precompiled_headers whatever that variable says
(torch 2.13: `codecache._HEADER_DIR`, fixed at import). Left there, a run with an empty cache is
not cold: it reuses the headers (and any kernel or FX graph cache entry) another run compiled,
and /tmp grows without bound (7.5 GB on the shared build host).

`compiling(cache_root)` gives one build a directory of its own, <cache>/inductor/build-<id>,
removed after the build (the package holds what the runner needs), and keeps the precompiled
headers in <cache>/inductor/precompiled_headers: they depend only on torch, the compiler and the
ISA flags, so every package of a run shares them (compiled once per cold run), and an empty
--cache-dir is a cold build, headers included. torch is imported lazily.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

DIRECTORY = "inductor"  # under the cache root, beside artifacts/ and models/
HEADERS = "precompiled_headers"
ENV = "TORCHINDUCTOR_CACHE_DIR"


def inductor_dir(cache_root: Path) -> Path:
    return Path(cache_root) / DIRECTORY


def use_headers(directory: Path) -> None:
    """Inductor's precompiled headers in `directory` from now on, in this process."""
    from torch._inductor import codecache

    wanted = str(directory)
    if codecache._HEADER_DIR != wanted:
        codecache._HEADER_DIR = wanted
        codecache._HEADER_LOCK_DIR = os.path.join(wanted, "locks")
        codecache._precompile_header.cache_clear()  # it remembers the paths of the previous directory


@contextlib.contextmanager
def _cache_dir(directory: Path) -> Iterator[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    before = os.environ.get(ENV)
    os.environ[ENV] = str(directory)
    try:
        yield directory
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def probing(cache_root: Path):
    """Inductor's checks of the build host (which vector ISAs compile and run here: a few small
    compiles, once per process) in <cache>/inductor, not /tmp: part of a cold build too."""
    return _cache_dir(inductor_dir(cache_root))


@contextlib.contextmanager
def compiling(cache_root: Path) -> Iterator[Path]:
    """One AOTInductor build, compiling in a fresh directory under the cache (yielded)."""
    root = inductor_dir(cache_root)
    use_headers(root / HEADERS)
    build = root / f"build-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with _cache_dir(build):
            yield build
    finally:
        shutil.rmtree(build, ignore_errors=True)
