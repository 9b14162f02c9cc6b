"""onnxruntime backend for the runner (imports onnxruntime and numpy only)."""
from __future__ import annotations

from typing import Dict, List

import numpy as np

import onnxruntime as ort

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
    "tensor(bool)": "bool", "tensor(bfloat16)": "bfloat16",
}


class Backend:
    runtime = "onnxruntime"
    runtime_version = ort.__version__

    def __init__(self, model_path: str, manifest: dict, threads: int, options: dict) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = options.get("providers") or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(model_path, sess_options=so, providers=providers)
        self.input_specs = [
            (i.name, tuple(d if isinstance(d, int) else None for d in i.shape), _ORT_TYPES.get(i.type, i.type))
            for i in self.session.get_inputs()
        ]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.details = {
            "providers_requested": providers,
            "providers_used": self.session.get_providers(),
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "intra_op_num_threads": threads,
        }

    def prepare(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Cast to the model's input dtypes once, outside the timed region."""
        return {name: np.ascontiguousarray(feed[name], dtype=dtype) for name, _, dtype in self.input_specs}

    def run(self, prepared: Dict[str, np.ndarray]) -> List[np.ndarray]:
        return self.session.run(None, prepared)
