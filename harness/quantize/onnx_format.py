"""ONNX files for a device whose onnxruntime is older than this host's: the target setting
`onnx_opset = N` converts every ONNX artifact built for it to opset N (when it is higher) and
stamps it with the IR version of that opset's ONNX release, so an onnxruntime that reads only
older IR versions loads it. The converted file must compute what the original computes."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from harness.artifacts import BuiltModel
from harness.compat import ir_for_opset
from harness.data import Dataset

PARITY_SAMPLES = 8


def _default_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _outputs(model_bytes: bytes, dataset: Dataset):
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if not all(n in dataset.eval_inputs for n in names):
        return None
    return session.run(None, {n: dataset.eval_inputs[n][:PARITY_SAMPLES] for n in names})


def fit_to_opset(path: Path, opset: int, built: BuiltModel, dataset: Dataset) -> BuiltModel:
    import onnx
    from onnx import version_converter

    original = Path(path).read_bytes()
    model = onnx.load_from_string(original)
    before = {"opset": _default_opset(model), "ir_version": int(model.ir_version)}
    if before["opset"] > opset:
        try:
            model = version_converter.convert_version(model, opset)
        except Exception as exc:
            raise RuntimeError(f"cannot convert {Path(path).name} from opset {before['opset']} to {opset} (the target's "
                               f"onnx_opset): {type(exc).__name__}: {exc}") from exc
    ir = ir_for_opset(max(_default_opset(model), 1))
    if model.ir_version > ir:
        model.ir_version = ir
    onnx.checker.check_model(model)
    converted = model.SerializeToString()
    reference, got = _outputs(original, dataset), _outputs(converted, dataset)
    max_abs = None
    if reference is not None:
        max_abs = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) for a, b in zip(reference, got))
        scale = max(1.0, max(float(np.max(np.abs(np.asarray(a, np.float64)))) for a in reference))
        if not max_abs <= 1e-4 * scale:
            raise RuntimeError(f"{Path(path).name} at opset {opset} differs from the original by {max_abs:.3g} (max abs)")
    Path(path).write_bytes(converted)
    after = {"opset": _default_opset(model), "ir_version": int(model.ir_version)}
    notes = dict(built.notes, onnx_format={**after, "converted_from": before, "parity_max_abs_diff": max_abs})
    return dataclasses.replace(built, notes=notes)
