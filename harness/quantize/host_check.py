"""Load every built artifact once on the host before it is cached.

A recipe can write a file its own runtime refuses (onnxruntime's quantize_static on a graph
that quant_pre_process fused in a way it then breaks: INVALID_GRAPH at load). Caught here, that
is a build error naming the recipe and the runtime's message, raised before the file reaches
the cache or a device, instead of a runner failure on the target. torch artifacts are loaded
back and compared with their module when they are saved (quantize/torch_export.py), so they
are not loaded twice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from harness.artifacts import BuiltModel


class BrokenArtifact(RuntimeError):
    """A recipe wrote a model file its runtime cannot load; the message names both."""


def load_error(path: Path, runtime: str) -> Optional[str]:
    """Why `runtime` cannot load the model file on this host, or None when it loads."""
    try:
        if runtime == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        elif runtime == "tflite":
            from ai_edge_litert.interpreter import Interpreter

            Interpreter(model_path=str(path)).allocate_tensors()
    except Exception as exc:  # noqa: BLE001 - any refusal is the answer
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
    return None


def check_loads(built: BuiltModel, out: Path, recipe_name: str) -> BuiltModel:
    why = load_error(Path(out) / built.file, built.runtime)
    if why:
        raise BrokenArtifact(f"{recipe_name} built {built.file}, which {built.runtime} cannot load on the host ({why}); "
                             "nothing was cached")
    return built
