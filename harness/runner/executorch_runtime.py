"""Which ExecuTorch runtime this machine has, and which program formats it reads, without
importing it (the official bindings import torch: seconds on a board). Standard library only,
Python 3.8+ (shipped to devices with the runner).

Two runtimes run a `.pte`:
  - the official bindings, `executorch` (executorch.runtime.Runtime; they import torch);
  - `executorch-numpy-runtime` (numpy only, Python >= 3.12; built from one ExecuTorch release,
    named in its summary, e.g. "(ExecuTorch 1.3.1, CPU)").
A runtime reads programs whose flatbuffer identifier (bytes 4-8 of a .pte, e.g. "ET12") is its
own: the bindings' from the schema they install (executorch/schema/program.fbs), the numpy
runtime's from its compiled core. The runner prefers the bindings when both are installed;
QUANTBENCH_EXECUTORCH_RUNTIME=numpy (or =bindings) picks one.
"""
from __future__ import annotations

import importlib.util
import os
import re
from typing import Dict, List, Optional

BINDINGS = "executorch"
NUMPY_RUNTIME = "executorch-numpy-runtime"
MODULES = {BINDINGS: "executorch", NUMPY_RUNTIME: "executorch_numpy_runtime"}
CHOICE_ENV = "QUANTBENCH_EXECUTORCH_RUNTIME"  # "bindings" | "numpy": which one the runner uses


def _metadata(dist: str):
    try:
        from importlib import metadata
    except ImportError:  # Python < 3.8
        return None
    try:
        return metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return None


def _folder(module: str) -> Optional[str]:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    folders = list(spec.submodule_search_locations or []) if spec else []
    return folders[0] if folders else None


def _bindings_programs(folder: str) -> List[str]:
    try:
        with open(os.path.join(folder, "schema", "program.fbs")) as f:
            text = f.read()
    except OSError:
        return []
    return re.findall(r'^file_identifier\s+"(ET\d+)"', text, re.M)


def _numpy_programs(folder: str) -> List[str]:
    found: List[str] = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("_core") and (name.endswith(".so") or name.endswith(".pyd")):
            try:
                with open(os.path.join(folder, name), "rb") as f:
                    data = f.read()
            except OSError:
                continue
            # the flatbuffer identifier as a C string in the core: b"\x00ET12\x00"
            found += [m.decode("ascii") for m in re.findall(rb"\x00(ET\d\d)\x00", data)]
    return sorted(set(found))


def describe(which: str) -> Optional[Dict[str, object]]:
    """One runtime: {"runtime", "version", "executorch_version", "programs"}, or None when absent."""
    folder = _folder(MODULES[which])
    dist = _metadata(which)
    if folder is None or dist is None:
        return None
    version = dist.version
    if which == BINDINGS:
        return {"runtime": which, "version": version, "executorch_version": version.split("+")[0],
                "programs": _bindings_programs(folder)}
    summary = dist.metadata.get("Summary") or ""
    built_from = re.search(r"ExecuTorch (\d+\.\d+(?:\.\d+)?)", summary)
    return {"runtime": which, "version": version, "executorch_version": built_from.group(1) if built_from else "",
            "programs": _numpy_programs(folder)}


def chosen() -> Optional[Dict[str, object]]:
    """The runtime the runner uses here (bindings first, unless CHOICE_ENV says numpy), or None."""
    choice = os.environ.get(CHOICE_ENV, "")
    order = [NUMPY_RUNTIME] if choice == "numpy" else [BINDINGS] if choice == "bindings" else [BINDINGS, NUMPY_RUNTIME]
    for which in order:
        found = describe(which)
        if found:
            return found
    return None


def facts() -> Dict[str, object]:
    """What `targets check` reports: the runtime the runner would use, each one installed, and
    the program formats the used one reads ({} when neither is installed)."""
    installed = [f for f in (describe(BINDINGS), describe(NUMPY_RUNTIME)) if f]
    used = chosen()
    if not used:
        return {}
    return {"runtime": used["runtime"], "version": used["version"], "executorch_version": used["executorch_version"],
            "programs": used["programs"], "installed": installed}
