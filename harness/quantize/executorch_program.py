"""What an ExecuTorch program holds: what its delegate took (from the lowered edge program,
at build time) and the program format of a `.pte` file (its flatbuffer identifier).

`delegation` walks the lowered graph: each `executorch_call_delegate` is one partition, and the
operators of its lowered module went to that backend; every other operator (but getitem and the
memory planner's alloc) runs on ExecuTorch's portable kernels. The summary is the row's
`delegated_ops`, e.g. "xnnpack 12/14 ops in 2 partitions; portable: aten.view_copy x2"; an int8
program whose convolutions or matmuls stayed outside the delegate says so (they then run as
float portable kernels around quantize/dequantize ops: the reason such a row is slow).

`program_version` reads the identifier a `.pte` starts with (bytes 4-8, e.g. "ET12"): a runtime
reads only programs of its own identifier (harness/compat.py, harness/runner/facts.py). Standard
library only here; the graph walk gets torch objects from its caller.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Optional

# operators that carry a model's arithmetic: outside the delegate they are the slow part
HEAVY = ("aten.convolution", "aten.linear", "aten.addmm", "aten.mm", "aten.bmm", "aten.matmul",
         "aten._scaled_dot_product", "aten.conv")
# graph plumbing, not operators (tuple indexing; the memory planner's allocations)
PLUMBING = ("getitem", "alloc", "executorch_call_delegate")
BACKEND_NAMES = {"XnnpackBackend": "xnnpack"}


def op_name(target: Any) -> str:
    """'aten.convolution' for aten.convolution.default (an edge or ATen op), the function's name otherwise."""
    name = getattr(target, "__name__", None) or str(target)
    parts = name.split(".")
    return ".".join(parts[:-1]) if len(parts) >= 3 and parts[-1] in ("default", "out", "Tensor", "Scalar") else name


def _counted(counts: Counter) -> str:
    return ", ".join(f"{name} x{n}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def delegation(graph_module, int8: bool = False) -> dict[str, Any]:
    """What the delegate took in a lowered edge program's graph module (manifest notes["delegation"])."""
    delegated: Counter = Counter()
    portable: Counter = Counter()
    partitions: Counter = Counter()
    heavy_int8: Counter = Counter()  # heavy op -> how many read dequantized (int8) activations
    heavy_all: Counter = Counter()
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = op_name(node.target)
        if name == "executorch_call_delegate":
            lowered = getattr(graph_module, node.args[0].target)
            backend = BACKEND_NAMES.get(lowered.backend_id, lowered.backend_id)
            partitions[backend] += 1
            for inner in lowered.original_module.graph.nodes:
                if inner.op == "call_function" and op_name(inner.target) not in PLUMBING:
                    delegated[op_name(inner.target)] += 1
                    _count_heavy(inner, heavy_all, heavy_int8)
        elif name not in PLUMBING:
            portable[name] += 1
            _count_heavy(node, heavy_all, heavy_int8)
    total = sum(delegated.values()) + sum(portable.values())
    backend = ", ".join(sorted(partitions)) or "xnnpack"
    summary = (f"{backend} {sum(delegated.values())}/{total} ops in {sum(partitions.values())} "
               f"partition{'s' if sum(partitions.values()) != 1 else ''}")
    if portable:
        summary += f"; portable: {_counted(portable)}"
    heavy_outside = Counter({k: v for k, v in portable.items() if k.startswith(HEAVY)})
    if int8 and heavy_outside:
        summary += f"; not delegated, so not int8: {_counted(heavy_outside)}"
    quantize_ops = sum(v for k, v in delegated.items() if "quantize" in k)
    # which heavy ops compute in int8 (their activation comes from a dequantize), e.g. "aten.linear 36/36, aten.bmm 0/12"
    int8_ops = ", ".join(f"{op} {heavy_int8[op]}/{n}" for op, n in sorted(heavy_all.items()))
    return {"summary": summary, "int8_ops": int8_ops if int8 else "", "complete": not portable, "backend": backend, "partitions": sum(partitions.values()),
            "delegated": dict(delegated), "portable": dict(portable), "heavy_not_delegated": dict(heavy_outside),
            "delegated_quantize_ops": quantize_ops}


def _count_heavy(node, found: Counter, int8: Counter) -> None:
    name = op_name(node.target)
    if not name.startswith(HEAVY):
        return
    found[name] += 1
    source = node.args[0] if node.args else None
    if getattr(source, "op", "") == "call_function" and "dequantize" in op_name(source.target):
        int8[name] += 1


def program_version(path: Path) -> Optional[str]:
    """The program format identifier of a .pte file, e.g. "ET12" (None when it is not a program)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    ident = head[4:8]
    if len(ident) == 4 and ident[:2] == b"ET" and ident[2:].isdigit():
        return ident.decode("ascii")
    return None
