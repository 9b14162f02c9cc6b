"""LiteRT for the sensitivity search, from both TFLite sources.

- litert-torch (the torch module converted, then ai-edge-quantizer): the static recipe with
  `no_quantize` on the float layers' ops, every build reusing one `calibrate()` result; the
  per-layer SQNR comes from ai-edge-quantizer's model validation (`model_validator.compare_model`,
  what `Quantizer.validate` runs: every tensor of the quantized model against the float one,
  ValidationErrorMetric.SNR, averaged over samples).
- keras (tf.lite.TFLiteConverter): TensorFlow's `QuantizationDebugger` calibrates once; each
  build sets its options' `denylisted_nodes` to the float layers' ops and asks for the
  non-debug model; the per-layer SQNR comes from its NumericVerify run (each op's quantized
  output against the float op on the same inputs: a per-layer figure, not an accumulated one).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from harness.quantize import tflite_aeq, tflite_graph, tflite_keras
from harness.quantize.probe import Probe, host_outputs, pooled_sqnr_db
from harness.quantize.tflite_graph import WeightedOp


class _LiteRTProbe(Probe):
    framework = "tflite"

    def _ops(self, names) -> list[WeightedOp]:
        by_weight = {op.weight: op for op in self.ops}
        return [by_weight[w] for layer in self.float_layers(sorted(names)) for w in layer.native]

    def _write(self, content: bytes) -> Path:
        path = self.new_path(".tflite")
        path.write_bytes(bytes(content))
        return path

    def _manifest(self, path: Path) -> dict:
        return {"notes": dict(tflite_graph.describe(path, self.signature_inputs, self.layout).notes)}

    def outputs(self, candidate: Path) -> dict[str, np.ndarray]:
        return host_outputs(self.framework, candidate, self._manifest(candidate), self.tuning.inputs)

    def fp32_outputs(self) -> dict[str, np.ndarray]:
        path = self._write(self.float_model)
        try:
            return self.outputs(path)
        finally:
            path.unlink(missing_ok=True)


class AeqProbe(_LiteRTProbe):
    """ai-edge-quantizer's recipes on an fp32 .tflite: litert-torch's conversion of the torch
    module, a user's .tflite file, a SavedModel's conversion (tflite_aeq.FloatTflite)."""

    sqnr_tool = ("ai_edge_quantizer model validation (model_validator.compare_model, SNR of each op output in the "
                 "all-int8 model vs float, mean over samples)")

    def __init__(self, ctx, recipe, tuning, src) -> None:
        super().__init__(ctx, recipe, tuning)
        self.src = src
        self.float_model = src.fp32(ctx)
        self.ops = tflite_graph.weighted_ops(self.float_model)
        self.layers = tflite_graph.layers(self.float_model, src.known_layers(ctx), op_types=tflite_aeq.static_ops(self.float_model))
        self.signature_inputs = src.signature(ctx)
        self.layout = src.layout
        self.calibration = tflite_aeq.static_calibration(ctx, src, self.float_model)

    def build(self, float_layers: frozenset[str]) -> Path:
        kept = self._ops(float_layers)
        configure, _, _ = tflite_aeq.mixed_configure(self.float_model, kept, self.ctx.kept_precision)
        return self._write(tflite_aeq.quantize(self.ctx, self.src, f"static_wi8_ai8 with {len(kept)} ops kept float",
                                               configure, self.float_model, calibration=self.calibration))

    def layer_sqnr(self, all_int8: Path, samples: int) -> dict[str, float]:
        from ai_edge_quantizer import model_validator
        from ai_edge_quantizer.utils import validation_utils

        feeds = tflite_aeq.calibration_data(self.ctx, self.float_model, self.src)["serving_default"][:samples]
        result = model_validator.compare_model(self.float_model, all_int8.read_bytes(), {"serving_default": feeds},
                                               [validation_utils.ValidationErrorMetric.SNR], num_threads=1)
        tensors = result.get_all_tensor_results()
        by_weight = {op.weight: op for op in self.ops}
        found = {}
        for layer in self.layers:
            ratios = [tensors[out]["snr"] for w in layer.native for out in by_weight[w].outputs[:1] if out in tensors]
            if ratios and np.mean(ratios) > 0:
                found[layer.name] = 10.0 * math.log10(float(np.mean(ratios)))
        return found


class KerasProbe(_LiteRTProbe):
    sqnr_tool = ("tf.lite.experimental.QuantizationDebugger (NumericVerify: each op's int8 output vs the float op on "
                 "the same inputs)")

    def __init__(self, ctx, recipe, tuning) -> None:
        super().__init__(ctx, recipe, tuning)
        tf = tflite_keras.import_tensorflow()
        self.float_model = tflite_keras.convert(ctx, "float32 (the layers the search may keep float)")
        self.ops = tflite_graph.weighted_ops(self.float_model)
        self.layers = tflite_graph.layers(self.float_model, tflite_keras.source_layers(ctx))
        self.signature_inputs = {n: n for n in tflite_keras.input_order(ctx)}
        self.layout = tflite_keras.layout(ctx)
        self.debugger = tflite_keras.debugger(ctx, [])
        self.tf = tf

    def build(self, float_layers: frozenset[str]) -> Path:
        self.debugger.options.denylisted_nodes = [op.outputs[0] for op in self._ops(float_layers)]
        return self._write(self.debugger.get_nondebug_quantized_model())

    def layer_sqnr(self, all_int8: Path, samples: int) -> dict[str, float]:
        # NumericVerify on the debug model with nothing denylisted. A second debugger reads that
        # model from its bytes: the converter-built one runs its interpreter without
        # experimental_preserve_all_tensors, and the float tensors layer_direct_compare_metrics
        # reads there can hold another op's data (tensorflow 2.21: a signal of 2e75 for conv2).
        self.debugger.options.denylisted_nodes = []
        options = self.tf.lite.experimental.QuantizationDebugOptions(
            layer_direct_compare_metrics={"signal": _signal, "noise": _noise})
        verify = self.tf.lite.experimental.QuantizationDebugger(
            quant_debug_model_content=self.debugger.get_debug_quantized_model(),
            debug_dataset=tflite_keras.representative_dataset(self.ctx, samples), debug_options=options)
        verify.run()
        stats = verify.layer_statistics or {}
        by_weight = {op.weight: op for op in self.ops}
        found = {}
        for layer in self.layers:
            outputs = [by_weight[w].outputs[0] for w in layer.native]
            hits = [v for k, v in stats.items() if any(k.startswith(f"NumericVerify/{o}") for o in outputs)]
            signal, noise = sum(h["signal"] for h in hits), sum(h["noise"] for h in hits)
            if hits and signal > 0:
                found[layer.name] = pooled_sqnr_db(signal, noise)
        return found


def _dequantized(quantized, scale, zero_point) -> np.ndarray:
    return (np.asarray(quantized, dtype=np.float64) - float(zero_point)) * float(scale)


def _signal(float_value, quantized, scale, zero_point) -> float:
    return float(np.sum(np.asarray(float_value, dtype=np.float64) ** 2))


def _noise(float_value, quantized, scale, zero_point) -> float:
    return float(np.sum((np.asarray(float_value, dtype=np.float64) - _dequantized(quantized, scale, zero_point)) ** 2))
