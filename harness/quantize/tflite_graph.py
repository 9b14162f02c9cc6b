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
    interpreter = _interpreter(model)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():
        inputs = [i for i in op["inputs"] if i >= 0]
        if op["op_name"] in WEIGHTED_OPS and len(inputs) > 1 and inputs[1] in tensors:
            weight = tensors[inputs[1]]
            found.append(WeightedOp(op["index"], op["op_name"], weight["name"], np.dtype(weight["dtype"]).name,
                                    tuple(tensors[o]["name"] for o in op["outputs"] if o >= 0)))
    return found


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


def resolve_layers(model: bytes | Path, layers: Iterable[str]) -> list[WeightedOp]:
    """The weighted ops of the named layers (Keras layer or torch module names); by default
    (no names) the first and the last weighted op. An unknown name is an error listing the ops."""
    ops = weighted_ops(model)
    if not ops:
        raise ValueError("the model has no weighted op (CONV_2D, FULLY_CONNECTED, ...) to keep in float")
    layers = list(layers)
    if not layers:
        return [ops[0]] if len(ops) == 1 else [ops[0], ops[-1]]
    chosen: list[WeightedOp] = []
    for layer in layers:
        hits = [op for op in ops if names_layer(op.weight, layer)]
        if not hits:
            raise ValueError(f"layer {layer!r} to keep in float matches no weighted op; the ops are: "
                             + "; ".join(op.short() for op in ops))
        chosen.extend(op for op in hits if op not in chosen)
    return chosen


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
    if not int_ops:
        raise RuntimeError(f"{what}: no weighted op outside the kept layers was quantized")
    return {"kept_float_ops": [op.short() for op in kept], "int8_weighted_ops": len(int_ops),
            "float_weighted_ops": len(after) - len(int_ops)}
