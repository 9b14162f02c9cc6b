"""onnxruntime backend for the runner (imports onnxruntime and numpy only).

Execution providers come from options["providers"] (the target's: CPU by default, CUDA on
a cuda target) with the recipe's own provider first when its manifest names one (the
TensorRT recipes). A requested provider that ORT does not enable is an error, never a
silent CPU run. Timing on a GPU is correct either way the outputs travel:
  - io "host" (default): numpy in, numpy out; run() returns when the outputs are on the
    host, so the host-device copies are inside the timed region;
  - io "device": inputs copied to the device once in prepare(), outputs bound on the
    device, run() ends with an explicit synchronize; the copies are outside the timed region.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Optional

import numpy as np

import onnxruntime as ort

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
    "tensor(bool)": "bool", "tensor(bfloat16)": "bfloat16",
}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def requested_providers(options: dict, manifest: dict) -> List[Any]:
    """The recipe's provider (manifest params "execution_provider") first, then the target's.
    Entries are "Name" or ["Name", {provider options}] (JSON has no tuples)."""
    recipe_ep = (manifest.get("params") or {}).get("execution_provider")
    entries = ([recipe_ep] if recipe_ep else []) + list(options.get("providers") or ["CPUExecutionProvider"])
    providers: List[Any] = []
    seen = set()
    for entry in entries:
        name, provider_options = (entry, None) if isinstance(entry, str) else (entry[0], dict(entry[1] or {}))
        if name not in seen:
            seen.add(name)
            providers.append((name, provider_options) if provider_options else name)
    return providers


def provider_name(entry: Any) -> str:
    return entry if isinstance(entry, str) else entry[0]


def node_placement(profile_path: str) -> Dict[str, Dict[str, int]]:
    """provider -> {op type: nodes} from an ORT profile of one run."""
    with open(profile_path) as f:
        events = json.load(f)
    nodes: Dict[str, tuple] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and "provider" in args:
            nodes[event["name"]] = (args["provider"], args.get("op_name", "?"))
    placement: Dict[str, Dict[str, int]] = {}
    for provider, op in nodes.values():
        ops = placement.setdefault(provider, {})
        ops[op] = ops.get(op, 0) + 1
    return placement


class Backend:
    runtime = "onnxruntime"
    runtime_version = ort.__version__

    def __init__(self, model_path: str, manifest: dict, threads: int, options: dict) -> None:
        self.model_path = model_path
        self.threads = threads
        self.providers = requested_providers(options, manifest)
        names = [provider_name(p) for p in self.providers]
        wants_gpu = any(n in GPU_PROVIDERS for n in names)
        missing = [n for n in names if n not in ort.get_available_providers()]
        if missing:
            raise RuntimeError(
                f"onnxruntime {ort.__version__} in {sys.executable} has no {', '.join(missing)} "
                f"(it has {', '.join(ort.get_available_providers())}); on a GPU host install onnxruntime-gpu "
                "in place of onnxruntime (see requirements/gpu.txt)")
        if wants_gpu and hasattr(ort, "preload_dlls"):
            # onnxruntime-gpu >= 1.21: load CUDA/cuDNN from the nvidia-* wheels if present.
            ort.preload_dlls()
        self.session = ort.InferenceSession(model_path, sess_options=self._session_options(), providers=self.providers)
        used = self.session.get_providers()
        dropped = [n for n in names if n not in used]
        if dropped:
            raise RuntimeError(
                f"onnxruntime did not enable {', '.join(dropped)} (requested {', '.join(names)}; enabled "
                f"{', '.join(used)}): the CUDA, cuDNN or TensorRT libraries it needs did not load, see the runner log")
        self.device = "cuda" if any(n in GPU_PROVIDERS for n in used) else "cpu"
        self.io = options.get("io", "host")
        if self.io not in ("host", "device"):
            raise ValueError(f"option io must be 'host' or 'device', not {self.io!r}")
        self.input_specs = [
            (i.name, tuple(d if isinstance(d, int) else None for d in i.shape), _ORT_TYPES.get(i.type, i.type))
            for i in self.session.get_inputs()
        ]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._probe_placement = bool(options.get("node_placement", wants_gpu))
        self._sample: Optional[Dict[str, np.ndarray]] = None
        self.details = {
            "providers_requested": names,
            "provider_options": {provider_name(p): p[1] for p in self.providers if not isinstance(p, str)},
            "providers_used": used,
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "intra_op_num_threads": threads,
            "io": self.io,
            # Only meaningful when the model runs on a device other than the host.
            "host_device_copies_timed": None if self.device == "cpu" else self.io == "host",
            "timing_sync": ("run() returns host outputs" if self.io == "host"
                            else "run_with_iobinding, then IOBinding.synchronize_outputs()"),
        }

    def _session_options(self) -> "ort.SessionOptions":
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return so

    def prepare(self, feed: Dict[str, np.ndarray]):
        """Cast to the model's input dtypes once, outside the timed region; with io
        "device" also copy the inputs to the device and bind the outputs there."""
        arrays = {name: np.ascontiguousarray(feed[name], dtype=dtype) for name, _, dtype in self.input_specs}
        if self._sample is None:
            self._sample = arrays
        if self.io == "host":
            return arrays
        binding = self.session.io_binding()
        values = []  # the device copies must outlive the binding's use
        for name, array in arrays.items():
            value = ort.OrtValue.ortvalue_from_numpy(array, self.device, 0)
            binding.bind_ortvalue_input(name, value)
            values.append(value)
        for name in self.output_names:
            binding.bind_output(name, self.device, 0)
        return binding, values

    def run(self, prepared):
        if self.io == "host":
            return self.session.run(None, prepared)
        binding = prepared[0]
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()  # the outputs are complete on the device when run() returns
        return binding

    def fetch(self, outputs) -> List[np.ndarray]:
        return outputs if self.io == "host" else outputs.copy_outputs_to_cpu()

    def post_details(self) -> Dict[str, Any]:
        """Which execution provider ran each node: one profiled run of a second session
        (profiling the measured session would slow the timed calls)."""
        if not self._probe_placement or self._sample is None:
            return {}
        folder = tempfile.mkdtemp(prefix="qb-placement-")
        try:
            so = self._session_options()
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(folder, "placement")
            probe = ort.InferenceSession(self.model_path, sess_options=so, providers=self.providers)
            probe.run(None, self._sample)
            return {"node_placement": node_placement(probe.end_profiling())}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
