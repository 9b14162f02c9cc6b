"""Users' model files: check one is there and is what it claims, hash it, read its inputs.

One reader per format a user brings: an ONNX file, a `.tflite` file, a `torch.export`
program (`.pt2`), a Keras `.keras` file and a TensorFlow SavedModel directory. Each raises
`ModelFileError` naming the file and what is wrong (missing, not such a model), and each
gives the model's own inputs as TensorSpecs (name, shape with None for dynamic dims, dtype),
which `harness.data.bind_inputs` checks the data against. Libraries are imported lazily:
reading a declaration never imports TensorFlow or torch.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from harness.artifacts import TensorSpec, sha256_file


class ModelFileError(ValueError):
    """A model file is missing or is not the model it is declared as; the message names it."""


# kind -> (what it is, how a user makes one)
KINDS: dict[str, tuple[str, str]] = {
    "onnx": ("an ONNX model file", "torch.onnx.export / tf2onnx / paddle2onnx"),
    "tflite": ("a TFLite (LiteRT) flatbuffer", "tf.lite.TFLiteConverter(...).convert() or litert_torch.convert(...)"),
    "pt2": ("a torch.export program", "torch.export.save(torch.export.export(model, args), 'model.pt2')"),
    "keras": ("a Keras .keras file", "model.save('model.keras')"),
    "saved_model": ("a TensorFlow SavedModel directory", "model.export('dir') or tf.saved_model.save(model, 'dir')"),
}


def check_exists(path: Path, kind: str) -> Path:
    path = Path(path).expanduser()
    what, how = KINDS[kind]
    if kind == "saved_model":
        if not path.is_dir():
            raise ModelFileError(f"SavedModel directory {path} does not exist" if not path.exists()
                                 else f"{path} is a file, not a SavedModel directory (made by {how})")
        if not (path / "saved_model.pb").is_file():
            raise ModelFileError(f"{path} is not {what}: it has no saved_model.pb (made by {how})")
        return path
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist ({what}, made by {how})")
    if not path.is_file():
        raise ModelFileError(f"{path} is a directory, not {what}")
    return path


def content_hash(path: Path) -> str:
    """sha256 of a file, or of a directory's relative file names and contents (a SavedModel)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(path)).encode() + b"\0" + sha256_file(file).encode())
    return h.hexdigest()


def _not_a_model(path: Path, kind: str, exc: BaseException) -> ModelFileError:
    what, how = KINDS[kind]
    detail = " ".join(str(exc).split())[:200] or type(exc).__name__
    return ModelFileError(f"{path} is not {what} ({type(exc).__name__}: {detail}); make one with {how}")


def _dim(value) -> Optional[int]:
    try:
        value = int(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


# -- ONNX -----------------------------------------------------------------------------------------
_ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 11: "float64", 7: "int64", 6: "int32", 5: "int16",
                3: "int8", 2: "uint8", 9: "bool"}


def onnx_inputs(path: Path) -> tuple[TensorSpec, ...]:
    import onnx

    path = check_exists(path, "onnx")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError does not say which file
        raise _not_a_model(path, "onnx", exc) from exc
    if not model.graph.node:
        raise ModelFileError(f"{path} parses as ONNX but its graph has no nodes; is it an ONNX model?")
    initializers = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(_dim(d.dim_value) if d.HasField("dim_value") else None for d in tensor.shape.dim)
        specs.append(TensorSpec(value.name, dims, _ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type))))
    return tuple(specs)


# -- TFLite ---------------------------------------------------------------------------------------
def tflite_interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    path = check_exists(path, "tflite")
    try:
        return Interpreter(model_path=str(path))
    except Exception as exc:
        raise _not_a_model(path, "tflite", exc) from exc


def tflite_signature(path: Path) -> tuple[str, dict, dict]:
    """(signature key, input details by signature name, output details by signature name) of
    a .tflite file with exactly one signature."""
    interpreter = tflite_interpreter(path)
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        raise ModelFileError(
            f"{path} has {len(signatures)} signatures ({', '.join(signatures) or 'none'}); quantbench runs a model with "
            "exactly one (TFLiteConverter.from_keras_model and litert_torch.convert write one: 'serving_default')"
        )
    key = next(iter(signatures))
    runner = interpreter.get_signature_runner(key)
    return key, runner.get_input_details(), runner.get_output_details()


def tflite_inputs(path: Path) -> tuple[TensorSpec, ...]:
    _, inputs, _ = tflite_signature(path)
    return tuple(TensorSpec(name, tuple(_dim(d) for d in detail["shape_signature"]), np.dtype(detail["dtype"]).name)
                 for name, detail in inputs.items())


