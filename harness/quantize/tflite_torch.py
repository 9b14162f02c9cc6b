"""TFLite artifacts from the model's PyTorch source: litert-torch converts, ai-edge-quantizer quantizes.

The PyTorch user's path to LiteRT. fp32 is `litert_torch.convert` of the spec's torch
module; fp16, dynamic-int8, static-int8, int16x8 and mixed are ai-edge-quantizer recipes
applied to that fp32 .tflite (calibrated on the calibration split; tflite_aeq.py, shared with
the other sources); qat-int8 fine-tunes through litert-torch's own PT2E quantizer and
converts with it.

litert-torch 0.10 cannot export digits-cnn with a dynamic batch (its lowering of the
flatten fails on a symbolic size), so these artifacts have a static batch of 1: a case
with another batch size fails in the runner with both shapes in the reason.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Optional

import numpy as np

from harness.artifacts import BuiltModel
from harness.quantize.base import BuildContext, NotApplicable, Recipe
from harness.quantize.qat_fine_tune import fine_tune, training_set
from harness.quantize.tflite_aeq import FloatTflite, aeq_recipes, signature_dtypes, write
from harness.training import deterministic_torch

SLUG = "litert-torch"
SOURCE = "torch"
STATIC_BATCH = 1
LIBS = ("torch", "litert-torch", "ai-edge-litert")
AEQ_LIBS = LIBS + ("ai-edge-quantizer",)
QAT_LIBS = LIBS + ("torchao",)
QAT_EPOCHS = 5  # fine-tuning epochs from the fp32 weights
QAT_LEARNING_RATE = 5e-4
QAT_BATCH = 32
SEED = 0
# A dataset whose QAT objective is "distill" (qat_fine_tune.py). Measured on MiniLM s32 (2-vCPU
# host, 5 epochs at its lr 5e-6 on the 100 calibration sentences): 43 s cold, and the cosine to
# fp32 stayed at static-int8's (0.9519 vs 0.9523 on 50 sentences, both over the 1-point budget).
DISTILL_NA = ("tflite qat-int8 (litert-torch) runs the classify objective only: distilling the fp32 outputs through "
              "litert-torch's PT2E quantizer took 43 s cold on MiniLM s32 and left the cosine at static-int8's "
              "(0.952 vs 0.952); the distilled qat-int8 rows are torch's and onnxruntime's (PT2E x86)")


def _litert_torch():
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # the harness has its own progress line
    import litert_torch

    return litert_torch


def _signature_inputs(ctx: BuildContext) -> dict[str, str]:
    """litert-torch names the signature inputs args_0, args_1, ... in forward() order, which
    is the order the sample args were given in: the dataset's input order."""
    return {name: f"args_{i}" for i, name in enumerate(ctx.dataset.input_names)}


def _samples(ctx: BuildContext, inputs, start: int, count: int):
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(inputs[n][start:start + count])) for n in ctx.dataset.input_names)


def _torch_notes(ctx: BuildContext) -> dict:
    return {"source": f"torch module converted by litert-torch {_litert_torch().__version__}", "static_batch": STATIC_BATCH}


def _write(ctx: BuildContext, out: Path, content: bytes, notes: dict) -> BuiltModel:
    return write(ctx, out, content, notes, TORCH)


def _content(edge_model) -> bytes:
    content = edge_model.model_content
    return bytes(content() if callable(content) else content)


def build_fp32(ctx: BuildContext, out: Path) -> BuiltModel:
    litert_torch = _litert_torch()
    ctx.progress("litert_torch.convert (float32)")
    module = ctx.torch_module.eval()
    edge = litert_torch.convert(module, _samples(ctx, ctx.dataset.eval_inputs, 0, STATIC_BATCH))
    content = _content(edge)
    # Parity check: the .tflite must compute what the module computes.
    from ai_edge_litert.interpreter import Interpreter
    import torch

    runner = Interpreter(model_content=content).get_signature_runner()
    dtypes = signature_dtypes(content)
    worst = 0.0
    for i in range(8):
        args = _samples(ctx, ctx.dataset.eval_inputs, i, STATIC_BATCH)
        got = next(iter(runner(**{f"args_{j}": a.numpy().astype(dtypes[f"args_{j}"], copy=False)
                                  for j, a in enumerate(args)}).values()))
        with torch.no_grad():
            expected = module(*args)
        expected = (expected[0] if isinstance(expected, (tuple, list)) else expected).numpy()
        worst = max(worst, float(np.max(np.abs(got - expected))))
    if not worst < 1e-3:
        raise RuntimeError(f"litert-torch output differs from the torch module by {worst:.3g} (max abs) on evaluation samples")
    return _write(ctx, out, content, {"convert_max_abs_diff": worst})


