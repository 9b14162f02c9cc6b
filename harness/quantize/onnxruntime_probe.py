"""onnxruntime for the search: quantize_static with nodes_to_exclude, and qdq_loss_debug.

The graph is preprocessed once, and onnxruntime's own calibration cache
(`quantize_static(calibration_cache_path=...)`) computes the ranges on the first build and
reads them back for every later one: the ranges of a tensor do not depend on which nodes are
excluded. Per-layer SQNR comes from `onnxruntime.quantization.qdq_loss_debug`: both the float
and the all-int8 QDQ graph are augmented to output the tensors around the weighted ops
(`modify_model_output_intermediate_tensors`), run on the same samples (`collect_activations`),
and each layer's output is compared by name (see layer_sqnr).
"""
from __future__ import annotations

from pathlib import Path
import numpy as np

from harness.quantize import onnx_graph
from harness.quantize import onnxruntime as recipes
from harness.quantize.probe import Probe, host_outputs, pooled_sqnr_db


class _Batches:
    """A CalibrationDataReader over a few samples at a time (collect_activations keeps every tensor)."""

    def __init__(self, inputs: dict[str, np.ndarray], batch: int) -> None:
        n = len(next(iter(inputs.values())))
        self._items = iter([{k: v[i:i + batch] for k, v in inputs.items()} for i in range(0, n, batch)])

    def get_next(self):
        return next(self._items, None)

    def __iter__(self):
        return iter(self.get_next, None)


class OnnxruntimeProbe(Probe):
    framework = "onnxruntime"
    sqnr_tool = "onnxruntime.quantization.qdq_loss_debug (layer output in the all-int8 QDQ graph vs float)"

    def __init__(self, ctx, recipe, tuning) -> None:
        super().__init__(ctx, recipe, tuning)
        self.fp32 = recipes.fp32_path(ctx)
        self.layers = onnx_graph.layers(self.fp32)
        self.op_types = recipes.static_op_types(self.fp32)
        self.pre = recipes.preprocessed(ctx, self.workdir)
        present = {node.name for node in onnx_graph.nodes(self.pre)}
        if not set(onnx_graph.node_names(self.layers)) <= present:  # the optimization fused a layer away, as _quantize_static retries
            self.pre.unlink()
            self.pre = recipes.preprocessed(ctx, self.workdir, optimize=False)
        self.cache = self.workdir / "calibration.json"

    def build(self, float_layers: frozenset[str]) -> Path:
        path = self.new_path(".onnx")
        exclude = onnx_graph.node_names(self.float_layers(sorted(float_layers)))
        recipes.quantize_preprocessed(self.ctx, self.pre, path, exclude, self.op_types, calibration_cache=self.cache)
        return path

    def outputs(self, candidate: Path) -> dict[str, np.ndarray]:
        return host_outputs(self.framework, candidate, {}, self.tuning.inputs)

    def fp32_outputs(self) -> dict[str, np.ndarray]:
        return host_outputs(self.framework, self.fp32, {}, self.tuning.inputs)

    def layer_sqnr(self, all_int8: Path, samples: int) -> dict[str, float]:
        from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors
        from onnxruntime.quantization.quant_utils import QUANT_INPUT_SUFFIX

        op_types = sorted({op for layer in self.layers for op in layer.op.split("+")})
        # Each layer's output in both graphs (a QDQ graph keeps the float graph's node names). A
        # quantized output goes through QuantizeLinear -> DequantizeLinear: the DequantizeLinear's
        # output is compared with float (qdq_loss_debug's "post_qdq" against "float", its
        # xmodel_err). The op may have taken a removed Relu's output name (or
        # `<t>_QuantizeLinear_Input` for a graph output): the float tensor of that name.
        graph = onnx_graph.nodes(all_int8)
        consumers = {}
        for node in graph:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input:
                consumers[(node.op_type, node.input[0])] = node.output[0]
        by_name = {node.name: node for node in graph}
        pairs: dict[str, list[tuple[str, str]]] = {}
        for layer in self.layers:
            pairs[layer.name] = []
            for node in layer.native:
                if node not in by_name:
                    continue
                out = by_name[node].output[0]
                quantized = consumers.get(("QuantizeLinear", out))
                computed = consumers.get(("DequantizeLinear", quantized), out) if quantized else out
                reference = out[:-len(QUANT_INPUT_SUFFIX)] if out.endswith(QUANT_INPUT_SUFFIX) else out
                pairs[layer.name].append((reference, computed))
        augmented = {}
        for which, path, types in (("float", self.pre, op_types + ["Relu", "Clip"]),
                                   ("qdq", all_int8, op_types + ["DequantizeLinear"])):
            augmented[which] = self.workdir / f"augmented-{which}.onnx"
            modify_model_output_intermediate_tensors(str(path), str(augmented[which]), op_types_for_saving=types)
        inputs = self.tuning.head(samples)
        sums: dict[str, list[float]] = {layer.name: [0.0, 0.0] for layer in self.layers}
        for start in range(0, samples, 4):  # a few samples at a time: every saved tensor is kept in memory
            chunk = {k: v[start:start + 4] for k, v in inputs.items()}
            if not len(next(iter(chunk.values()))):
                break
            acts = {which: collect_activations(str(path), _Batches(chunk, 4)) for which, path in augmented.items()}
            for name, tensors in pairs.items():
                for reference, computed in tensors:
                    if reference in acts["float"] and computed in acts["qdq"]:
                        ref = np.concatenate([np.ravel(a) for a in acts["float"][reference]]).astype(np.float64)
                        got = np.concatenate([np.ravel(a) for a in acts["qdq"][computed]]).astype(np.float64)
                        sums[name][0] += float(np.sum(ref ** 2))
                        sums[name][1] += float(np.sum((got - ref) ** 2))
        for path in augmented.values():
            path.unlink(missing_ok=True)
        return {name: pooled_sqnr_db(signal, noise) for name, (signal, noise) in sums.items() if signal > 0}
