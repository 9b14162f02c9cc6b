"""The runner package as files, with a content hash, for staging on any target."""
from __future__ import annotations

import compileall
import hashlib
import os
import shutil
from pathlib import Path

RUNNER_DIR = Path(__file__).parent / "runner"


def runner_files() -> list[Path]:
    return sorted(p for p in RUNNER_DIR.glob("*.py"))


def runner_hash() -> str:
    h = hashlib.sha256()
    for path in runner_files():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def stage_runner(root: Path) -> Path:
    """Copy the runner to `root/<hash>/runner/` (once) and return the directory to put on
    PYTHONPATH, so the local target runs exactly the files a remote device would get.

    The copy is compiled to bytecode for this interpreter once, here: runners run with
    PYTHONDONTWRITEBYTECODE (nothing written beside the staged files), so without it every
    runner process compiled the runner's modules from source again (~20 ms each)."""
    parent = Path(root) / runner_hash()
    if not (parent / "runner" / "__main__.py").is_file():
        tmp = Path(root) / f".tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "runner").mkdir(parents=True)
        for path in runner_files():
            shutil.copy2(path, tmp / "runner" / path.name)  # copy2: the sources' mtimes, which the bytecode records
        compileall.compile_dir(str(tmp / "runner"), quiet=2, workers=1)
        try:
            os.rename(tmp, parent)
        except OSError:  # staged concurrently by another run: identical content
            shutil.rmtree(tmp, ignore_errors=True)
    return parent
