"""Reading a .tflite graph on the host: what the manifest records, and which ops a layer name means.

Both TFLite sources (Keras through tf.lite.TFLiteConverter, PyTorch through litert-torch)
end here, so the runner receives the same kind of manifest from either: the dataset's
input names mapped to the model's tensors, their layout, and the I/O quantization.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional

import numpy as np

from harness.artifacts import BuiltModel, TensorSpec
from harness.quantize.layer_names import Layer, resolve

MODEL_FILE = "model.tflite"
# Ops whose second input is a weight tensor: the ones `mixed` may keep in float.
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "EMBEDDING_LOOKUP")


def _interpreter(model: bytes | Path):
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, (bytes, bytearray, memoryview)):
        return Interpreter(model_content=bytes(model))
    return Interpreter(model_path=str(model))


def _dims(signature) -> tuple:
    return tuple("batch" if i == 0 and int(d) < 0 else ("?" if int(d) < 0 else int(d)) for i, d in enumerate(signature))


def _quantization(detail: dict) -> Optional[dict]:
    scale, zero_point = detail["quantization"]
    if not scale:
        return None
    return {"scale": float(scale), "zero_point": int(zero_point)}


def describe(path: Path, signature_inputs: Mapping[str, str], layout: str, notes: Optional[dict] = None) -> BuiltModel:
    """The BuiltModel of a .tflite file. `signature_inputs` maps each dataset input name to the
    model's signature input it feeds (decided by the recipe, so the runner never guesses)."""
    interpreter = _interpreter(path)
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        raise ValueError(f"{path.name} has {len(signatures)} signatures ({', '.join(signatures) or 'none'}); expected one")
    key = next(iter(signatures))
    runner = interpreter.get_signature_runner(key)
    sig_in, sig_out = runner.get_input_details(), runner.get_output_details()
    unknown = sorted(set(signature_inputs.values()) - set(sig_in))
    if unknown or len(signature_inputs) != len(sig_in):
        raise ValueError(f"{path.name}: signature {key!r} has inputs {sorted(sig_in)}, but the recipe maps the data to "
                         f"{dict(signature_inputs)}")
    by_index = {d["index"]: d for d in interpreter.get_input_details() + interpreter.get_output_details()}
    inputs, outputs, tensors, io_quant, layouts = [], [], {"inputs": {}, "outputs": {}}, {}, {}
    for data_name, sig_name in signature_inputs.items():
        detail = by_index[sig_in[sig_name]["index"]]
        inputs.append(TensorSpec(data_name, _dims(detail["shape_signature"]), np.dtype(detail["dtype"]).name))
        tensors["inputs"][data_name] = detail["name"]
        if _quantization(detail):
            io_quant[data_name] = _quantization(detail)
        if len(detail["shape_signature"]) == 4:
            layouts[data_name] = layout
    for sig_name, sig_detail in sig_out.items():
        detail = by_index[sig_detail["index"]]
        outputs.append(TensorSpec(sig_name, _dims(detail["shape_signature"]), np.dtype(detail["dtype"]).name))
        tensors["outputs"][sig_name] = detail["name"]
        if _quantization(detail):
            io_quant[sig_name] = _quantization(detail)
    facts = {
        "signature": key,
        "tflite_tensors": tensors,  # dataset input name / output name -> tensor name (read by the runner)
        "layout": layouts,  # image inputs: the layout the model takes (the runner feeds the dataset's arrays as they are)
        "io_quantization": io_quant,  # per-tensor scale and zero point of integer inputs/outputs
        "ops": [op["op_name"] for op in interpreter._get_ops_details()],
    }
    facts.update(notes or {})
    return BuiltModel(path.name, tuple(inputs), tuple(outputs), "tflite", notes=facts)


@dataclass(frozen=True)
class WeightedOp:
    index: int
    op: str  # CONV_2D, FULLY_CONNECTED, ...
    weight: str  # name of the weight tensor
    weight_dtype: str
    outputs: tuple[str, ...]  # output tensor names (what the TF debugger and ai-edge-quantizer match on)

    @property
    def scope(self) -> str:
        """ai-edge-quantizer's name for the op: its output names joined by ';', plus ';'."""
        return ";".join(self.outputs) + ";"

    def short(self) -> str:
        return f"#{self.index} {self.op} (weights {self.weight[-60:]})"


