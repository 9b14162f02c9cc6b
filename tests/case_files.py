"""What a BenchSession leaves behind for a case, read back by tests: the row's artifact in the
shared cache (and a copy of a program with its format rewritten), and the files of the runner
job that measured it (the evaluation inputs it was given, the outputs it wrote)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness import settings
from harness.artifacts import Artifact, load_artifact


def artifact(row) -> Artifact:
    """The row's artifact in the shared cache (the folder its artifact_key names)."""
    return load_artifact(settings.cache_dir() / "artifacts" / row["artifact_key"])


def runner_io(session, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(the evaluation inputs the case's runner was given, the outputs it wrote): one input and
    one output named "input" and "output", as the digits models have."""
    work = session.store.dir / "work" / case_id
    config = json.loads((work / "config.json").read_text())
    return dict(np.load(config["inputs"]))["input"], dict(np.load(work / "outputs.npz"))["output"]


def newer_program_copy(row, folder: Path, identifier: bytes) -> Artifact:
    """The row's ExecuTorch program with its format identifier (bytes 4-8) rewritten, as a later
    ExecuTorch release that changed its program format would write it."""
    source = artifact(row)
    folder.mkdir(parents=True, exist_ok=True)
    data = bytearray((source.path / "model.pte").read_bytes())
    data[4:8] = identifier
    (folder / "model.pte").write_bytes(bytes(data))
    (folder / "manifest.json").write_text(json.dumps(source.manifest))
    return Artifact(folder, source.manifest)
