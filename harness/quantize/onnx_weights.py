"""How an ONNX artifact stores its weights, and storing them the way a deployed int8 file does.

- `fold_weight_quantize`: a QuantizeLinear whose input is a float initializer quantizes a
  constant at every call, and the file keeps the float weight; folding it stores the int8
  (or uint8) result as the initializer instead, the way onnxruntime's own QDQ quantizer
  writes weights. Same numbers, a quarter of the bytes, no run-time quantize.
- `strip_debug_metadata`: torch.onnx.export (dynamo) writes each node's Python stack trace,
  FX node and class hierarchy into metadata_props; on a small model that outweighs the
  weights, so an int8 file (twice the nodes: QDQ pairs) can be larger than its fp32 one.
  Module paths (name_scopes) are kept: `mixed` resolves torch layer names through them.
- `weight_storage`: bytes of the weights that weighted ops read, by storage type, so a row
  can say why an int8 artifact is not smaller (e.g. an LSTM the recipe leaves in float).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

KEPT_METADATA = ("pkg.torch.onnx.name_scopes",)
# Ops whose non-data inputs are weights (data inputs are graph values, never initializers).
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN", "Attention", "MatMulInteger",
                "ConvInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLSTM", "Gather", "Embedding")
INT8_MODES = ("dynamic-int8", "static-int8", "qat-int8")


def strip_debug_metadata(model) -> int:
    """Drop nodes' debug metadata except the module paths; returns how many entries went."""
    removed = 0
    for node in model.graph.node:
        keep = [(p.key, p.value) for p in node.metadata_props if p.key in KEPT_METADATA]
        removed += len(node.metadata_props) - len(keep)
        del node.metadata_props[:]
        for key, value in keep:
            entry = node.metadata_props.add()
            entry.key, entry.value = key, value
    return removed


def _quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point)."""
    if scale.ndim == 1 and scale.size > 1:  # per axis
        shape = [1] * x.ndim
        shape[axis] = scale.size
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    info = np.iinfo(zero_point.dtype)
    q = np.rint(x.astype(np.float64) / scale.astype(np.float64)) + zero_point.astype(np.int64)
    return np.clip(q, info.min, info.max).astype(zero_point.dtype)


def fold_weight_quantize(model) -> list[str]:
    """Replace every QuantizeLinear of a float initializer by its integer result; returns the
    weights folded. Float initializers nothing else reads are removed."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    folded, drop_nodes = [], []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits:
            continue
        if node.input[1] not in inits or (len(node.input) > 2 and node.input[2] and node.input[2] not in inits):
            continue
        attrs = {a.name: a for a in node.attribute}
        if "block_size" in attrs and attrs["block_size"].i:  # blocked quantization: left as it is
            continue
        x = numpy_helper.to_array(inits[node.input[0]])
        scale = numpy_helper.to_array(inits[node.input[1]])
        zero_point = (numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2]
                      else np.zeros(scale.shape, dtype=np.uint8))  # the operator's default output type
        if zero_point.dtype not in (np.int8, np.uint8):
            continue
        axis = attrs["axis"].i if "axis" in attrs else 1
        quantized = numpy_helper.from_array(_quantize(x, scale, zero_point, axis % max(x.ndim, 1)), node.output[0])
        graph.initializer.append(quantized)
        drop_nodes.append(node)
        folded.append(node.input[0])
    for node in drop_nodes:
        graph.node.remove(node)
    still_read = {name for n in graph.node for name in n.input}
    for name in folded:
        if name not in still_read and name in inits:
            graph.initializer.remove(inits[name])
    return folded


def _nbytes(tensor) -> int:
    """From the dims and the type: the data may live in an external file that is not loaded."""
    from onnx import helper

    return int(np.prod(tensor.dims, dtype=np.int64)) * np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize


def weight_storage(model) -> dict[str, Any]:
    """Bytes of the weights weighted ops read: stored as integers (directly, or through a
    DequantizeLinear), or as floats (also when a QuantizeLinear re-quantizes them at run time),
    with the float bytes by the op type that reads them."""
    from onnx import TensorProto

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    integer = (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4, TensorProto.UINT4, TensorProto.INT16, TensorProto.UINT16)

    def source(name: str, depth: int = 0) -> Optional[str]:
        """The initializer a weighted input comes from, through (De)QuantizeLinear/Transpose/Reshape."""
        if name in inits:
            return name
        node = producer.get(name)
        if node is None or depth > 4 or node.op_type not in ("DequantizeLinear", "QuantizeLinear", "Transpose", "Reshape", "Cast"):
            return None
        return source(node.input[0], depth + 1)

    seen: set[str] = set()
    int_bytes, float_bytes, float_by_op = 0, 0, {}
    for node in graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        for name in node.input:
            init = source(name) if name else None
            if init is None or init in seen:
                continue
            tensor = inits[init]
            if len(tensor.dims) < 2 and node.op_type not in ("Gather", "Embedding"):
                continue  # biases and scales are not what int8 is about
            seen.add(init)
            size = _nbytes(tensor)
            if tensor.data_type in integer:
                int_bytes += size
            elif tensor.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE):
                float_bytes += size
                float_by_op[node.op_type] = float_by_op.get(node.op_type, 0) + size
    return {"integer_weight_bytes": int_bytes, "float_weight_bytes": float_bytes, "float_weight_bytes_by_op": float_by_op}


def _kb(n: float) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MiB"


def size_note(mode: str, weights: Optional[dict], size_ratio: Optional[float]) -> Optional[str]:
    """Why an int8 artifact is not (much) smaller than fp32, from its weight_storage facts;
    None when there is nothing to say."""
    if mode not in INT8_MODES or not isinstance(weights, dict):
        return None
    floats, ints = weights.get("float_weight_bytes", 0), weights.get("integer_weight_bytes", 0)
    not_smaller = size_ratio is not None and size_ratio >= 1.0
    if floats <= ints and not not_smaller:
        return None
    by_op = ", ".join(f"{op} {_kb(n)}" for op, n in sorted((weights.get("float_weight_bytes_by_op") or {}).items(),
                                                            key=lambda kv: -kv[1]))
    parts = [f"weights stored as int8: {_kb(ints)}, as float: {_kb(floats)}" + (f" ({by_op}: not quantized by this recipe)" if by_op else "")]
    if size_ratio is not None:
        parts.append(f"the file is {size_ratio:.2f}x fp32" + ("; the rest is graph structure, which outweighs a model "
                                                              "this small" if not_smaller and floats <= ints else ""))
    return "; ".join(parts)
