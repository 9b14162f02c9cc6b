"""What an AOTInductor package computes its heavy operators with, read from the C++ wrapper
Inductor generated (the `*.wrapper.cpp` inside the package): each call of an extern kernel is an
`aoti_torch_cpu_<op>(...)` line. The conv/linear/matmul/attention calls are the heavy ones; of
those, oneDNN's int8 kernels (`_qconv_pointwise*`, `_qlinear_pointwise*`) and the int8 matmul
(`_int_mm`) compute in int8, the rest (mkldnn `_convolution_pointwise`, `_linear_pointwise`,
`addmm`, `bmm`, scaled dot-product attention, a plain `convolution`) in float: a q/dq pair that
Inductor did not fuse leaves a float kernel with elementwise quantize/dequantize around it.

`delegation(census)` is the manifest's notes["delegation"] ({"summary", "complete"}), the row's
`delegated_ops` / `delegation_complete` beside onnxruntime's `quantized_ops`, e.g.
"inductor int8 36/42 conv/linear/matmul calls (qlinear x36); float: sdpa x6". Standard library only.
"""
from __future__ import annotations

import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Optional

CALL = re.compile(r"\baoti_torch_(?:cpu|cuda)_(\w+?)\(")
HEAVY = re.compile(r"conv|linear|addmm|(?:^|_)b?mm(?:_|$)|baddbmm|matmul|scaled_dot_product|int_mm|lstm|(?:^|_)gru|rnn")
INT8 = re.compile(r"(?:^|_)q(?:conv|linear)|int_mm|int8")
# short names for the summary
SHORT = ((re.compile(r"^_?scaled_dot_product_\w*attention\w*$"), "sdpa"), (re.compile(r"^mkldnn__"), "mkldnn_"),
         (re.compile(r"_pointwise"), ""), (re.compile(r"_out$"), ""), (re.compile(r"^_+"), ""))


def census(path: Path) -> Counter:
    """Extern kernel calls in the package's generated wrapper, by op name."""
    found: Counter = Counter()
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith("wrapper.cpp"):
                found.update(CALL.findall(archive.read(name).decode("utf-8", "replace")))
    return found


def int8_kernels(calls: Counter) -> dict[str, int]:
    """oneDNN int8 calls (qconv/qlinear), by name: a PT2E package with none ran its q/dq pairs
    around float kernels (the manifest's notes["fused_int8_kernels"])."""
    return {name: n for name, n in sorted(calls.items()) if re.match(r"_?q(?:conv|linear)", name)}


def _short(name: str) -> str:
    for pattern, repl in SHORT:
        name = pattern.sub(repl, name)
    return name


def _listing(calls: dict[str, int]) -> str:
    merged: Counter = Counter()
    for name, n in calls.items():
        merged[_short(name)] += n
    return ", ".join(f"{name} x{n}" for name, n in sorted(merged.items(), key=lambda kv: (-kv[1], kv[0])))


def delegation(calls: Counter) -> Optional[dict[str, Any]]:
    """notes["delegation"] of an int8 package: how many heavy calls run oneDNN int8 kernels and
    which stay float; complete when every one is int8. None when there is no heavy call."""
    heavy = {name: n for name, n in calls.items() if HEAVY.search(name)}
    if not heavy:
        return {"summary": "inductor: no conv/linear/matmul kernel call in the package", "complete": False}
    int8 = {name: n for name, n in heavy.items() if INT8.search(name)}
    floating = {name: n for name, n in heavy.items() if name not in int8}
    done, total = sum(int8.values()), sum(heavy.values())
    summary = f"inductor int8 {done}/{total} conv/linear/matmul calls"
    if int8:
        summary += f" ({_listing(int8)})"
    if floating:
        summary += f"; float: {_listing(floating)}"
    return {"summary": summary, "complete": done == total}


# -- what Inductor did not lower ----------------------------------------------------------------
def proxy_ops(path: Path) -> list[tuple[str, bool]]:
    """Ops the package runs through AOTInductor's proxy executor (no compiled kernel and no C shim:
    the op is looked up in the dispatcher when the package runs), from the `*.wrapper.json` beside
    the generated wrapper: (op name, whether it is a torch.library custom op), in graph order."""
    import json

    found: list[tuple[str, bool]] = []
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith("wrapper.json"):
                for node in json.loads(archive.read(name)).get("nodes", []):
                    inner = node.get("node") or {}
                    found.append((str(inner.get("target")), bool((inner.get("metadata") or {}).get("torch_library_custom_op"))))
    return found


def custom_op_reason(what: str, proxied: list[tuple[str, bool]]) -> Optional[str]:
    """Why a package calling the model's own torch.library ops cannot run on a target, or None:
    the package calls them by name through the dispatcher, and the runner has none of the
    model's code to register them."""
    custom = sorted({op for op, is_custom in proxied if is_custom})
    if not custom:
        return None
    return (f"{what}: the package calls the model's custom op{'s' if len(custom) > 1 else ''} {', '.join(custom)} by name "
            "(AOTInductor's proxy executor, no compiled kernel), and the runner on a target loads no model code to "
            "register it; give the op a lowering (torch.library + an Inductor decomposition) or run it through "
            "ExecuTorch/ONNX")


def unlowered_ops(program) -> list[str]:
    """The exported program's operators Inductor has neither a lowering nor a decomposition for,
    and those producing a non-strided (sparse, ...) tensor, which its kernels cannot address."""
    import torch
    from torch._inductor.decomposition import select_decomp_table
    from torch._inductor.lowering import lowerings

    decompositions = select_decomp_table()
    found: dict[str, None] = {}
    for node in program.run_decompositions(decompositions).graph_module.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        layout = getattr(node.meta.get("val"), "layout", torch.strided)
        name = node.target._schema.name + ("" if node.target._overloadname == "default" else f".{node.target._overloadname}")
        if node.target not in lowerings and node.target not in decompositions:
            found[f"{name} (no Inductor lowering)"] = None
        elif layout != torch.strided:
            found[f"{name} (makes a {str(layout).replace('torch.', '')} tensor)"] = None
    return list(found)


def lowering_reason(what: str, exc: BaseException, proxied: Optional[list[tuple[str, bool]]] = None,
                    program=None) -> str:
    """The row's reason when Inductor could not lower an operator of the model: compiling failed
    (the op named in Inductor's LoweringException, else the program's ops it has no lowering
    for), or the compiled package failed at its first call on an op it left to the proxy
    executor (those ops named)."""
    text = str(exc).strip()
    first = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".strip()
    if proxied:
        ops = ", ".join(sorted({op for op, _ in proxied}))
        return (f"{what}: Inductor did not lower {ops} (left to AOTInductor's proxy executor, no compiled kernel), "
                f"and the package failed when called ({first[:200]})")
    target = re.search(r"target: ([\w.:]+)", text)
    try:
        suspects = [target.group(1)] if target else (unlowered_ops(program) if program is not None else [])
    except Exception:  # noqa: BLE001 - naming the op is best effort; the failure itself is the reason
        suspects = []
    where = f"the operator{'s' if len(suspects) > 1 else ''} {', '.join(suspects)}" if suspects else "an operator of the model"
    return f"{what}: Inductor could not lower {where} to an AOTInductor package ({first[:200]})"
