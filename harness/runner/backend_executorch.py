"""ExecuTorch backend for the runner: a `.pte` program (XNNPACK delegate, portable kernels for
the rest), run with the official bindings or, where they are not installed, with
`executorch-numpy-runtime` (numpy only, Python >= 3.12). executorch_runtime.py says which is
used (QUANTBENCH_EXECUTORCH_RUNTIME=numpy|bindings picks one).

The bindings are their C++ extension, executorch.extension.pybindings._portable_lib, imported
after torch (it links libtorch): the same program and method objects that
`executorch.runtime.Runtime` wraps (Method.execute(inputs) is `method(inputs)`), without the
Python wrapper `portable_lib`, whose import of executorch.exir (the export toolchain) took
seconds of every .pte case's fresh runner process.

A timed call is the method call with host arrays in and host arrays out (docs/architecture.md,
"What one timed call is"): prepare() makes the inputs once (torch tensors sharing the numpy
memory for the bindings, contiguous numpy arrays for the numpy runtime), run() executes the
method and returns numpy arrays (the bindings' outputs are cloned tensors, viewed as numpy;
the numpy runtime's are fresh arrays). The program and its method load in the constructor
(init_ms). Before loading, a program format the runtime does not read (bytes 4-8 of the file,
e.g. "ET12") or a delegate it lacks is refused with the versions and the fix.

Threads: the bindings' XNNPACK thread pool is set to the case's threads
(_unsafe_reset_threadpool); executorch-numpy-runtime has no such setting and uses XNNPACK's
default (one thread per core), recorded in the details.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

import numpy as np

from . import executorch_runtime

_USED = executorch_runtime.chosen()
if _USED is None:
    raise ImportError("neither the ExecuTorch bindings (pip install executorch, which brings torch) nor "
                      "executorch-numpy-runtime (pip install executorch-numpy-runtime: numpy only, Python >= 3.12) "
                      "is installed", name="executorch (or executorch-numpy-runtime)")
if _USED["runtime"] == executorch_runtime.BINDINGS:
    import torch  # first: the extension links libtorch and returns torch tensors
    from executorch.extension.pybindings import _portable_lib as _portable
else:
    import executorch_numpy_runtime as _numpy_runtime

DELEGATES = {"xnnpack": "XnnpackBackend"}  # manifest notes.delegation.backend -> the runtime's backend name
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32, "int8": np.int8,
                "uint8": np.uint8, "bool": np.bool_}


def _identifier(path: str) -> str:
    with open(path, "rb") as f:
        return f.read(8)[4:8].decode("ascii", "replace")


class Backend:
    runtime = str(_USED["runtime"])
    runtime_version = (str(_USED["version"]) if runtime == executorch_runtime.BINDINGS
                       else f"{_USED['version']} (ExecuTorch {_USED['executorch_version'] or '?'})")

    def __init__(self, model_path: str, manifest: dict, threads: int, options: dict) -> None:
        notes = manifest.get("notes") or {}
        written = (notes.get("executorch_program") or {})
        ident = _identifier(model_path)
        reads = list(_USED["programs"] or [])
        if reads and ident not in reads:
            raise RuntimeError(
                f"this .pte is ExecuTorch program format {ident} (written by executorch {written.get('executorch', '?')}) "
                f"and {self.runtime} {self.runtime_version} here reads {', '.join(reads)}: install the runtime of that "
                f"release on the device (pip install executorch=={written.get('executorch', '?')}), or build the program "
                "with the executorch release the device has")
        self.bindings = self.runtime == executorch_runtime.BINDINGS
        backend = (notes.get("delegation") or {}).get("backend")
        wanted = DELEGATES.get(str(backend)) if backend else None
        if self.bindings:
            _portable._unsafe_reset_threadpool(int(threads))
            have = list(_portable._get_registered_backend_names())
        else:
            have = list(_numpy_runtime.runtime_info()["backends"])
        if wanted and wanted not in have:
            raise RuntimeError(f"this .pte delegates to {wanted} and {self.runtime} {self.runtime_version} here has "
                               f"only {', '.join(have) or 'no delegate'}: install a build of it with {wanted}")
        if self.bindings:
            # as executorch.runtime.Runtime.load_program(path) loads it (its default verification)
            self.program = _portable._load_program(model_path, enable_etdump=False, debug_buffer_size=0,
                                                   program_verification=_portable.Verification.InternalConsistency)
        else:
            self.program = _numpy_runtime.Runtime.get().load_program(model_path)
        self.method = self.program.load_method("forward")
        self.input_specs = [
            (t["name"], tuple(d if isinstance(d, int) else None for d in t["shape"]), t["dtype"])
            for t in manifest["inputs"]
        ]
        self.output_names = [t["name"] for t in manifest["outputs"]]
        self.details = {
            "format": "executorch",
            "program_format": ident,
            "runtime_reads": reads,
            "executorch_version": _USED["executorch_version"],
            "delegates": have,
            "num_threads": self._thread_count(),
            "threads_note": None if self.bindings else (
                "executorch-numpy-runtime does not set XNNPACK's thread pool: its default (one thread per core)"),
            "runtime_env": os.environ.get(executorch_runtime.CHOICE_ENV) or None,
        }

    def _thread_count(self):
        """The bindings' thread pool size (executorch 1.0.x has no getter: None there)."""
        getter = getattr(_portable, "_threadpool_get_thread_count", None) if self.bindings else None
        return getter() if getter else None

    def prepare(self, feed: Dict[str, np.ndarray]) -> List[Any]:
        """The inputs in the program's dtypes and the standard memory layout, once, outside the timed region."""
        arrays = [np.ascontiguousarray(feed[name], dtype=NUMPY_DTYPES.get(dtype, dtype)) for name, _, dtype in self.input_specs]
        if self.bindings:
            return [torch.from_numpy(a) for a in arrays]
        return arrays

    def run(self, prepared: List[Any]) -> List[np.ndarray]:
        if self.bindings:
            return [o.numpy() for o in self.method(prepared)]
        return self.method(prepared)
