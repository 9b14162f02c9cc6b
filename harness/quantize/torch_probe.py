"""PyTorch (PT2E) for the search: the X86/ARM inductor quantizer with `set_module_name_qconfig(layer,
None)` for the float layers, and torchao's PT2E numeric debugger for the per-layer SQNR.

The model is captured (torch.export) once; each build prepares a copy with its own quantizer,
calibrates it on the calibration split and converts it, exactly as the `mixed` recipe does.
The per-layer SQNR: `prepare_for_propagation_comparison` puts output loggers on the captured
float graph and on the all-int8 converted graph, both run on the same samples, and
`compare_results` pairs each node with its float original (through the node source torchao
records); a layer's figure is its conv/linear node's output.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np

from harness.quantize import pt2e_torch
from harness.runner import measure
from harness.quantize.probe import Probe, pooled_sqnr_db

BATCH = 16


def _weighted_targets() -> set:
    import torch

    return {torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.conv3d.default,
            torch.ops.aten.linear.default}


class TorchProbe(Probe):
    framework = "torch"
    sqnr_tool = ("torchao PT2E numeric debugger (prepare_for_propagation_comparison + compare_results: conv/linear "
                 "output in the all-int8 model vs float)")

    def __init__(self, ctx, recipe, tuning) -> None:
        from harness.quantize.torch_export import fp32_copy

        super().__init__(ctx, recipe, tuning)
        self.quantizer = recipe.params["quantizer"]
        module = fp32_copy(ctx)
        self.captured = pt2e_torch.capture(module, ctx)
        # Native names: the conv/linear nodes of the captured ATen graph (`linear_3`), by module path.
        nodes: dict[str, list[str]] = {}
        for node in self.captured.graph.nodes:
            if node.op == "call_function" and node.target in _weighted_targets():
                nodes.setdefault(pt2e_torch.module_path(node), []).append(node.name)
        self.layers = [replace(layer, native=tuple(nodes.get(layer.name, layer.native))) for layer in pt2e_torch.layers(module)]

    def build(self, float_layers: frozenset[str]):
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        keep = [layer.name for layer in self.float_layers(sorted(float_layers))]
        prepared = prepare_pt2e(copy.deepcopy(self.captured), pt2e_torch.make_quantizer(self.quantizer, keep_float=keep))
        pt2e_torch.calibrate(prepared, self.ctx)
        return convert_pt2e(prepared)

    def _run(self, module, inputs) -> dict[str, np.ndarray]:
        import torch

        names = self.ctx.dataset.input_names

        def run(feed):
            with torch.no_grad():
                out = module(*(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in names))
            return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]

        return measure.evaluation_pass(run, dict(inputs), BATCH, ["output"])

    def outputs(self, candidate) -> dict[str, np.ndarray]:
        return self._run(candidate, self.tuning.inputs)

    def fp32_outputs(self) -> dict[str, np.ndarray]:
        return self._run(self.captured, self.tuning.inputs)

    def discard(self, candidate) -> None:
        pass

    def layer_sqnr(self, all_int8, samples: int) -> dict[str, float]:
        import torch
        from torchao.quantization.pt2e import compare_results, extract_results_from_loggers, prepare_for_propagation_comparison

        reference = prepare_for_propagation_comparison(self.captured)
        actual = prepare_for_propagation_comparison(all_int8)
        inputs = self.tuning.head(samples)
        self._run(reference, inputs)
        self._run(actual, inputs)
        weighted = _weighted_targets()
        targets = {node.name: node.target for node in self.captured.graph.nodes}
        sums = {layer.name: [0.0, 0.0] for layer in self.layers}
        # Only tensor-valued nodes: compare_results raises on a symbolic size (MiniLM's sym_size_int
        # nodes log ints: "ValueError: For debug_info=...sym_size_int_3..."), and SQNR is about tensors.
        ref_results, actual_results = (_tensor_results(extract_results_from_loggers(m)) for m in (reference, actual))
        for summary in compare_results(ref_results, actual_results).values():
            if targets.get(summary.ref_node_name) not in weighted or summary.ref_module_stack not in sums:
                continue
            for result in summary.results:
                ref = result.ref.detach().double()
                sums[summary.ref_module_stack][0] += float((ref ** 2).sum())
                sums[summary.ref_module_stack][1] += float(((result.actual.detach().double() - ref) ** 2).sum())
        pooled = {name: pooled_sqnr_db(signal, noise) for name, (signal, noise) in sums.items()}
        return {name: db for name, db in pooled.items() if db is not None}


def _tensor_results(results: dict) -> dict:
    """The logger results whose every recorded value is a tensor."""
    import torch

    return {info: entry for info, entry in results.items()
            if entry[2] and all(isinstance(value, torch.Tensor) for value in entry[2])}
