"""TFLite (LiteRT) backend for the runner: numpy and one TFLite interpreter, nothing else.

The interpreter is the first of ai_edge_litert.interpreter (LiteRT), tflite_runtime.interpreter
and tensorflow.lite that imports; TensorFlow is only tried when neither of the others is
installed, since edge devices usually have one small runtime and no TensorFlow.

What is timed is the call every backend times (docs/architecture.md, "What one timed call
is"): host arrays of real values in, host arrays of real values out. prepare() only casts the
data to the interface's dtype once, outside the timed region (float32 for a quantized input);
run() quantizes each integer input (int8/int16, with the tensor's own scale and zero point),
copies it into the interpreter (set_tensor), calls invoke(), copies every output out
(get_tensor) and dequantizes the integer ones. A full-integer model's application does that
work on every call, and ONNX Runtime's QDQ graphs and torch's int8 modules do it inside their
timed call (their Quantize/Dequantize ops), so it is inside here too: a TFLite p50 means what an
onnxruntime or torch p50 means. (TFLite's benchmark_model times invoke() alone.)

The manifest's notes.tflite_tensors maps the dataset's input/output names to the model's
tensors (recorded when the artifact was built); without it, the tensor names are the names.
Runs on Python 3.8+.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


def _find_interpreter():
    """(module with Interpreter, runtime name, version, why the earlier choices were skipped)."""
    skipped = []
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter as module

        return module, "ai_edge_litert.interpreter", getattr(ai_edge_litert, "__version__", "unknown"), skipped
    except ImportError as exc:
        skipped.append("ai_edge_litert: %s" % exc)
    try:
        import tflite_runtime
        from tflite_runtime import interpreter as module

        return module, "tflite_runtime.interpreter", getattr(tflite_runtime, "__version__", "unknown"), skipped
    except ImportError as exc:
        skipped.append("tflite_runtime: %s" % exc)
    try:
        import tensorflow as tf
    except ImportError as exc:
        skipped.append("tensorflow: %s" % exc)
        raise ImportError("no TFLite interpreter: " + "; ".join(skipped), name="ai_edge_litert") from exc
    return tf.lite, "tensorflow.lite.Interpreter", tf.__version__, skipped


_MODULE, _RUNTIME, _VERSION, _SKIPPED = _find_interpreter()
_INTEGER_IO = ("int8", "uint8", "int16")


class _Feed:
    """Inputs for the timed call: (tensor index, array, how to quantize it or None) triples."""

    __slots__ = ("arrays",)

    def __init__(self, arrays: Tuple[Tuple[int, np.ndarray, Optional["_Quantizer"]], ...]) -> None:
        self.arrays = arrays


class _Quantizer:
    """An integer tensor's affine quantization: real = (q - zero_point) x scale, in float32 as
    TFLite's own Quantize/Dequantize kernels compute it."""

    __slots__ = ("scale", "zero_point", "dtype", "low", "high")

    def __init__(self, detail: dict) -> None:
        scale, zero_point = _quant(detail)
        self.scale, self.zero_point = np.float32(scale), np.float32(zero_point)
        self.dtype = np.dtype(detail["dtype"])
        info = np.iinfo(self.dtype)
        self.low, self.high = np.float32(info.min), np.float32(info.max)

    def quantize(self, value: np.ndarray) -> np.ndarray:
        q = np.rint(value / self.scale)
        q += self.zero_point
        return np.clip(q, self.low, self.high, out=q).astype(self.dtype)

    def dequantize(self, value: np.ndarray) -> np.ndarray:
        real = value.astype(np.float32)
        real -= self.zero_point
        real *= self.scale
        return real


def _quantizer(detail: dict) -> Optional[_Quantizer]:
    """How an integer input/output tensor maps to real values (None: it is not quantized)."""
    return _Quantizer(detail) if np.dtype(detail["dtype"]).name in _INTEGER_IO and _quant(detail) else None


def _quant(detail: dict) -> Optional[Tuple[float, int]]:
    scale, zero_point = detail["quantization"]
    return (float(scale), int(zero_point)) if scale else None


