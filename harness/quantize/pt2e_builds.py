"""The PT2E int8 builds every deployed torch format shares: static-int8 and mixed
(`torch.pt2e_convert`), qat-int8 (`qat_torch.qat_convert`) and dynamic-int8, each then written
by the format's own save function. The AOTInductor packages (torch_aoti.py) and the ExecuTorch
programs (torch_executorch.py) differ only in the quantizer that annotates, that save function
and the label in the build's `what`. torch is imported lazily, by the steps themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.artifacts import BuiltModel
from harness.quantize.base import BuildContext, NotApplicable, Recipe
from harness.quantize.pt2e_torch import QUANTIZERS, calibrate_weights_only, fp32_capture, layer_precision, make_quantizer
from harness.quantize.qat_torch import QATConfig, qat_convert
from harness.quantize.torch import pt2e_convert
from harness.quantize.torch_export import drop_unused_state

Build = Callable[[BuildContext, Path], BuiltModel]


@dataclass(frozen=True)
class PT2EBuilds:
    """The static-int8 / mixed / qat-int8 / dynamic-int8 build functions of one deployed torch format."""

    quantizer: str  # a key of pt2e_torch.QUANTIZERS: what static-int8 and mixed annotate for
    save: Callable[..., BuiltModel]  # (module, ctx, out, *, what, notes, tolerance, int8): save_aoti, save_pte
    label: str  # the format in the build's `what`, e.g. "AOTI": "static-int8 (AOTI)"
    # The format's mixed recipe, the one its float layers are handed to. A callable: the recipe
    # modules define their MIXED after the builds it is made of, so it is looked up at build time.
    mixed_recipe: Callable[[], Recipe]

    def static(self, mixed: bool = False) -> Build:
        """PT2E static int8 calibrated on the calibration split; mixed: the float layers left unannotated."""
        def build(ctx: BuildContext, out: Path) -> BuiltModel:
            converted, notes = pt2e_convert(ctx, self.quantizer, mixed, recipe=self.mixed_recipe() if mixed else None)
            return self.save(converted, ctx, out, what=f"{'mixed' if mixed else 'static-int8'} ({self.label})", notes=notes,
                             tolerance=None, int8=True)

        return build

    def qat(self, config: QATConfig) -> Build:
        """Fake-quantized fine-tuning with `config` (its quantizer), then convert_pt2e."""
        def build(ctx: BuildContext, out: Path) -> BuiltModel:
            converted, facts = qat_convert(ctx, config)
            return self.save(converted, ctx, out, what=f"qat-int8 ({self.label})", notes=facts, tolerance=None, int8=True)

        return build

    def dynamic(self, label: str = "") -> Build:
        """The quantizer's dynamic config: int8 weights, activations quantized per call (Linear
        layers only); `label` in the build's `what` instead of the format's."""
        def build(ctx: BuildContext, out: Path) -> BuiltModel:
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            prepared = prepare_pt2e(fp32_capture(ctx), make_quantizer(self.quantizer, is_dynamic=True))
            samples = calibrate_weights_only(prepared, ctx)  # weights only: activations are quantized per call
            converted = convert_pt2e(prepared)
            dropped = drop_unused_state(converted)
            layers = layer_precision(converted)
            if not any(p == "int8" for p in layers.values()):
                raise NotApplicable(f"{QUANTIZERS[self.quantizer][1]}(is_dynamic=True) quantizes Linear layers and "
                                    f"quantized none of {ctx.spec.name} (layers: {layers})")
            return self.save(converted, ctx, out, what=f"dynamic-int8 ({label or self.label})", tolerance=None, int8=True,
                             notes={"layers": layers, "calibration_samples": samples, "dropped_float_copies": dropped})

        return build
