"""PT2E quantization (torch.export + torchao.quantization.pt2e): quantizers, calibration,
the layers `mixed` keeps in float, and what a converted graph really computes in int8.

The X86InductorQuantizer and ArmInductorQuantizer annotate for the int8 kernels inductor
lowers to (oneDNN on x86, the ARM path on aarch64). The converted graph holds int8 weights
and quantize/dequantize ops around float ops: run eagerly it is a reference of the int8
numerics; torch.compile on the target fuses it into int8 kernels.
"""
from __future__ import annotations

import importlib
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

import numpy as np

from harness.data import batches
from harness.models.spec import ModelSpec
from harness.quantize.base import BuildContext
from harness.quantize.layer_names import Layer, resolve

if TYPE_CHECKING:
    from targets.base import TargetInfo

CALIBRATION_BATCH = 16
# quantizer name -> (module, class, default-config function)
QUANTIZERS: dict[str, tuple[str, str, str]] = {
    "x86": ("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer", "X86InductorQuantizer",
            "get_default_x86_inductor_quantization_config"),
    "arm": ("torchao.quantization.pt2e.quantizer.arm_inductor_quantizer", "ArmInductorQuantizer",
            "get_default_arm_inductor_quantization_config"),
    # ExecuTorch's XNNPACK delegate (torch_executorch.py): symmetric int8, per-channel weights
    "xnnpack": ("executorch.backends.xnnpack.quantizer.xnnpack_quantizer", "XNNPACKQuantizer",
                "get_symmetric_quantization_config"),
}
# quantizer name -> extra arguments of its config function (beside is_qat)
CONFIG_ARGS: dict[str, dict] = {"xnnpack": {"is_per_channel": True}}
# The ops the converted graph needs registered before torch.export.load can read it (torch itself).
RUNTIME_REQUIRES = ("torch.ao.quantization.fx._decomposed",)
# quantizer name -> the target architectures whose int8 kernels it annotates for
ARCHES: dict[str, tuple[str, ...]] = {"x86": ("x86_64", "amd64", "i686"), "arm": ("aarch64", "arm64")}
WEIGHTED = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "Linear")
# build context -> its fp32 module captured for PT2E (fp32_capture); gone with the context
_FP32_CAPTURES: "weakref.WeakKeyDictionary[BuildContext, Any]" = weakref.WeakKeyDictionary()


def arch_family(arch: str) -> str:
    arch = arch.lower()
    return next((name for name, arches in ARCHES.items() if arch in arches), arch)


def quantizer_applicable(name: str) -> Callable[[ModelSpec, "TargetInfo"], Optional[str]]:
    """A recipe built with quantizer `name` runs only on the architecture it annotates for."""

    def check(spec: ModelSpec, target: "TargetInfo") -> Optional[str]:
        if arch_family(target.arch) == name:
            return None
        other = arch_family(target.arch)
        hint = f"; the {other} recipe of this mode is the one for {target.name}" if other in QUANTIZERS else ""
        return (f"{QUANTIZERS[name][1]} annotates for {name} int8 kernels and target {target.name} is "
                f"{target.arch}{hint}")

    return check


def make_quantizer(name: str, is_qat: bool = False, keep_float: Iterable[str] = (), is_dynamic: bool = False):
    """Quantizer `name` with its default config (is_dynamic: activations quantized per call)."""
    module_name, class_name, config_name = QUANTIZERS[name]
    module = importlib.import_module(module_name)
    dynamic = {"is_dynamic": True} if is_dynamic else {}
    config = getattr(module, config_name)(is_qat=is_qat, **CONFIG_ARGS.get(name, {}), **dynamic)
    quantizer = getattr(module, class_name)().set_global(config)
    if name == "xnnpack":
        xnnpack_float_only(quantizer)
    for layer in keep_float:
        if hasattr(quantizer, "set_module_name_qconfig"):
            quantizer.set_module_name_qconfig(layer, None)  # None: leave this module in float
        else:  # XNNPACKQuantizer.set_module_name refuses None ("not supported yet"), but its
            # global config skips the named modules and a None config annotates nothing
            quantizer.module_name_config[layer] = None
    return quantizer