def delegation(ops: List[dict], requested: bool = True) -> Dict[str, Any]:
    """Which operators XNNPACK took on this interpreter and which run on builtin kernels, as
    {"summary", "complete"} (the row's delegated_ops / delegation_complete). Once tensors are
    allocated, each delegated partition is a DELEGATE node appended after the model's nodes; its
    members are the nodes reached walking back from its outputs to its inputs."""
    nodes = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {}
    for op in nodes:
        for tensor in op["outputs"]:
            producer[int(tensor)] = op
    taken = set()
    partitions = [op for op in ops if op["op_name"] == "DELEGATE"]
    for part in partitions:
        stop = set(int(t) for t in part["inputs"])
        frontier = [int(t) for t in part["outputs"]]
        while frontier:
            tensor = frontier.pop()
            op = producer.get(tensor)
            if tensor in stop or op is None or op["index"] in taken:
                continue
            taken.add(op["index"])
            frontier.extend(int(t) for t in op["inputs"] if int(t) >= 0)
    rest = {}
    for op in nodes:
        if op["index"] not in taken:
            rest[op["op_name"]] = rest.get(op["op_name"], 0) + 1
    listing = ", ".join("%s x%d" % kv for kv in sorted(rest.items(), key=lambda kv: (-kv[1], kv[0])))
    if not requested:
        return {"summary": "xnnpack not requested: %d ops on builtin kernels (%s)" % (len(nodes), listing),
                "complete": False}
    summary = "xnnpack %d/%d ops in %d partition%s" % (len(taken), len(nodes), len(partitions),
                                                       "" if len(partitions) == 1 else "s")
    if rest:
        summary += "; builtin kernels: " + listing
    return {"summary": summary, "complete": bool(partitions) and not rest}


