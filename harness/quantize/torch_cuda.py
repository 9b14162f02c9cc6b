"""Which torch recipes run on a cuda target, and why the others cannot.

On a cuda target the runner moves the exported program to the GPU
(torch.export.passes.move_to_device_pass). That is a real GPU measurement for:
  - fp32 and fp16 (every CUDA GPU);
  - bf16 from compute capability 8.0 (Ampere): older GPUs have no bf16 arithmetic;
  - torchao's Int8DynamicActivationInt8WeightConfig from compute capability 8.0: its int8
    matmul is torch._int_mm (cuBLASLt int8 tensor cores), which PyTorch supports on sm_80+,
    and only for more than 16 rows with K and N multiples of 8 (torch 2.11's checks, e.g.
    "mat2.size(1) needs to be greater than 0 and a multiple of 8"): the built artifact records
    its matmuls' shapes and int_mm_reason makes a case whose shapes the kernel refuses n/a
    (digits-cnn's classifier has N=10 at any batch; batch 1 of a vector model has 1 row).
The rest are CPU kernel recipes and `n/a` on a cuda target: the torch.ao quantized engines
(x86/fbgemm, qnnpack) have no CUDA kernels at all, and the PT2E X86/ARM quantizers lower to
CPU int8 kernels (oneDNN, XNNPACK): on a GPU their quantize/dequantize ops would run as
float reference code, measuring emulation rather than int8.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Optional

from harness.quantize.base import Recipe

if TYPE_CHECKING:
    from harness.models.spec import ModelSpec
    from targets.base import TargetInfo

AMPERE = (8, 0)
NO_CUDA_ENGINE = ("torch.ao's quantized engines (x86/fbgemm, qnnpack) are CPU kernel libraries with no CUDA "
                  "backend; on a cuda target use torchao.quantize_(Int8DynamicActivationInt8WeightConfig)")
PT2E_ON_CPU = ("the PT2E X86/ARM quantizers lower to CPU int8 kernels (oneDNN, XNNPACK); on a GPU their "
               "quantize/dequantize ops would run as float reference code, not int8, so there is nothing to measure")


def compute_capability(target: "TargetInfo") -> Optional[tuple[int, int]]:
    text = (target.facts.get("gpu") or {}).get("compute_capability")
    if not text:
        return None
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def _needs(capability: tuple[int, int], what: str) -> Callable[["TargetInfo"], Optional[str]]:
    def check(target: "TargetInfo") -> Optional[str]:
        have = compute_capability(target)
        if have is None:
            why = (target.facts.get("gpu") or {}).get("error")
            return (f"the compute capability of target {target.name}'s GPU is unknown"
                    + (f" ({why})" if why else "") + f", and {what} needs {capability[0]}.{capability[1]}")
        if have < capability:
            return (f"{what} needs compute capability {capability[0]}.{capability[1]} (Ampere) or newer; "
                    f"{target.device} on target {target.name} is {have[0]}.{have[1]}")
        return None
    return check


def cuda_reason(recipe: Recipe, target: "TargetInfo") -> Optional[str]:
    """Why `recipe` cannot run on this cuda target's GPU, or None when it can."""
    if recipe.mode == "fp32" and recipe.execution:
        # the fp32 baselines of other execution formats serve recipes with CPU-only int8 kernels
        return (f"the fp32 {recipe.execution} baseline belongs to recipes whose int8 kernels are CPU-only "
                "(torch.ao's fbgemm/qnnpack, PT2E's oneDNN), so it has nothing to compare on a GPU")
    if recipe.mode in ("fp32", "fp16"):
        return None
    if recipe.mode == "bf16":
        return _needs(AMPERE, "bfloat16 arithmetic")(target)
    if "engine" in recipe.params:
        return NO_CUDA_ENGINE
    if recipe.name.startswith("torchao.quantize_("):
        return _needs(AMPERE, "torchao's int8 matmul (torch._int_mm on cuBLASLt int8 tensor cores)")(target)
    return PT2E_ON_CPU


INT_MM_MIN_ROWS = 17  # torch._int_mm on CUDA: self.size(0) > 16, and K, N multiples of 8


def int_mm_reason(artifact, target: "TargetInfo", batch_size: int) -> Optional[str]:
    """Why torch._int_mm on the GPU refuses the int8 matmuls this artifact records
    (notes.int8_matmuls) at this batch size, or None (also off the GPU, or unrecorded)."""
    from targets.cuda import on_gpu

    shapes = (artifact.manifest.get("notes") or {}).get("int8_matmuls")
    if not on_gpu(target.kind, target.profile) or not shapes:
        return None
    refused = []
    for name, shape in shapes.items():
        rows = batch_size * int(shape["rows_per_sample"])
        why = ([f"{rows} rows"] if rows < INT_MM_MIN_ROWS else []) + [f"{d}={shape[d.lower()]}" for d in ("K", "N")
                                                                      if int(shape[d.lower()]) % 8]
        if why:
            refused.append(f"{name} ({', '.join(why)})")
    if not refused:
        return None
    more = f" and {len(refused) - 4} more" if len(refused) > 4 else ""
    return (f"torchao's int8 matmul is torch._int_mm, which on CUDA needs more than 16 rows and K and N multiples of 8; "
            f"at batch {batch_size} it refuses {'; '.join(refused[:4])}{more}")


def cuda_aware(recipes: tuple[Recipe, ...]) -> tuple[Recipe, ...]:
    """The recipes with applicability that, on a target running the GPU paths (kind cuda, or
    an ssh target with a GPU profile such as jetson-orin), is cuda_reason (the CPU checks such
    as the host's CPU flags do not apply there), and unchanged elsewhere."""
    def wrap(recipe: Recipe) -> Recipe:
        cpu_check = recipe.applicable

        def applicable(spec: "ModelSpec", target: "TargetInfo") -> Optional[str]:
            from targets.cuda import on_gpu

            if on_gpu(target.kind, target.profile):
                return cuda_reason(recipe, target)
            return cpu_check(spec, target) if cpu_check else None

        return replace(recipe, applicable=applicable)

    return tuple(wrap(r) for r in recipes)