def float_output(node) -> bool:
    """Whether a graph node computes floats (or says nothing of its dtype)."""
    value = node.meta.get("val")
    dtype = getattr(value, "dtype", None)
    return dtype is None or dtype.is_floating_point


def xnnpack_float_only(quantizer):
    """XNNPACKQuantizer, kept to float arithmetic: it annotates only float nodes, and its
    transform_for_annotation (executorch 1.4.1) turns the scalar of every add/mul into a float32
    tensor attribute, integer index arithmetic included (MiniLM's position ids: arange + offset
    became float and the prepared graph failed, "tensors used as indices must be long"); here
    integer add/mul nodes get their scalars back."""
    import torch

    original = quantizer.transform_for_annotation
    arithmetic = (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor)

    def transform(model):
        integer = {n: n.args for n in model.graph.nodes
                   if n.op == "call_function" and n.target in arithmetic and not float_output(n)}
        model = original(model)
        for node, args in integer.items():
            made = [a for a in node.args if isinstance(a, torch.fx.Node) and a not in args]
            node.args = args
            for attr in made:
                if not attr.users:
                    model.graph.erase_node(attr)
                    if hasattr(model, str(attr.target)):
                        delattr(model, str(attr.target))
        model.recompile()
        return model

    quantizer.transform_for_annotation = transform
    quantizer.set_filter_function(float_output)
    return quantizer


def weighted_layers(module) -> list[str]:
    found = [name for name, m in module.named_modules() if type(m).__name__ in WEIGHTED]
    if found or not hasattr(module, "graph"):
        return found
    # A torch.export program's module (torch_export_model): its layers are graph calls, not
    # nn.Conv2d/nn.Linear modules; the module paths they came from are in nn_module_stack.
    import torch

    calls = {torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.conv3d.default,
             torch.ops.aten.linear.default}
    return list(dict.fromkeys(module_path(n) for n in module.graph.nodes
                              if n.op == "call_function" and n.target in calls and module_path(n)))


def layers(module) -> list[Layer]:
    """The conv/linear modules as layers: the module path is both the user-facing and the native
    name (set_module_name_qconfig takes it)."""
    kinds = {name: type(m).__name__ for name, m in module.named_modules()}
    return [Layer(name, (name,), kinds.get(name, "conv/linear call")) for name in weighted_layers(module)]


def resolve_keep_float(ctx: BuildContext, module, names: Optional[list[str]]) -> list[str]:
    """The module names `mixed` keeps in float: the given names (a module holding layers means
    every conv/linear inside it), or (None) the first and last weighted layer. A name that maps
    to no layer is an error listing close matches."""
    if names is None:
        weighted = weighted_layers(module)
        return list(dict.fromkeys([weighted[0], weighted[-1]])) if weighted else []
    return [layer.name for layer in resolve(names, layers(module), f"{ctx.spec.name} in torch")]


def capture(module, ctx: BuildContext):
    """torch.export(...).module(): the ATen graph PT2E annotates."""
    from harness.quantize.torch_export import export_program

    captured = export_program(module, ctx, "PT2E quantization").module()
    # Non-strict export can give two nodes one torch_fn name (an `x + 1` and a torch.add in
    # different modules both 'add_1'); the quantizers' source partitions then merge them and
    # refuse the merged partition ("Input partition has more than one output node", the ONNX
    # text-direction classifier rebuilt as torch). Each node's own name keeps them apart.
    for node in captured.graph.nodes:
        torch_fn = node.meta.get("torch_fn")
        if torch_fn:
            node.meta["torch_fn"] = (node.name, torch_fn[1])
    return captured


def fp32_capture(ctx: BuildContext):
    """A private copy of `capture` of the fp32 module, captured once per build context (one
    model in a session): the static-int8, mixed and dynamic-int8 builds of every deployed torch
    format prepare the same graph, and torch.export of MiniLM s32 takes 1-4 s. prepare_pt2e
    rewrites the graph it is handed, so each build gets a deep copy, as the sensitivity probe's
    builds do (torch_probe.py)."""
    import copy

    captured = _FP32_CAPTURES.get(ctx)
    if captured is None:
        from harness.quantize.torch_export import fp32_copy

        captured = _FP32_CAPTURES[ctx] = capture(fp32_copy(ctx), ctx)
    return copy.deepcopy(captured)


