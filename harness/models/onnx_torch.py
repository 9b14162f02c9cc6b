"""An ONNX classifier as a torch.nn.Module, for the frameworks an ONNX file alone does not reach.

`onnx_to_torch(path)` rebuilds the graph of a convolutional ONNX model (the op set of
MobileNet/ResNet-style classifiers, below) as a module: every Conv with constant weights is an
`nn.Conv2d` (a following Add of a per-channel constant folded in as its bias, a following
BatchNormalization folded into its weights, as onnxruntime's optimizer does), any other
BatchNormalization an `nn.BatchNorm2d`, every MatMul/Gemm with a constant weight an
`nn.Linear`, each named after its ONNX node (`Conv@0` -> `Conv_0`), so the torch recipes see
real layers (PT2E quantizes them, `mixed` names them). Everything else runs as torch functions
in graph order; nodes whose inputs are all constants are computed once here. `Shape` values
stay Python lists of sizes, so torch.export keeps the batch dimension dynamic. The module is
checked against onnxruntime on real samples before it is returned.

torchvision (whose onnx2torch-style converters need it) does not import beside this torch, so
quantbench carries this small converter; an op outside OPS is an error naming it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

PARITY_TOLERANCE = 1e-4  # max abs difference to onnxruntime, relative to the output's scale


class UnsupportedOnnx(ValueError):
    """The ONNX graph uses an op (or an op setting) this converter does not rebuild."""


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def module_name(node_name: str) -> str:
    """An ONNX node name as a torch module name: `Conv@0` -> `Conv_0`."""
    return re.sub(r"\W", "_", node_name) or "node"


def _as_ints(value) -> list:
    import torch

    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return list(value)


def _elementwise(fn):
    return lambda a, b: fn(a, b)


def _clip(x, low=None, high=None, **attrs):
    import torch

    low = attrs.get("min", low)
    high = attrs.get("max", high)
    low = None if low is None else float(low)
    high = None if high is None else float(high)
    return torch.clamp(x, low, high)


def _slice(x, starts, ends, axes=None, steps=None):
    starts, ends = _as_ints(starts), _as_ints(ends)
    axes = _as_ints(axes) if axes is not None else list(range(len(starts)))
    steps = _as_ints(steps) if steps is not None else [1] * len(starts)
    if isinstance(x, list):  # a Shape value
        if axes != [0] or steps != [1]:
            raise UnsupportedOnnx("Slice of a shape on an axis other than 0 or with a step")
        return x[starts[0]:min(ends[0], len(x))]
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[axis] = slice(start, min(end, x.shape[axis]) if end < 2**62 else None, step)
    return x[tuple(index)]


def _concat(*values, axis=0):
    import torch

    if any(isinstance(v, list) for v in values):  # building a shape
        return [d for v in values for d in (v if isinstance(v, list) else _as_ints(v))]
    return torch.cat(values, dim=axis)


def _reshape(x, shape, allowzero=0):
    dims = shape if isinstance(shape, list) else _as_ints(shape)
    dims = [x.shape[i] if (not isinstance(d, int) or d != 0) is False and not allowzero else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _cast(x, to):
    import torch
    from onnx import helper

    if isinstance(x, list):
        return x
    return x.to(getattr(torch, np.dtype(helper.tensor_dtype_to_np_dtype(to)).name))


def _pool(kind: str):
    def pool(x, kernel_shape, strides=None, pads=None, ceil_mode=0, auto_pad="NOTSET", count_include_pad=0, **_):
        import torch.nn.functional as F

        if auto_pad not in ("NOTSET", "VALID") or (pads and pads[:2] != pads[2:]):
            raise UnsupportedOnnx(f"{kind}Pool with auto_pad={auto_pad} or asymmetric pads {pads}")
        padding = list(pads[:2]) if pads else 0
        if kind == "Max":
            return F.max_pool2d(x, kernel_shape, strides or kernel_shape, padding, ceil_mode=bool(ceil_mode))
        return F.avg_pool2d(x, kernel_shape, strides or kernel_shape, padding, ceil_mode=bool(ceil_mode),
                            count_include_pad=bool(count_include_pad))

    return pool


def _functions() -> dict[str, Callable]:
    import torch
    import torch.nn.functional as F

    return {
        "Add": _elementwise(torch.add), "Sub": _elementwise(torch.sub), "Mul": _elementwise(torch.mul),
        "Div": _elementwise(torch.div),
        "Relu": lambda x: F.relu(x), "Sigmoid": lambda x: torch.sigmoid(x), "Tanh": lambda x: torch.tanh(x),
        "HardSigmoid": lambda x, alpha=0.2, beta=0.5: torch.clamp(alpha * x + beta, 0.0, 1.0),
        "HardSwish": lambda x: F.hardswish(x),
        "Clip": _clip,
        "GlobalAveragePool": lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
        "MaxPool": _pool("Max"), "AveragePool": _pool("Average"),
        "Flatten": lambda x, axis=1: torch.flatten(x, axis) if axis > 0 else x.reshape(1, -1),
        "Reshape": _reshape, "Shape": lambda x, **_: list(x.shape), "Slice": _slice, "Concat": _concat, "Cast": _cast,
        "Softmax": lambda x, axis=-1: torch.softmax(x, dim=axis),
        "MatMul": lambda a, b: torch.matmul(a, b), "Identity": lambda x: x,
        "Transpose": lambda x, perm=None: x.permute(*(perm or reversed(range(x.dim())))),
        "Unsqueeze": lambda x, axes=None: _unsqueeze(x, axes),
    }


def _unsqueeze(x, axes):
    for axis in sorted(_as_ints(axes)):
        x = x.unsqueeze(axis)
    return x


OPS = ("Conv", "BatchNormalization", "Gemm", "Constant") + tuple(
    ("Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Clip", "GlobalAveragePool",
     "MaxPool", "AveragePool", "Flatten", "Reshape", "Shape", "Slice", "Concat", "Cast", "Softmax", "MatMul",
     "Identity", "Transpose", "Unsqueeze"))
# inputs an op takes as attributes in the functions above (opset >= 10 moved them to inputs)
INPUT_ARGS = {"Clip": ("low", "high"), "Slice": ("starts", "ends", "axes", "steps"), "Unsqueeze": ("axes",)}


def _build(model):
    """(torch module, onnx input names, onnx output names) of an ONNX ModelProto."""
    import torch
    from onnx import numpy_helper

    graph = model.graph
    functions = _functions()
    consts: dict[str, Any] = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    unknown = sorted({n.op_type for n in graph.node} - set(OPS))
    if unknown:
        raise UnsupportedOnnx(f"ops {unknown} are not rebuilt as torch (supported: {', '.join(OPS)})")
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    for output in graph.output:
        readers[output.name] = readers.get(output.name, 0) + 1
    producer = {o: n for n in graph.node for o in n.output}

    folded: set[int] = set()  # nodes computed here, once: constants, reshaped biases, cast shapes
    for index, node in enumerate(graph.node):
        attrs = _attrs(node)
        if node.op_type == "Constant":
            consts[node.output[0]] = torch.from_numpy(numpy_helper.to_array(attrs["value"]).copy())
            folded.add(index)
        elif node.input and node.op_type in functions and all(name in consts or not name for name in node.input):
            args, kwargs = _arguments(node, consts)
            consts[node.output[0]] = functions[node.op_type](*[consts[i] for i in args], **kwargs)
            folded.add(index)

    layers = torch.nn.ModuleDict()
    steps: list[tuple] = []  # (kind, op or module name, input names, output names, attrs)
    absorbed: set[str] = set()  # Add nodes folded into a layer's bias
    for index, node in enumerate(graph.node):
        attrs = _attrs(node)
        if index in folded or node.name in absorbed:
            continue
        constant = [name in consts or not name for name in node.input]
        if node.op_type in ("Conv", "MatMul", "Gemm", "BatchNormalization") and all(constant[1:]) and not constant[0]:
            name = module_name(node.name or node.output[0])
            layer, out = _layer(node, attrs, consts, graph, readers, producer, absorbed)
            layers[name] = layer
            steps.append(("layer", name, [node.input[0]], [out], {}))
            continue
        if node.op_type in ("Conv", "BatchNormalization", "Gemm"):
            raise UnsupportedOnnx(f"{node.op_type} {node.name!r} takes a computed weight; only constant weights are rebuilt")
        args, kwargs = _arguments(node, consts)
        steps.append(("fn", module_name(node.name or node.output[0]), args, list(node.output), (node.op_type, kwargs)))
    return OnnxModule(layers, steps, consts, [i.name for i in graph.input if i.name not in consts],
                      [o.name for o in graph.output]), producer


def _arguments(node, consts) -> tuple[list[str], dict]:
    """Positional input names, and the constant inputs the functions take as keywords, plus attributes."""
    kwargs = dict(_attrs(node))
    names = list(node.input)
    if node.op_type in INPUT_ARGS:
        keys = INPUT_ARGS[node.op_type]
        data, extra = names[:1], names[1:]
        for key, name in zip(keys, extra):
            if name:
                if name not in consts:
                    raise UnsupportedOnnx(f"{node.op_type} {node.name!r}: input {key} is computed, not a constant")
                kwargs[key] = _plain(consts[name])
        names = data
    return names, kwargs


def _plain(value):
    """A constant as Python values (ints for shapes and axes, a float for a scalar), so that
    torch.export never reads a tensor's contents while it traces."""
    import torch

    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            return [int(v) for v in value.reshape(-1).tolist()]
        if value.dim() == 0:
            return float(value)
    return value


