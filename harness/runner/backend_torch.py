"""torch backend for the runner (imports torch, numpy, and only the modules the artifact's
manifest lists in runtime_requires, e.g. torchao).

The manifest's notes["torch_load"] says how the artifact loads:
  format            "torch.export" (.pt2, torch.export.load(...).module())
                    or "torchscript" (.pt, torch.jit.load)
                    or "aoti" (an AOTInductor package through its C++ loader, as
                    torch._inductor.aoti_load_package loads it, without importing Inductor:
                    compiled kernels, loaded in init_ms; CPU only)
  quantized_engine  torch.backends.quantized.engine to set before loading (packed int8 weights)
  compile           "inductor": torch.compile(freezing=True) on this machine; the compilation
                    happens in the first call, so it is part of first_ms, never of the timed loop
Threads are set with torch.set_num_threads and recorded; the process enters
torch.inference_mode() once, when the backend is made, so a timed call is the module call and
the outputs' .numpy() views (docs/architecture.md, "What one timed call is").

options["device"] "cuda" (a cuda target) moves the exported program to the GPU
(torch.export.passes.move_to_device_pass). options["io"] "host": numpy in, numpy out, the
copies and the .cpu() that waits for the GPU inside the timed call; "device": inputs copied
once in prepare(), run() ends with torch.cuda.synchronize(), outputs fetched afterwards.
Peak GPU memory is torch.cuda.max_memory_allocated() since a reset before the model loads.
"""
from __future__ import annotations

import importlib
import os
import shutil
import sys
from typing import Any, Dict, List

import numpy as np

import torch


