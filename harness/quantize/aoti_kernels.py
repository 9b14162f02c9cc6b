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