def _layer(node, attrs, consts, graph, readers, producer, absorbed):
    """The nn.Module of a weighted node, and the tensor name its output goes by (a folded bias
    Add's output)."""
    import torch

    weight = consts[node.input[1]].float()
    bias = consts[node.input[2]].float() if len(node.input) > 2 and node.input[2] else None
    out = node.output[0]
    if node.op_type == "BatchNormalization":
        scale, shift, mean, var = (consts[n].float() for n in node.input[1:5])
        layer = torch.nn.BatchNorm2d(len(scale), eps=attrs.get("epsilon", 1e-5))
        with torch.no_grad():
            layer.weight.copy_(scale), layer.bias.copy_(shift), layer.running_mean.copy_(mean), layer.running_var.copy_(var)
        return layer.eval(), out
    follower = _bias_add(out, graph, consts, readers) if bias is None else None
    if follower is not None:
        add, bias = follower
        absorbed.add(add.name)
        out = add.output[0]
    norm = _batch_norm(out, graph, consts, readers) if node.op_type == "Conv" else None
    if norm is not None:  # inference folding, as onnxruntime's optimizer does: one conv, no BN module
        bn, (scale, shift, mean, var, eps) = norm
        absorbed.add(bn.name)
        out = bn.output[0]
        factor = scale / torch.sqrt(var + eps)
        weight = weight * factor.reshape(-1, 1, 1, 1)
        bias = ((bias.reshape(-1) if bias is not None else torch.zeros_like(mean)) - mean) * factor + shift
    if node.op_type == "Conv":
        if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or weight.dim() != 4:
            raise UnsupportedOnnx(f"Conv {node.name!r}: only 2-D convolutions with explicit pads are rebuilt")
        pads = attrs.get("pads", [0, 0, 0, 0])
        if pads[:2] != pads[2:]:
            raise UnsupportedOnnx(f"Conv {node.name!r}: asymmetric pads {pads}")
        groups = attrs.get("group", 1)
        layer = torch.nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), attrs.get("strides", 1),
                                tuple(pads[:2]), attrs.get("dilations", 1), groups, bias=bias is not None)
        layer.weight.data.copy_(weight)
    else:  # MatMul (x @ W) or Gemm (x @ W^T when transB)
        if node.op_type == "Gemm":
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                raise UnsupportedOnnx(f"Gemm {node.name!r}: only transB, alpha = beta = 1 is rebuilt")
            weight = weight if attrs.get("transB", 0) else weight.t()
        else:
            if weight.dim() != 2:
                raise UnsupportedOnnx(f"MatMul {node.name!r}: only a 2-D constant weight is rebuilt")
            weight = weight.t()
        layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        layer.weight.data.copy_(weight)
    if bias is not None:
        layer.bias.data.copy_(bias.reshape(-1))
    return layer, out