def calibrate(prepared, ctx: BuildContext, batches_at_most: Optional[int] = None) -> int:
    """Run the calibration split (its first `batches_at_most` batches) through the observers;
    returns the sample count."""
    import torch

    names = ctx.dataset.input_names
    seen = 0
    with torch.no_grad():
        for i, chunk in enumerate(batches(ctx.dataset.calib_inputs, CALIBRATION_BATCH)):
            if batches_at_most is not None and i >= batches_at_most:
                break
            prepared(*(torch.from_numpy(np.ascontiguousarray(chunk[n])) for n in names))
            seen += len(chunk[names[0]])
    return seen


def data_observers(prepared) -> list[str]:
    """The observers of a prepared graph whose state depends on the data fed through it: those
    of activations, unless dynamic (quantized per call: a PlaceholderObserver that records
    nothing). A weight's observer (its input a get_attr) reads the same tensor at every call."""
    observers = dict(prepared.named_modules())
    found = []
    for node in prepared.graph.nodes:
        observer = observers.get(str(node.target)) if node.op == "call_module" else None
        if observer is None or not hasattr(observer, "calculate_qparams"):
            continue
        source = node.args[0] if node.args else None
        if getattr(source, "op", "") == "get_attr" or getattr(observer, "is_dynamic", False):
            continue
        found.append(node.name)
    return found


def calibrate_weights_only(prepared, ctx: BuildContext) -> int:
    """Calibration of a graph whose activations are quantized at run time (dynamic int8): one
    batch fills its weight observers, and further batches could change nothing: the converted
    graph is the one the whole split gives (tests/test_pt2e_shared_work.py). A graph with an
    observer of activation statistics gets the whole split."""
    return calibrate(prepared, ctx, batches_at_most=None if data_observers(prepared) else 1)


def module_path(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _op_name(node) -> str:
    """'dequantize_per_channel' for the target quantized_decomposed.dequantize_per_channel.default."""
    parts = str(node.target).split(".")
    return parts[-2] if len(parts) >= 2 else parts[-1]


DEQUANTIZE = ("dequantize_per_channel", "dequantize_per_tensor", "dequantize_affine")  # _op_name of the dequantize ops


def layer_precision(gm) -> dict[str, str]:
    """module path -> "int8" when its conv/linear reads a dequantized int8 weight, else "float"."""
    import torch

    weighted = {torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.conv3d.default,
                torch.ops.aten.linear.default}
    dequantize = set(DEQUANTIZE)
    found: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in weighted:
            weight = node.args[1]
            is_int8 = getattr(weight, "op", "") == "call_function" and _op_name(weight) in dequantize
            found[module_path(node) or node.name] = "int8" if is_int8 else "float"
    return found


def weights_dequantized_once(module):
    """The converted graph as the eager reference a built artifact is compared with, its
    constant dequantizations (the int8 weights') computed once instead of at every call: each
    is the same op on the same tensors, so the reference's outputs are the converted graph's bit
    for bit, and MiniLM s32's 8 reference calls of a package's check take a fraction of a second
    instead of 5-7 s (a weight's dequantize_per_channel costs ~15 ms a call). `module` itself is
    left as it is (its graph is copied, its tensors shared); any other module is returned as is."""
    import copy

    import torch

    if not isinstance(module, torch.fx.GraphModule):
        return module
    graph = copy.deepcopy(module.graph)
    reference = torch.fx.GraphModule(module, graph)

    def value(arg):
        if not isinstance(arg, torch.fx.Node):
            return arg
        found = reference
        for part in str(arg.target).split("."):
            found = getattr(found, part)
        return found

    with torch.no_grad():
        for node in list(graph.nodes):
            inputs = node.all_input_nodes
            if (node.op != "call_function" or _op_name(node) not in DEQUANTIZE or not inputs
                    or any(arg.op != "get_attr" for arg in inputs)):
                continue
            name = f"_dequantized_{node.name}"
            reference.register_buffer(name, node.target(*map(value, node.args), **{k: value(v) for k, v in node.kwargs.items()}))
            with graph.inserting_before(node):
                node.replace_all_uses_with(graph.get_attr(name))
            graph.erase_node(node)
    reference.recompile()
    return reference