def _import_required(names: List[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise RuntimeError(
                f"this artifact needs {name} (manifest runtime_requires) and it does not import in {sys.executable} "
                f"({exc}); install it beside torch {torch.__version__}"
            ) from exc


def _set_engine(engine: str) -> None:
    supported = list(torch.backends.quantized.supported_engines)
    if engine not in supported:
        raise RuntimeError(
            f"this artifact's int8 weights are packed for torch's {engine} quantized engine, which torch "
            f"{torch.__version__} on this machine lacks (it has {', '.join(supported)}); use a recipe for this architecture"
        )
    torch.backends.quantized.engine = engine


class AOTIPackage:
    """An AOTInductor package through its C++ loader, torch._C._aoti.AOTIModelPackageLoader, as
    torch._inductor.aoti_load_package loads it, without importing torch._inductor (Inductor,
    sympy: seconds of a fresh process, which init_ms would count). A call runs the compiled model
    on the positional tensors (boxed_run) and rebuilds the outputs with the package's own output
    spec, read once at load (aoti_load_package's callable parses it at every call). For a spec
    of one tensor, or a flat tuple or list of them, the call returns the loader's list as it is
    (Backend.run takes a list like a tuple). With .cpu() skipped on CPU that saved 1.4-2.5 us of
    digits' 130 us call (two interleaved in-process comparisons); the runner's call still costs
    3-4 us more than a bare `[o.numpy() for o in loader.boxed_run(...)]`."""

    def __init__(self, path: str) -> None:
        import torch.utils._pytree as pytree

        self.loader = torch._C._aoti.AOTIModelPackageLoader(path, "model", False, 1, -1)
        self._unflatten = pytree.tree_unflatten
        self._out_spec = spec = pytree.treespec_loads(self.loader.get_call_spec()[1])
        # (children_specs: TreeSpec.children() is newer than some device torch builds)
        self._listed = spec.is_leaf() or (spec.type in (tuple, list) and all(c.is_leaf() for c in spec.children_specs))

    def __call__(self, *tensors):
        out = self.loader.boxed_run(list(tensors))
        return out if self._listed else self._unflatten(out, self._out_spec)


def _load(model_path: str, how: Dict[str, Any], device: str = "cpu"):
    fmt = how.get("format") or "torch.export"
    if fmt == "torch.export":
        program = torch.export.load(model_path)
        if device != "cpu":  # parameters, buffers, constants and device arguments in the graph
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        return program.module()
    if fmt == "torchscript":
        module = torch.jit.load(model_path, map_location=device)
        return module.eval()
    if fmt == "aoti":
        if device != "cpu":
            raise RuntimeError("this AOTInductor package was compiled for the CPU and cannot run on " + device)
        return AOTIPackage(model_path)
    raise RuntimeError(f"unknown torch artifact format {fmt!r} in the manifest (known: torch.export, torchscript, aoti)")


def _compile(module, how: Dict[str, Any]):
    backend = how.get("compile")
    if not backend:
        return module
    if backend != "inductor":
        raise RuntimeError(f"unknown compile backend {backend!r} in the manifest (known: inductor)")
    compilers = [c for c in (os.environ.get("CXX"), "g++", "c++", "clang++") if c and shutil.which(c)]
    if not compilers:
        raise RuntimeError(
            "torch.compile (inductor) compiles C++ kernels and this machine has no C++ compiler (g++, c++, clang++ "
            "or $CXX); install g++ there, or use the eager recipe of this mode"
        )
    import torch._inductor.config as inductor_config

    # Freezing constant-folds the weights, which is what lets inductor match the PT2E
    # quantize/dequantize patterns and prepack the int8 weights for oneDNN.
    inductor_config.freezing = True
    # dynamic=False: one static graph for the benchmark batch (the evaluation pass pads to it).
    return torch.compile(module, backend="inductor", dynamic=False)


def _numpy(out, on_cpu: bool = False) -> List[np.ndarray]:
    """Host arrays of the outputs (bfloat16 as float32: numpy has no bfloat16); .cpu() waits
    for a GPU, and is skipped where the outputs are host tensors already."""
    if not on_cpu:
        out = [o.cpu() for o in out]
    return [o.numpy() if o.dtype is not torch.bfloat16 else o.float().numpy() for o in out]


class Backend:
    runtime = "torch"
    runtime_version = torch.__version__

    def __init__(self, model_path: str, manifest: dict, threads: int, options: dict) -> None:
        device = options.get("device", "cpu")
        if device not in ("cpu", "cuda"):
            raise RuntimeError(f"the torch backend runs on 'cpu' or 'cuda', not {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} in {sys.executable} sees no CUDA device (CUDA build: "
                               f"{torch.version.cuda or 'none, this is a CPU-only wheel'}); install torch's CUDA build")
        self.device, self.io = device, options.get("io", "host")
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()  # the peak then covers the model, its load and every call
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only settable before the first parallel work; keep what is there
            pass
        # Once for the process (the runner calls from this thread only): entering the mode is no
        # part of the timed call, as in a serving loop that sets it up once.
        self._inference_mode = torch.inference_mode()
        self._inference_mode.__enter__()
        how = dict((manifest.get("notes") or {}).get("torch_load") or {})
        _import_required(list(manifest.get("runtime_requires") or []))
        if how.get("quantized_engine"):
            _set_engine(how["quantized_engine"])
        self.module = _compile(_load(model_path, how, device), how)
        self.input_specs = [
            (t["name"], tuple(d if isinstance(d, int) else None for d in t["shape"]), t["dtype"])
            for t in manifest["inputs"]
        ]
        self.output_names = [t["name"] for t in manifest["outputs"]]
        self.details = {
            "format": how.get("format") or "torch.export",
            "quantized_engine": torch.backends.quantized.engine if how.get("quantized_engine") else None,
            "compile": how.get("compile"),
            "compile_in_first_call": bool(how.get("compile")),
            "num_threads": torch.get_num_threads(),
            "num_interop_threads": torch.get_num_interop_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "inference_mode": True,
            "runtime_requires": list(manifest.get("runtime_requires") or []),
            "device": device,
            "io": self.io,
            "host_device_copies_timed": None if device == "cpu" else self.io == "host",
            "timing_sync": None if device == "cpu" else (
                "outputs copied to the host (.cpu()) inside the call" if self.io == "host"
                else "torch.cuda.synchronize() at the end of the call"),
        }
        if device == "cuda":
            self.details["cuda_device"] = torch.cuda.get_device_name(0)

    def prepare(self, feed: Dict[str, np.ndarray]) -> tuple:
        """numpy -> torch tensors of the model's input dtypes, once, outside the timed region."""
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(feed[name], dtype=dtype)) for name, _, dtype in self.input_specs)
        if self.device != "cpu" and self.io == "device":
            tensors = tuple(t.to(self.device) for t in tensors)
            torch.cuda.synchronize()
        return tensors

    def run(self, prepared: tuple):
        if self.device != "cpu" and self.io == "host":
            prepared = tuple(t.to(self.device, non_blocking=False) for t in prepared)
        out = self.module(*prepared)
        if isinstance(out, torch.Tensor):
            out = (out,)
        elif isinstance(out, dict):
            out = tuple(out.values())
        if self.device != "cpu" and self.io == "device":
            torch.cuda.synchronize()  # the call's GPU work is done when run() returns
            return out
        return _numpy(out, on_cpu=self.device == "cpu")

    def close(self) -> None:
        """Leave inference mode (the runner's process just ends; an in-process user calls this)."""
        if self._inference_mode is not None:
            self._inference_mode.__exit__(None, None, None)
            self._inference_mode = None

    def fetch(self, out) -> List[np.ndarray]:
        """run()'s outputs as host arrays (they stay on the GPU with io "device")."""
        return _numpy(out) if self.device != "cpu" and self.io == "device" else out

    def after_window(self) -> Dict[str, Any]:
        if self.device != "cuda":
            return {}
        return {"gpu_mem_peak_allocated_mb": torch.cuda.max_memory_allocated() / (1024.0 * 1024.0)}
