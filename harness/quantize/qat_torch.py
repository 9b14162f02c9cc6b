"""Quantization-aware training through PT2E, shared by two recipes:

  - torch qat-int8: fake-quantized fine-tuning from the fp32 weights (prepare_qat_pt2e) with the
    dataset's objective on its split (qat_fine_tune.py: cross-entropy on labels, or distillation
    of the fp32 outputs), then convert_pt2e; saved as a torch.export .pt2;
  - onnxruntime qat-int8: that same converted model (the torch artifact, from the cache)
    exported to ONNX, where its quantize/dequantize pairs become QDQ nodes.

Training is deterministic (fixed seed, fixed batch order, one thread). A non-finite loss
stops training with QATDiverged (qat_fine_tune.py): the case becomes `error`, never a model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.artifacts import BuiltModel
from harness.quantize.base import BuildContext, Recipe
from harness.quantize.pt2e_torch import QUANTIZERS, quantizer_applicable
from harness.quantize.qat_fine_tune import QATDiverged, fine_tune, training_set  # noqa: F401 - QATDiverged: its old home
from harness.training import deterministic_torch


@dataclass(frozen=True)
class QATConfig:
    epochs: int = 3  # fine-tuning passes over the QAT split (Dataset.qat_split)
    learning_rate: float = 1e-4  # Adam, starting from the trained fp32 weights
    batch_size: int = 32  # train batch size
    seed: int = 0  # fixes the batch order (and any randomness in the model)
    quantizer: str = "x86"  # PT2E quantizer, a key of pt2e_torch.QUANTIZERS

    def params(self) -> dict[str, Any]:
        return asdict(self)


def qat_convert(ctx: BuildContext, config: QATConfig):
    """Fine-tune with fake quantization, then convert. Returns (converted GraphModule, facts)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    from harness.quantize.pt2e_torch import capture, layer_precision, make_quantizer
    from harness.quantize.torch_export import drop_unused_state, fp32_copy

    # seeded, one thread, deterministic algorithms (warn only: a PT2E graph may hold an op without a deterministic kernel)
    with deterministic_torch(config.seed, warn_only=True):
        data = training_set(ctx)
        prepared = prepare_qat_pt2e(capture(fp32_copy(ctx), ctx), make_quantizer(config.quantizer, is_qat=True))
        if data.objective == "classify":
            move_exported_model_to_train(prepared)
        # distill keeps the graph's inference behaviour (dropout off, batch norm on its running
        # statistics): the loss is then the distance of the function that is deployed to fp32's,
        # without dropout's noise, which the fp32 targets (eval mode) never had
        epoch_losses = fine_tune(prepared, data, epochs=config.epochs, learning_rate=config.learning_rate,
                                 batch_size=config.batch_size, seed=config.seed, progress=ctx.progress, what=ctx.spec.name)
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared)
    dropped = drop_unused_state(converted)
    facts = {"qat": dict(config.params(), **data.facts()), "train_samples": len(data), "epoch_mean_loss": epoch_losses,
             "layers": layer_precision(converted), "dropped_float_copies": dropped}
    return converted, facts


def build_torch(config: QATConfig):
    def build(ctx: BuildContext, out: Path) -> BuiltModel:
        from harness.quantize.pt2e_torch import RUNTIME_REQUIRES
        from harness.quantize.torch_export import save_exported

        converted, facts = qat_convert(ctx, config)
        return save_exported(converted, ctx, out, what="qat-int8", runtime_requires=RUNTIME_REQUIRES, notes=facts)

    return build


def trained_program(ctx: BuildContext, config: QATConfig):
    """The converted QAT model of `config` as the torch artifact of torch_recipe(config) holds it
    (fine-tuned once per model and config, then cached): (its artifact, the loaded program). The
    ONNX export and the AOTInductor package of the same QAT start from it, so a run fine-tunes once."""
    import importlib

    import torch

    from harness.quantize.pt2e_torch import RUNTIME_REQUIRES

    for module in RUNTIME_REQUIRES:  # the q/dq ops torch.export.load needs registered
        importlib.import_module(module)
    source, _ = ctx.artifact(torch_recipe(config))
    return source, torch.export.load(str(source.model_file))