# -- torch.export ---------------------------------------------------------------------------------
def load_program(path: Path):
    """torch.export.load, with the error naming the file."""
    import torch

    path = check_exists(path, "pt2")
    try:
        return torch.export.load(str(path))
    except Exception as exc:
        raise _not_a_model(path, "pt2", exc) from exc


def program_inputs(program) -> tuple[TensorSpec, ...]:
    """The user inputs of an ExportedProgram (its placeholders that are not parameters,
    buffers or constants), with symbolic dims as None."""
    from torch.export.graph_signature import InputKind

    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    specs = []
    for spec in program.graph_signature.input_specs:
        if spec.kind != InputKind.USER_INPUT:
            continue
        name = spec.arg.name
        value = placeholders[name].meta.get("val")
        if value is None or not hasattr(value, "shape"):
            raise ModelFileError(f"exported program input {name!r} is not a tensor ({type(value).__name__}); "
                                 "quantbench feeds arrays only")
        dims = tuple(d if isinstance(d, int) else None for d in value.shape)
        specs.append(TensorSpec(name, dims, str(value.dtype).replace("torch.", "")))
    return tuple(specs)


def pt2_inputs(path: Path) -> tuple[TensorSpec, ...]:
    return program_inputs(load_program(path))


def check_dynamic_batch(program, path: Path) -> None:
    """quantbench re-exports a program (quantized copies, ONNX, LiteRT) with a dynamic batch
    dimension, which a program exported with a fixed batch cannot give: say how to export it."""
    fixed = [f"{spec.name} {spec.shape}" for spec in program_inputs(program) if not spec.shape or spec.shape[0] is not None]
    if fixed:
        raise ModelFileError(
            f"torch.export program {path} has a fixed batch size (inputs {', '.join(fixed)}); export it with a dynamic "
            "batch: torch.export.export(model, args, dynamic_shapes=({0: torch.export.Dim('batch')},)) "
            "(one dict per input) and save it again"
        )


def load_pt2_module(path: Path):
    """The program's module (its submodules keep the original names: `mixed` resolves them)."""
    program = load_program(path)
    check_dynamic_batch(program, Path(path))
    # No guard submodule (it would run in every re-exported graph); and the class's eval()/train()
    # back (ExportedProgram.module() replaces them with ones that raise; the program is eval already).
    module = program.module(check_guards=False)
    for attr in ("train", "eval"):
        module.__dict__.pop(attr, None)
    return module


# -- Keras and SavedModel -------------------------------------------------------------------------
def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def load_keras_file(path: Path):
    path = check_exists(path, "keras")
    _tf()
    import keras

    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise _not_a_model(path, "keras", exc) from exc


def keras_inputs(model) -> tuple[TensorSpec, ...]:
    specs = []
    for tensor in model.inputs:
        dtype = getattr(tensor.dtype, "name", None) or str(tensor.dtype)
        specs.append(TensorSpec(tensor.name.split(":")[0], tuple(_dim(d) for d in tensor.shape), np.dtype(dtype).name))
    return tuple(specs)


def saved_model_signature(path: Path):
    """The serving signature of a SavedModel: the only one, or 'serving_default'."""
    path = check_exists(path, "saved_model")
    tf = _tf()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise _not_a_model(path, "saved_model", exc) from exc
    signatures = dict(loaded.signatures)
    if not signatures:
        raise ModelFileError(f"SavedModel {path} has no signatures; export it with model.export(dir) or "
                             "tf.saved_model.save(model, dir, signatures=...)")
    key = "serving_default" if "serving_default" in signatures else (next(iter(signatures)) if len(signatures) == 1 else None)
    if key is None:
        raise ModelFileError(f"SavedModel {path} has signatures {sorted(signatures)} and none is 'serving_default'")
    return key, signatures[key]


def saved_model_inputs(path: Path) -> tuple[TensorSpec, ...]:
    _, fn = saved_model_signature(path)
    _, kwargs = fn.structured_input_signature
    return tuple(TensorSpec(name, tuple(_dim(d) for d in spec.shape), spec.dtype.name) for name, spec in kwargs.items())


READERS: dict[str, Callable[[Path], tuple[TensorSpec, ...]]] = {
    "onnx": onnx_inputs,
    "tflite": tflite_inputs,
    "pt2": pt2_inputs,
    "keras": lambda path: keras_inputs(load_keras_file(path)),
    "saved_model": saved_model_inputs,
}