def op_names(model: bytes | Path) -> set[str]:
    """The builtin op names in a .tflite graph."""
    return {op["op_name"] for op in _interpreter(model)._get_ops_details()}


def weighted_ops(model: bytes | Path) -> list[WeightedOp]:
    """The ops with weights, in execution order, as written in the file (before any delegate)."""
    return [op for op, _ in _weighted_ops(model, with_weights=False)]


def _weighted_ops(model: bytes | Path, with_weights: bool) -> list[tuple[WeightedOp, Optional[np.ndarray]]]:
    interpreter = _interpreter(model)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    if with_weights:
        interpreter.allocate_tensors()
    found = []
    ops = interpreter._get_ops_details()
    dequantized_from = {op["outputs"][0]: op["inputs"][0] for op in ops if op["op_name"] == "DEQUANTIZE"}
    for op in ops:
        inputs = [i for i in op["inputs"] if i >= 0]
        if op["op_name"] in WEIGHTED_OPS and len(inputs) > 1 and inputs[1] in tensors:
            weight = tensors[inputs[1]]
            dtype = np.dtype(weight["dtype"]).name
            source = dequantized_from.get(inputs[1])
            if source is not None and source in tensors:  # float16 (or int8) weights dequantized in the graph
                dtype = np.dtype(tensors[source]["dtype"]).name
            values = interpreter.get_tensor(weight["index"]) if with_weights and dtype == "float32" else None
            found.append((WeightedOp(op["index"], op["op_name"], weight["name"], dtype,
                                     tuple(tensors[o]["name"] for o in op["outputs"] if o >= 0)), values))
    return found


def _layouts(weight: np.ndarray) -> list[np.ndarray]:
    """A source weight in the layouts TFLite may hold it in: torch Linear/Keras Dense kernels
    as they are or transposed; conv kernels OIHW (torch) or HWIO (Keras) as OHWI, or 1HWO
    for depthwise."""
    if weight.ndim == 2:
        return [weight, weight.T]
    if weight.ndim == 4:
        return [weight.transpose(0, 2, 3, 1), weight.transpose(1, 2, 3, 0), weight.transpose(3, 0, 1, 2),
                weight.transpose(2, 0, 1, 3)]
    return [weight]


def _scaled_fit(a: np.ndarray, b: np.ndarray, axis: int, tolerance: float) -> bool:
    """Does a = b x (one scale per slice of `axis`), within `tolerance` of a's norm?"""
    others = tuple(i for i in range(a.ndim) if i != axis)
    scale = (a * b).sum(axis=others, keepdims=True) / np.maximum((b * b).sum(axis=others, keepdims=True), 1e-300)
    # Sums of squares, not np.linalg.norm/vdot: those call BLAS, whose thread pool costs
    # milliseconds per call on a busy machine (the fit took minutes on MiniLM's `mixed`).
    residual = a - b * scale
    return float(np.sqrt(np.square(residual).sum())) <= tolerance * max(float(np.sqrt(np.square(a).sum())), 1e-300)


PROBE_SLICES = 8  # the cheap first look fits the scales on this many slices of another axis


def same_up_to_scale(tflite_weight: np.ndarray, source_weight: np.ndarray, tolerance: float = 1e-4) -> bool:
    """Is the op's weight the source layer's weight, up to layout and a scale per slice of one
    axis? Converters fold a neighbour into a weight: litert-torch multiplies a linear's input
    columns by the preceding LayerNorm's gamma (and attention's 1/sqrt(d) into query and key),
    a BatchNorm scales a conv's output channels.

    Each (layout, axis) first gets a cheap look: the same fit on the first few slices of
    another axis, with a loose tolerance (a weight that is another layer's misses it by far,
    a match by rounding only); only what passes is fitted in full. MiniLM's `mixed` compares
    every weighted op with every same-sized layer: the full fits alone took minutes."""
    a = np.asarray(tflite_weight, dtype=np.float64)
    for b in _layouts(np.asarray(source_weight, dtype=np.float64)):
        if b.shape != a.shape:
            continue
        for axis in range(a.ndim):
            others = [i for i in range(a.ndim) if i != axis]
            if others:
                probe_axis = max(others, key=lambda i: a.shape[i])
                if a.shape[probe_axis] > PROBE_SLICES:
                    head = [slice(None)] * a.ndim
                    head[probe_axis] = slice(0, PROBE_SLICES)
                    a_head, b_head = a[tuple(head)], b[tuple(head)]
                    if np.any(a_head) and not _scaled_fit(a_head, b_head, axis, 1e-2):
                        continue
            if _scaled_fit(a, b, axis, tolerance):
                return True
    return False


