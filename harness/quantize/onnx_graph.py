"""Reading an ONNX graph on the host: what the manifest records, and which nodes a layer name means.

Shared by every recipe that writes an .onnx file (onnxruntime's own, the TensorRT ones, the
PT2E QAT export in qat_torch.py), so none of them imports another's recipes.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterable, Optional

from harness.artifacts import BuiltModel, TensorSpec
from harness.quantize.layer_names import Layer, resolve

OPSET = 18
# Ops whose weights int8 quantizes; the layers `mixed` may keep in float (a MatMul of two
# activations, such as attention's Q.K^T, counts too: static QDQ quantizes both its inputs).
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")

_ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 11: "float64", 7: "int64", 6: "int32", 3: "int8", 2: "uint8", 9: "bool"}


def _tensor_specs(values) -> tuple[TensorSpec, ...]:
    specs = []
    for value in values:
        tensor_type = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim)
        specs.append(TensorSpec(value.name, dims, _ONNX_DTYPES.get(tensor_type.elem_type, str(tensor_type.elem_type))))
    return tuple(specs)


def describe(path: Path, notes: Optional[dict] = None) -> BuiltModel:
    import onnx

    from harness.quantize.onnx_weights import weight_storage

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    # How the weights are stored (int8 vs float, by op): a row says why an int8 file is not smaller.
    notes = dict(notes or {}, weight_storage=weight_storage(model))
    return BuiltModel(path.name, _tensor_specs(inputs), _tensor_specs(model.graph.output), "onnxruntime", notes=notes)


def nodes(model_path: Path) -> list:
    import onnx

    return list(onnx.load(str(model_path), load_external_data=False).graph.node)


def module_path(node) -> str:
    """The PyTorch module path the dynamo exporter recorded for a node ('' if none).

    Its name scopes are the qualified name of every enclosing module, then the op's own
    name: ['', 'bert', 'bert.encoder', ..., 'bert.encoder.layer.0.output.dense', 'linear_5'].
    """
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = [s for s in ast.literal_eval(prop.value) if s]
            return scopes[-2] if len(scopes) >= 2 else ""
    return ""


def layers(model_path: Path) -> list[Layer]:
    """The weighted nodes as layers, in graph order: one layer per torch module (its path,
    from the exporter's name scopes, with every node it became), else one per node."""
    grouped: dict[str, list] = {}
    for node in nodes(model_path):
        if node.op_type in WEIGHTED_OPS:
            grouped.setdefault(module_path(node) or node.name, []).append(node)
    return [Layer(name, tuple(n.name for n in members), "+".join(dict.fromkeys(n.op_type for n in members)))
            for name, members in grouped.items()]


def node_names(found: Iterable[Layer]) -> list[str]:
    return [name for layer in found for name in layer.native]


def resolve_nodes(model_path: Path, names: Iterable[str], where: str) -> list[str]:
    """ONNX node names for the given layers (module paths, node names or modules holding
    layers); an unknown name is an error listing close matches."""
    return node_names(resolve(names, layers(model_path), where))


def first_and_last_weighted(model_path: Path) -> list[str]:
    weighted = [n.name for n in nodes(model_path) if n.op_type in WEIGHTED_OPS]
    return sorted({weighted[0], weighted[-1]}, key=weighted.index) if weighted else []


def kept_layers(model_path: Path, names: Optional[list[str]], where: str) -> list[Layer]:
    """The layers `mixed` keeps float: the named ones, or (names None) the layers of the first
    and last weighted node."""
    found = layers(model_path)
    if names is not None:
        return resolve(names, found, where)
    ends = set(first_and_last_weighted(model_path))
    return [layer for layer in found if ends & set(layer.native)]