def source_layers(ctx: BuildContext) -> dict[str, Optional[np.ndarray]]:
    """The torch module paths LiteRT ops are named by, with the weights of those that have one
    (an op is matched to its module by its weight values; the op locations litert-torch writes
    are fused and ambiguous)."""
    found = {}
    for name, module in ctx.torch_module.named_modules():
        weight = getattr(module, "weight", None)
        if name:
            found[name] = weight.detach().float().cpu().numpy() if hasattr(weight, "detach") else None
    return found


def fp32_content(ctx: BuildContext) -> bytes:
    artifact, _ = ctx.artifact(FP32)
    return artifact.model_file.read_bytes()


def _qat_quantizer(module, probe_args):
    """litert-torch's PT2E quantizer, QAT flavour. litert-torch 0.10's conv+BatchNorm QAT
    patterns call torch.export.export on a plain function, which torch 2.13 refuses; a model
    without BatchNorm never matches them, so they are skipped there (and recorded)."""
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    exported = lambda: torch.export.export(copy.deepcopy(module).train(), probe_args,  # noqa: E731
                                           dynamic_shapes=tuple({0: torch.export.Dim("batch")} for _ in probe_args)).module()
    quantizer = PT2EQuantizer().set_global(config)
    try:
        return quantizer, prepare_qat_pt2e(exported(), quantizer), None
    except Exception as exc:  # noqa: BLE001 - decide below whether the fallback is sound
        failure = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        raise NotApplicable(f"litert-torch's PT2E QAT quantizer fails on this torch ({failure}), and the model has "
                            f"BatchNorm layers, whose conv+bn QAT patterns are the failing part")

    class NoConvBnQAT(PT2EQuantizer):
        STATIC_QAT_ONLY_OPS: list = []  # conv+bn patterns: nothing to match without BatchNorm

    quantizer = NoConvBnQAT().set_global(config)
    return quantizer, prepare_qat_pt2e(exported(), quantizer), f"conv+bn QAT patterns skipped (no BatchNorm): {failure}"


def build_qat(ctx: BuildContext, out: Path) -> BuiltModel:
    if ctx.dataset.qat_objective != "classify":
        raise NotApplicable(DISTILL_NA)
    litert_torch = _litert_torch()
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    dataset = ctx.dataset
    data = training_set(ctx)
    quantizer, prepared, workaround = _qat_quantizer(ctx.torch_module, _samples(ctx, dataset.eval_inputs, 0, 2))
    # seeded, one thread, deterministic algorithms (warn only: a PT2E graph may hold an op without a deterministic kernel)
    with deterministic_torch(SEED, warn_only=True):
        losses = fine_tune(prepared, data, epochs=QAT_EPOCHS, learning_rate=QAT_LEARNING_RATE, batch_size=QAT_BATCH,
                           seed=SEED, progress=ctx.progress, what=f"{ctx.spec.name} (litert-torch PT2E)")
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared, fold_quantize=False)
    ctx.progress("litert_torch.convert (PT2E QAT int8)")
    edge = litert_torch.convert(converted, _samples(ctx, dataset.eval_inputs, 0, STATIC_BATCH),
                                quant_config=QuantConfig(pt2e_quantizer=quantizer))
    notes = {"qat": {"epochs": QAT_EPOCHS, "learning_rate": QAT_LEARNING_RATE, "loss_per_epoch": losses, **data.facts()},
             "io": "int8"}
    if workaround:
        notes["qat"]["workaround"] = workaround
    return _write(ctx, out, _content(edge), notes)


TORCH = FloatTflite(source=SOURCE, slug=SLUG, fp32=lambda ctx: fp32_content(ctx), signature=_signature_inputs,
                    notes=_torch_notes, layout="NCHW", known_layers=lambda ctx: source_layers(ctx),
                    where="tflite (litert-torch)")


def _recipe(mode: str, name: str, build, params: dict, libraries=AEQ_LIBS) -> Recipe:
    return Recipe("tflite", mode, name, SLUG, build, {"static_batch": STATIC_BATCH, **params}, libraries, source=SOURCE)


FP32 = _recipe("fp32", "litert_torch.convert(float32)", build_fp32, {}, LIBS)
RECIPES: tuple[Recipe, ...] = (
    FP32,
    *aeq_recipes(TORCH, "litert_torch.convert", AEQ_LIBS, {"static_batch": STATIC_BATCH}),
    _recipe("qat-int8", "litert_torch PT2EQuantizer(qat, per-channel) + convert", build_qat,
            {"epochs": QAT_EPOCHS, "learning_rate": QAT_LEARNING_RATE, "batch": QAT_BATCH}, QAT_LIBS),
)
