"""Run the real runner (`python -m runner config.json`, fresh process, staged like on a
device) on a small real ONNX model: the digits logistic regression. For tests of runner
features that need no quantization: sensors on recorded trees, backend options."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from harness.runner_bundle import stage_runner
from targets.local import runner_env
from tests import onnx_models


def logreg(folder: Path) -> tuple[Path, Path]:
    """(model.onnx, inputs.npz) in `folder`, built once."""
    model, inputs = folder / "logreg.onnx", folder / "inputs.npz"
    if not model.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        onnx_models.logistic_regression(model)
        _, _, _, x_eval, _ = onnx_models.digits_flat()
        np.savez(inputs, input=x_eval)
    return model, inputs


def run_runner(work: Path, options: Optional[dict] = None, sensors: Optional[dict] = None,
               min_duration_s: float = 0.05, max_duration_s: float = 2.0, batch_size: int = 4,
               inputs: Optional[Path] = None) -> tuple[dict, dict]:
    """(result.json, outputs by name) of one runner process on the logistic regression
    (its evaluation inputs, or the .npz `inputs`)."""
    model, default_inputs = logreg(work / "model")
    inputs = inputs or default_inputs
    config = {
        "framework": "onnxruntime", "artifact": str(model), "manifest": {}, "inputs": str(inputs),
        "outputs": str(work / "outputs.npz"), "result": str(work / "result.json"), "threads": 1,
        "batch_size": batch_size, "warmup_runs": 2, "warmup_s": 0.0, "min_runs": 10,
        "min_duration_s": min_duration_s, "max_duration_s": max_duration_s,
        "options": options or {}, "sensors": sensors or {"profile": "generic-linux", "idle_s": 0.1},
    }
    (work / "config.json").write_text(json.dumps(config))
    proc = subprocess.run([sys.executable, "-m", "runner", str(work / "config.json")], cwd=work, capture_output=True,
                          text=True, timeout=300, env=runner_env(stage_runner(work / "runner")))
    result = json.loads((work / "result.json").read_text())
    assert proc.returncode == (0 if result["status"] == "ok" else 1), proc.stdout + proc.stderr
    outputs = {}
    if result["status"] == "ok":
        with np.load(work / "outputs.npz") as npz:
            outputs = {k: npz[k] for k in npz.files}
    return result, outputs