def _segments(tensor_name: str) -> list[str]:
    return [seg for part in tensor_name.split(";") for seg in part.split("/") if seg]


def _litert_module_path(location: str) -> str:
    """A litert-torch location, `pkg.Root/pkg.Class_attr/pkg.Class_attr`, as the module path
    `attr.attr`. The root has no attribute; ModuleList/Sequential containers are not written,
    only their index: `...BertEncoder_encoder/...BertLayer_0/...BertOutput_output/...Linear_dense`
    is `encoder.0.output.dense`."""
    attrs = []
    for seg in location.split("/"):
        last = seg.rsplit(".", 1)[-1]
        if "_" in last:
            attrs.append(last.split("_", 1)[1])
    return ".".join(attrs)


def _without_containers(layer: str) -> str:
    """`bert.encoder.layer.0.output.dense` as litert-torch writes it: `bert.encoder.0.output.dense`."""
    parts = layer.split(".")
    return ".".join(p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].isdigit()))


def names_layer(tensor_name: str, layer: str) -> bool:
    """Does a tensor name carry this layer's name? Keras scopes are `model_1/conv1_1/...`,
    litert-torch writes `.../torch.nn.modules.conv.Conv2d_conv1;...` (class, '_', module path),
    one location per fused op, joined by ';'."""
    pattern = re.compile(re.escape(layer) + r"(_\d+)?")
    if any(pattern.fullmatch(seg) for seg in _segments(tensor_name)):
        return True
    wanted = {layer, _without_containers(layer)}
    return any(_litert_module_path(part) in wanted for part in tensor_name.split(";") if "/" in part)


def _layer_name(op: WeightedOp, weight: Optional[np.ndarray], known: Mapping[str, Optional[np.ndarray]]) -> tuple[str, tuple[str, ...]]:
    """(user-facing name, aliases) of an op: the source layer whose weights it holds (up to a
    folded scale); else the source layer name its weight tensor carries (the longest, for Keras
    scopes; the last location, for fused litert-torch ops); else the litert-torch module path
    of its last location; else the weight tensor name. Names are only the fallback: litert-torch
    fuses locations, so MiniLM's `value` weight is named `...Linear_value;;...Linear_query`."""
    parts = [part for part in op.weight.split(";") if "/" in part]
    if weight is not None:
        weight = np.asarray(weight, dtype=np.float64)  # once, not once per comparison
        hits = [name for name, w in known.items() if w is not None and w.size == weight.size and same_up_to_scale(weight, w)]
        if len(hits) == 1:  # litert-torch writes a ModuleList's index, not its name: an alias
            alias = _without_containers(hits[0])
            return hits[0], ((alias,) if parts and alias != hits[0] else ())
    for part in reversed(parts):  # litert-torch: the op's own location is the last one
        hits = [name for name in known if names_layer(part, name)]
        if hits:
            name = max(hits, key=len)
            path = _litert_module_path(part)
            return name, tuple(a for a in (path,) if a and a != name)
    hits = [name for name in known if names_layer(op.weight, name)]
    if hits:
        return max(hits, key=len), ()
    path = _litert_module_path(parts[-1]) if parts else ""
    return (path or op.weight), ()


def layers(model: bytes | Path, known: Mapping[str, Optional[np.ndarray]] = {},
           op_types: Optional[Iterable[str]] = None) -> list[Layer]:
    """The weighted ops (of `op_types`, default all) as layers, in execution order. `known`:
    the source's layer names (torch module paths, Keras layer names) with their float weights
    (None for a layer without); each op is named by the layer whose weights it holds."""
    wanted = set(op_types) if op_types is not None else None
    known = {name: None if w is None else np.asarray(w, dtype=np.float64) for name, w in known.items()}  # converted once
    grouped: dict[str, list[WeightedOp]] = {}
    aliases: dict[str, tuple[str, ...]] = {}
    for op, weight in _weighted_ops(model, with_weights=any(w is not None for w in known.values())):
        if wanted is not None and op.op not in wanted:
            continue
        name, also = _layer_name(op, weight, known)
        grouped.setdefault(name, []).append(op)
        aliases[name] = tuple(dict.fromkeys(aliases.get(name, ()) + also))
    return [Layer(name, tuple(op.weight for op in ops), "+".join(dict.fromkeys(op.op for op in ops)), aliases[name])
            for name, ops in grouped.items()]