def _batch_norm(output: str, graph, consts, readers):
    """The BatchNormalization (constant statistics) that is the only reader of `output`."""
    if readers.get(output, 0) != 1:
        return None
    for node in graph.node:
        if node.op_type == "BatchNormalization" and node.input[0] == output and all(n in consts for n in node.input[1:5]):
            scale, shift, mean, var = (consts[n].float() for n in node.input[1:5])
            return node, (scale, shift, mean, var, float(_attrs(node).get("epsilon", 1e-5)))
    return None


def _bias_add(output: str, graph, consts, readers):
    """The Add that adds a per-channel constant to `output` and is its only reader, and that bias."""
    if readers.get(output, 0) != 1:
        return None
    for node in graph.node:
        if node.op_type == "Add" and output in node.input:
            other = node.input[1] if node.input[0] == output else node.input[0]
            if other in consts:
                bias = consts[other].float()
                if bias.numel() > 1 and bias.numel() == max(bias.shape):
                    return node, bias
            return None
    return None


def _module_class():
    import torch

    class _Op(torch.nn.Module):
        def __init__(self, fn: Callable, kwargs: dict) -> None:
            super().__init__()
            self.fn, self.kwargs = fn, kwargs

        def forward(self, *values):
            return self.fn(*values, **self.kwargs)

    class OnnxModule(torch.nn.Module):
        """The rebuilt graph: `layers` hold the weighted ops, `steps` run in ONNX order."""

        def __init__(self, layers, steps, consts, input_names, output_names) -> None:
            super().__init__()
            self.layers = layers
            self.steps = steps
            self.input_names = list(input_names)
            self.output_names = list(output_names)
            used = {name for _, _, args, _, _ in steps for name in args if name in consts}
            self._const_names = {}
            for i, name in enumerate(sorted(used)):
                value = consts[name]
                if isinstance(value, torch.Tensor) and not value.is_floating_point() and value.dim() <= 1:
                    # shapes, axes: plain ints, so torch.export never reads a tensor's values
                    self._const_names[name] = [int(v) for v in value.reshape(-1).tolist()]
                elif isinstance(value, torch.Tensor) and value.dim() > 0:
                    self.register_buffer(f"const_{i}", value.clone(), persistent=True)
                    self._const_names[name] = f"const_{i}"
                else:
                    self._const_names[name] = value.item() if isinstance(value, torch.Tensor) else value
            # Every other op is a small module of its own: PT2E's quantizers find patterns by source
            # partitions, and calls of one function from one place would all fall into one partition.
            functions = _functions()
            self.ops = torch.nn.ModuleDict({name: _Op(functions[op], kwargs) for kind, name, _, _, (op, kwargs)
                                            in (s for s in steps if s[0] == "fn")})

        def _value(self, env, name):
            if name in env:
                return env[name]
            held = self._const_names[name]
            return getattr(self, held) if isinstance(held, str) else held

        def forward(self, *inputs):
            env = dict(zip(self.input_names, inputs))
            for kind, op, args, outputs, _ in self.steps:
                values = [self._value(env, name) for name in args]
                result = (self.layers if kind == "layer" else self.ops)[op](*values)
                env[outputs[0]] = result
            outs = [env[name] for name in self.output_names]
            return outs[0] if len(outs) == 1 else tuple(outs)

    return OnnxModule


