"""Recipe registry: framework -> recipes, plus the (framework, mode) pairs that cannot exist.

Each framework module exposes RECIPES (tuple of Recipe) and UNAVAILABLE (mode -> reason).
"""
from __future__ import annotations

from typing import Optional

from harness.quantize import onnxruntime as _onnxruntime
from harness.quantize import onnxruntime_tensorrt as _onnxruntime_tensorrt
from harness.quantize import tflite as _tflite
from harness.quantize import torch as _torch
from harness.quantize import torch_aoti as _torch_aoti
from harness.quantize import torch_executorch as _torch_executorch
from harness.quantize.base import BuildContext, NotApplicable, Recipe

RECIPES: dict[str, tuple[Recipe, ...]] = {
    "onnxruntime": _onnxruntime.RECIPES + _onnxruntime_tensorrt.registered(),  # TensorRT ones where onnxruntime-gpu is
    # AOTInductor packages (execution "aoti") and ExecuTorch programs with XNNPACK ("executorch")
    "torch": _torch.RECIPES + _torch_aoti.RECIPES + _torch_executorch.RECIPES,
    "tflite": _tflite.RECIPES,  # two sources: keras and litert-torch (Recipe.source)
}

UNAVAILABLE: dict[tuple[str, str], str] = {
    ("onnxruntime", mode): reason for mode, reason in _onnxruntime.UNAVAILABLE.items()
}
UNAVAILABLE.update({("torch", mode): reason for mode, reason in _torch.UNAVAILABLE.items()})
UNAVAILABLE.update({("tflite", mode): reason for mode, reason in _tflite.UNAVAILABLE.items()})


def recipes_for(framework: str, mode: str) -> tuple[Recipe, ...]:
    return tuple(r for r in RECIPES.get(framework, ()) if r.mode == mode)


def unavailable_reason(framework: str, mode: str) -> str:
    """Why (framework, mode) has no recipe: the declared reason, or that none is implemented."""
    if (framework, mode) in UNAVAILABLE:
        return UNAVAILABLE[(framework, mode)]
    if framework not in RECIPES:
        return f"quantbench has no {framework} recipes yet"
    return f"no {framework} recipe produces {mode}"


def fp32_recipe(framework: str, like: Optional[Recipe] = None) -> Recipe:
    """The fp32 baseline of a framework; with `like`, the one run the same way: the same source
    (tflite has two) and the same execution format (torch: export, TorchScript, compiled)."""
    found = recipes_for(framework, "fp32")
    if like is not None:
        same = tuple(r for r in found if r.source == like.source and r.execution == like.execution)
        if not same:
            raise LookupError(f"{framework} has no fp32 recipe that runs like {like.name} "
                              f"(source {like.source or 'default'}, execution {like.execution or 'default'})")
        found = same
    if not found:
        raise LookupError(f"framework {framework} has no fp32 baseline recipe")
    return found[0]


__all__ = ["BuildContext", "NotApplicable", "RECIPES", "Recipe", "UNAVAILABLE", "fp32_recipe", "recipes_for", "unavailable_reason"]