def kept_layers(model: bytes | Path, names: Optional[Iterable[str]], where: str,
                known: Mapping[str, Optional[object]] = {}) -> tuple[list[WeightedOp], list[str]]:
    """(weighted ops, user-facing layer names) `mixed` keeps float: the named layers (torch
    module paths, Keras layer names, op locations), or (names None) the first and the last
    weighted op. An unknown name is an error listing close matches."""
    ops = weighted_ops(model)
    if not ops:
        raise ValueError("the model has no weighted op (CONV_2D, FULLY_CONNECTED, ...) to keep in float")
    found = layers(model, known)
    by_weight = {op.weight: op for op in ops}
    if names is None:
        ends = [ops[0]] if len(ops) == 1 else [ops[0], ops[-1]]
        return ends, [layer.name for layer in found if {op.weight for op in ends} & set(layer.native)]
    chosen = resolve(list(names), found, where)
    return [by_weight[w] for layer in chosen for w in layer.native], [layer.name for layer in chosen]


def resolve_layers(model: bytes | Path, names: Iterable[str], where: str, known: Mapping[str, Optional[object]] = {}) -> list[WeightedOp]:
    """The weighted ops of the named layers; by default (no names) the first and the last weighted op."""
    names = list(names)
    return kept_layers(model, names or None, where, known)[0]


# Ops that only move values (layout): between the model's input and a kept layer they decide
# whether that layer really reads float data.
LAYOUT_OPS = ("RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS")


def graph_io_of(model: bytes | Path, ops: list[WeightedOp]) -> tuple[bool, bool, list[str]]:
    """(does any of `ops` read a graph input, directly or through layout ops; does any write a
    graph output; the scopes of those layout ops, in ai-edge-quantizer's naming)."""
    interpreter = _interpreter(model)
    inputs = {d["index"] for d in interpreter.get_input_details()}
    outputs = {d["index"] for d in interpreter.get_output_details()}
    details = {op["index"]: op for op in interpreter._get_ops_details()}
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    producer = {o: op for op in details.values() for o in op["outputs"]}
    reads, layout = False, []
    for op in ops:
        tensor, chain = details[op.index]["inputs"][0], []
        while tensor in producer and producer[tensor]["op_name"] in LAYOUT_OPS:
            chain.append(";".join(names[o] for o in producer[tensor]["outputs"] if o >= 0) + ";")
            tensor = producer[tensor]["inputs"][0]
        if tensor in inputs:
            reads = True
            layout += [scope for scope in chain if scope not in layout]
    writes = any(o in outputs for op in ops for o in details[op.index]["outputs"])
    return reads, writes, layout


def check_kept_float(float_model: bytes | Path, quantized: bytes, kept: list[WeightedOp], what: str) -> dict:
    """After quantizing: the kept ops compute in float and the others do not (else the deny
    list silently did nothing). Weighted ops keep their order through quantization (only
    QUANTIZE/DEQUANTIZE ops are inserted), so the n-th weighted op is the same layer in both.
    Returns the facts for the manifest."""
    before, after = weighted_ops(float_model), weighted_ops(quantized)
    if len(before) != len(after):
        raise RuntimeError(f"{what}: {len(before)} weighted ops before quantization, {len(after)} after")
    positions = [before.index(op) for op in kept]
    floating = ("float32", "float16")
    quantized_anyway = [after[i] for i in positions if after[i].weight_dtype not in floating]
    if quantized_anyway:
        raise RuntimeError(f"{what}: ops meant to stay float were quantized: " + "; ".join(op.short() for op in quantized_anyway))
    int_ops = [op for i, op in enumerate(after) if i not in positions and op.weight_dtype not in floating]
    if not int_ops and len(positions) < len(after):
        raise RuntimeError(f"{what}: no weighted op outside the kept layers was quantized")
    return {"kept_float_ops": [op.short() for op in kept], "int8_weighted_ops": len(int_ops),
            "kept_weight_dtypes": sorted({after[i].weight_dtype for i in positions}),
            "float_weighted_ops": len(after) - len(int_ops)}