class Backend:
    runtime = _RUNTIME
    runtime_version = _VERSION

    def __init__(self, model_path: str, manifest: dict, threads: int, options: dict) -> None:
        kwargs = {"model_path": model_path, "num_threads": int(threads)}
        self.xnnpack_requested = bool(options.get("xnnpack", True))
        if not self.xnnpack_requested:  # the builtin resolver without default delegates: no XNNPACK
            resolvers = getattr(_MODULE, "OpResolverType", None) or _MODULE.experimental.OpResolverType  # tf.lite keeps it there
            kwargs["experimental_op_resolver_type"] = resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.interpreter = _MODULE.Interpreter(**kwargs)
        self.interpreter.allocate_tensors()  # default delegates (XNNPACK) are applied here
        names = (manifest.get("notes") or {}).get("tflite_tensors") or {}
        self._inputs = self._bind(self.interpreter.get_input_details(), names.get("inputs") or {}, "input")
        self._outputs = self._bind(self.interpreter.get_output_details(), names.get("outputs") or {}, "output")
        self.input_specs = [(name, self._dims(d), np.dtype(d["dtype"]).name) for name, d in self._inputs]
        self.output_names = [name for name, _ in self._outputs]
        self._invoke = self.interpreter.invoke
        self._set_tensor = self.interpreter.set_tensor
        self._get_tensor = self.interpreter.get_tensor
        self._output_plan = [(d["index"], _quantizer(d)) for _, d in self._outputs]
        layout = (manifest.get("notes") or {}).get("layout") or {}
        self.details = {
            "interpreter": _RUNTIME,
            "interpreter_version": _VERSION,
            "interpreters_skipped": list(_SKIPPED),
            "python": sys.executable,  # which environment provided the interpreter
            "num_threads": int(threads),
            "xnnpack": self._xnnpack(),
            "inputs": {n: self._describe(d, layout.get(n)) for n, d in self._inputs},
            "outputs": {n: self._describe(d) for n, d in self._outputs},
            "timed": "quantize integer inputs, set_tensor of each input, invoke(), get_tensor of each output, "
                     "dequantize integer outputs",
        }
        self._hoist_delegation()

    def _hoist_delegation(self) -> None:
        """details["delegation"]: what XNNPACK took on this device (the row's delegated_ops)."""
        found = self.details["xnnpack"].pop("delegation", None)
        if found:
            self.details["delegation"] = found

    # -- setup ------------------------------------------------------------------------------
    @staticmethod
    def _bind(details: List[dict], names: Dict[str, str], kind: str) -> List[Tuple[str, dict]]:
        """(dataset name, tensor details) in the manifest's order; tensor names when it has none."""
        if not names:
            return [(d["name"], d) for d in details]
        by_tensor = {d["name"]: d for d in details}
        missing = [t for t in names.values() if t not in by_tensor]
        if missing:
            raise ValueError("the manifest maps %s names to tensors %s, which the model lacks (its %ss: %s)"
                             % (kind, missing, kind, sorted(by_tensor)))
        return [(name, by_tensor[tensor]) for name, tensor in names.items()]

    @staticmethod
    def _dims(detail: dict) -> tuple:
        signature = detail.get("shape_signature")
        dims = signature if signature is not None and len(signature) else detail["shape"]
        return tuple(None if int(d) < 0 else int(d) for d in dims)

    @staticmethod
    def _describe(detail: dict, layout: Optional[str] = None) -> dict:
        facts = {"tensor": detail["name"], "shape": list(Backend._dims(detail)), "dtype": np.dtype(detail["dtype"]).name}
        if _quant(detail):
            facts["scale"], facts["zero_point"] = _quant(detail)
        if layout:
            facts["layout"] = layout
        return facts

    def _xnnpack(self) -> dict:
        """Whether XNNPACK took part: delegated subgraphs show up as DELEGATE nodes once tensors
        are allocated (XNNPACK is the only default delegate of the builtin op resolver)."""
        facts = {"requested": self.xnnpack_requested}
        try:
            details = self.interpreter._get_ops_details()
            ops = [op["op_name"] for op in details]
        except Exception as exc:  # a private API; older interpreters may lack it
            facts["applied"] = None
            facts["why_unknown"] = "%s: %s" % (type(exc).__name__, exc)
            return facts
        delegated = ops.count("DELEGATE")
        facts["applied"] = delegated > 0
        facts["delegated_partitions"] = delegated  # subgraphs XNNPACK runs; the rest run on builtin kernels
        facts["delegation"] = delegation(details, self.xnnpack_requested)
        return facts

    # -- the measured path ----------------------------------------------------------------------
    def _convert(self, name: str, value: np.ndarray, detail: dict) -> Tuple[np.ndarray, Optional[_Quantizer]]:
        """The input as the timed call takes it: real values for a quantized integer input (run()
        quantizes them), else the tensor's own dtype."""
        dtype = np.dtype(detail["dtype"])
        value = np.asarray(value)
        quantizer = _quantizer(detail)
        if quantizer is not None and np.issubdtype(value.dtype, np.floating):
            return np.ascontiguousarray(value, dtype=np.float32), quantizer
        if np.issubdtype(value.dtype, np.floating) and not np.issubdtype(dtype, np.floating):
            raise ValueError("input %r: the model takes %s (not quantized) but the data is %s; give %s data"
                             % (name, dtype.name, value.dtype, dtype.name))
        return np.ascontiguousarray(value, dtype=dtype), None

    def prepare(self, feed: Dict[str, np.ndarray]) -> _Feed:
        """Convert the inputs; resize the interpreter when the batch differs from its current one."""
        resized = False
        for name, detail in self._inputs:
            shape = tuple(np.shape(feed[name]))
            current = tuple(int(d) for d in self.interpreter.get_input_details()[self._position(detail)]["shape"])
            if shape != current:
                dims = self._dims(detail)
                if len(dims) != len(shape) or any(d is not None and d != s for d, s in zip(dims, shape)):
                    raise ValueError("input %r: the model takes shape %s but the data gives %s"
                                     % (name, tuple("?" if d is None else d for d in dims), shape))
                self.interpreter.resize_tensor_input(detail["index"], list(shape))
                resized = True
        if resized:
            self.interpreter.allocate_tensors()
            self.details["xnnpack"] = self._xnnpack()
            self._hoist_delegation()
        return _Feed(tuple((d["index"],) + self._convert(n, feed[n], d) for n, d in self._inputs))

    def _position(self, detail: dict) -> int:
        for i, d in enumerate(self.interpreter.get_input_details()):
            if d["index"] == detail["index"]:
                return i
        raise KeyError(detail["name"])

    def run(self, prepared: _Feed) -> List[np.ndarray]:
        """The timed call: real-valued inputs in (quantized here when the tensor is an integer
        one), invoke(), every output out as a host array (a copy), integer ones dequantized."""
        for index, value, quantizer in prepared.arrays:
            self._set_tensor(index, value if quantizer is None else quantizer.quantize(value))
        self._invoke()
        return [self._get_tensor(index) if quantizer is None else quantizer.dequantize(self._get_tensor(index))
                for index, quantizer in self._output_plan]
