"""Artifacts: a quantized model as files plus a manifest, cached under a content key.

The key hashes everything that decides the artifact's bytes: the model (name, version,
weights/data fingerprint), the recipe and its parameters, and the versions of the
libraries that produced it. Same key, same artifact: a second run quantizes nothing.
Concurrent processes (pytest-xdist workers, parallel runs) asking for the same missing key
wait for one build: the builder holds a lock file named by the key.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Mapping, Optional

from harness.locks import FileLock

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # ints, or strings for symbolic dims such as "batch"
    dtype: str  # numpy dtype name


@dataclass(frozen=True)
class BuiltModel:
    """What a recipe's build function reports about the file it wrote."""

    file: str  # main model file name inside the artifact directory
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    runtime: str  # the one runtime the runner needs: onnxruntime | torch | tflite
    runtime_requires: tuple[str, ...] = ()  # extra modules the runner must import (e.g. torchao)
    notes: Mapping[str, Any] = field(default_factory=dict)  # recipe facts worth keeping (excluded nodes, ...)


@dataclass(frozen=True)
class Artifact:
    path: Path  # the artifact directory
    manifest: Mapping[str, Any]

    @property
    def model_file(self) -> Path:
        return self.path / self.manifest["file"]

    @property
    def size_bytes(self) -> int:
        return int(self.manifest["size_bytes"])


def content_key(parts: Mapping[str, Any]) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_artifact(path: Path) -> Artifact:
    return Artifact(Path(path), json.loads((Path(path) / MANIFEST).read_text()))


class ArtifactCache:
    """Directory of artifacts named by content key; writes are atomic renames."""

    def __init__(self, root: Path, during_build: Optional[Callable[[], ContextManager]] = None,
                 on_wait: Callable[[str], None] = lambda key: None) -> None:
        self.root = Path(root)
        self.during_build = during_build or nullcontext  # held while a recipe builds (e.g. the host lock, shared)
        self.on_wait = on_wait  # told the key when another process is building it and this one waits
        self.on_build: Callable[[str], Any] = lambda key: None  # told the key before a build starts (harness/build_ahead.py)

    def lookup(self, key: str) -> Optional[Artifact]:
        path = self.root / key
        return load_artifact(path) if (path / MANIFEST).is_file() else None

    def get_or_build(
        self,
        key_parts: Mapping[str, Any],
        build: Callable[[Path], BuiltModel],
        describe: Mapping[str, Any],
    ) -> tuple[Artifact, bool]:
        """Return (artifact, built_now). `describe` is copied into the manifest
        (framework, mode, recipe, params, model, library versions)."""
        key = content_key(key_parts)
        found = self.lookup(key)
        if found is not None:
            return found, False
        lock = FileLock(self.root / f".lock-{key}", transient=True)
        if not lock.acquire(block=False):
            self.on_wait(key)
            lock.acquire()
        try:
            found = self.lookup(key)  # built by another process while this one waited
            if found is not None:
                return found, False
            self.on_build(key)
            with self.during_build():
                return self._build(key, key_parts, build, describe), True
        finally:
            lock.release()

    def _build(self, key: str, key_parts: Mapping[str, Any], build: Callable[[Path], BuiltModel],
               describe: Mapping[str, Any]) -> Artifact:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            started = time.perf_counter()
            built = build(tmp)
            model_path = tmp / built.file
            if not model_path.is_file():
                raise RuntimeError(f"recipe wrote no {built.file} (files: {sorted(p.name for p in tmp.iterdir())})")
            files = sorted(p for p in tmp.rglob("*") if p.is_file())
            manifest = dict(describe)
            manifest.update(
                key=key,
                key_parts=dict(key_parts),
                file=built.file,
                files=[str(p.relative_to(tmp)) for p in files],
                size_bytes=sum(p.stat().st_size for p in files),
                sha256=sha256_file(model_path),
                inputs=[asdict(t) for t in built.inputs],
                outputs=[asdict(t) for t in built.outputs],
                runtime=built.runtime,
                runtime_requires=list(built.runtime_requires),
                notes=dict(built.notes),
                build_s=round(time.perf_counter() - started, 3),
                created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            final = self.root / key
            try:
                os.rename(tmp, final)
            except OSError:
                # Another run finished the same key first (one not taking the lock, e.g. an
                # older quantbench); its artifact is identical by construction.
                shutil.rmtree(tmp, ignore_errors=True)
            return load_artifact(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


class JsonCache:
    """Results that are not model files (a sensitivity table, a search's outcome) as JSON
    files named by content key, computed once per key like artifacts."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def lookup(self, key: str) -> Optional[dict]:
        path = self.root / f"{key}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def get_or_compute(self, key_parts: Mapping[str, Any], compute: Callable[[], dict]) -> tuple[dict, bool]:
        """(value, computed_now); concurrent processes asking for one key wait for one computation."""
        from harness.locks import file_lock

        key = content_key(key_parts)
        found = self.lookup(key)
        if found is not None:
            return found, False
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / f".lock-{key}", transient=True):
            found = self.lookup(key)
            if found is not None:
                return found, False
            value = {"key": key, "key_parts": dict(key_parts), **compute()}
            tmp = self.root / f".tmp-{key}-{uuid.uuid4().hex[:8]}.json"
            tmp.write_text(json.dumps(value, indent=1, default=str))
            os.replace(tmp, self.root / f"{key}.json")
            return value, True