def trained_facts(source) -> dict[str, Any]:
    """The manifest notes of a package built from the QAT artifact `source`: how it was trained."""
    notes = source.manifest.get("notes") or {}
    kept = ("qat", "train_samples", "epoch_mean_loss", "layers", "dropped_float_copies")
    return dict({k: notes[k] for k in kept if k in notes}, source_artifact=source.manifest["key"])


def build_onnx(config: QATConfig):
    """The torch QAT artifact of the same config, exported to ONNX (QDQ pairs)."""

    def build(ctx: BuildContext, out: Path) -> BuiltModel:
        import torch

        from harness.quantize.onnx_graph import OPSET, describe
        from harness.quantize.torch_export import example_inputs, first_line

        source, program = trained_program(ctx, config)
        path = out / "model.onnx"
        ctx.progress("exporting the QAT model to ONNX (QDQ)")
        try:
            torch.onnx.export(program, example_inputs(ctx), str(path), input_names=list(ctx.dataset.input_names),
                              opset_version=OPSET, dynamo=True, external_data=False)
        except Exception as exc:
            raise RuntimeError(
                f"torch.onnx.export could not export the QAT model of {ctx.spec.name} ({first_line(exc)}); "
                "the torch qat-int8 artifact is unaffected"
            ) from exc
        folded = _deployable(path)
        notes = _compare(program.module(), path, ctx)
        notes["weights_folded_to_int8"] = folded
        notes.update({k: v for k, v in trained_facts(source).items() if k in ("qat", "source_artifact")},  # how it trained
                     exporter=f"torch.onnx.export(ExportedProgram, dynamo=True, opset={OPSET})")
        return describe(path, notes)

    return build


def _deployable(path: Path) -> list[str]:
    """Store the file as it is deployed: weights quantized at every call become int8
    initializers, the exporter's debug metadata goes (onnx_weights). Returns the weights folded."""
    import onnx

    from harness.quantize.onnx_weights import fold_weight_quantize, strip_debug_metadata

    model = onnx.load(str(path))
    folded = fold_weight_quantize(model)
    strip_debug_metadata(model)
    onnx.save(model, str(path))
    return folded


def _compare(module, path: Path, ctx: BuildContext) -> dict[str, Any]:
    """How closely onnxruntime's int8 kernels follow the torch reference of the same model."""
    import onnx
    import onnxruntime as ort
    import torch

    names = ctx.dataset.input_names
    feed = {n: np.ascontiguousarray(ctx.dataset.eval_inputs[n]) for n in names}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, feed)[0]
    with torch.inference_mode():
        want = module(*(torch.from_numpy(feed[n]) for n in names))
    want = (want if isinstance(want, torch.Tensor) else want[0]).numpy()
    ops = [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]
    if "QuantizeLinear" not in ops or "DequantizeLinear" not in ops:
        raise RuntimeError(f"the ONNX export of the QAT model of {ctx.spec.name} has no QuantizeLinear/DequantizeLinear pairs")
    return {
        "qdq_nodes": {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")},
        "vs_torch_max_abs_diff": float(np.max(np.abs(got - want))),
        "vs_torch_top1_agreement": float(np.mean(got.argmax(-1) == want.argmax(-1))) if got.ndim > 1 else None,
    }


def torch_recipe(config: QATConfig = QATConfig()) -> Recipe:
    name = f"torchao.pt2e.prepare_qat_pt2e({QUANTIZERS[config.quantizer][1]},{config.epochs}ep,lr={config.learning_rate:g})+convert_pt2e, eager"
    return Recipe("torch", "qat-int8", name, f"pt2e-{config.quantizer}", build_torch(config), config.params(),
                  ("torch", "torchao"), quantizer_applicable(config.quantizer))


def onnx_recipe(config: QATConfig = QATConfig()) -> Recipe:
    return Recipe("onnxruntime", "qat-int8", f"torch PT2E QAT ({config.quantizer}) -> torch.onnx.export(QDQ)", "qdq",
                  build_onnx(config), dict(config.params(), weights="int8 initializers", debug_metadata="stripped"), ("torch", "torchao", "onnx", "onnxscript", "onnxruntime"))