def OnnxModule(*args):  # noqa: N802 - the class is made lazily (torch is imported on first use)
    return _module_class()(*args)


def onnx_to_torch(path: Path, samples: Optional[dict[str, np.ndarray]] = None):
    """The ONNX file as an eval-mode torch module; with `samples` (input name -> array), checked
    against onnxruntime on them first (an error when the outputs differ)."""
    import onnx
    import torch

    model = onnx.load(str(path))
    module, _ = _build(model)
    module.eval()
    if samples:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        want = session.run(None, samples)[0]
        with torch.no_grad():
            got = module(*(torch.from_numpy(np.ascontiguousarray(samples[n])) for n in module.input_names))
        got = (got if isinstance(got, torch.Tensor) else got[0]).numpy()
        worst = float(np.max(np.abs(got - want)))
        if not worst <= PARITY_TOLERANCE * max(1.0, float(np.max(np.abs(want)))):
            raise RuntimeError(f"the torch rebuild of {path} differs from onnxruntime by {worst:.3g} (max abs)")
    return module


def layer_names(module) -> Sequence[str]:
    """The torch module paths of the rebuilt weighted layers (for `keep_float`)."""
    return [f"layers.{name}" for name, layer in module.layers.items() if not isinstance(layer, __import__("torch").nn.BatchNorm2d)]
