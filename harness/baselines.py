"""What a row's comparison is against, in words: the baseline it names, and how its execution
format relates to the eager model it came from.

A speedup compares quantization only when both sides ran the same way: the fp32 baseline of a
case is the fp32 recipe of the same framework, source and execution format
(`harness.quantize.fp32_recipe`), and the row names it (`baseline_case`, `baseline_recipe`).
The fp32 artifact itself can be slower than the eager module it was saved from (torch.export's
unlifted module checks its input guards on every call; an exported LSTM runs its loop in the
graph): the build measures both on the host (`notes.versus_eager`), and past
SLOWER_THAN_EAGER the fp32 row, and every row compared with it, says so (`execution_note`).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

SLOWER_THAN_EAGER = 2.0  # an fp32 artifact this many times slower than its eager module gets a note


def name_baseline(row: dict[str, Any], baseline: Optional[Mapping[str, Any]]) -> None:
    if baseline is not None:
        row["baseline_case"] = baseline.get("case_id")
        row["baseline_recipe"] = baseline.get("recipe")


def execution_note(manifest: Mapping[str, Any]) -> Optional[str]:
    """The fp32 artifact's note when it ran far slower than its eager module at build time."""
    measured = (manifest.get("notes") or {}).get("versus_eager") or {}
    ratio = measured.get("ratio")
    if ratio is None or ratio < SLOWER_THAN_EAGER:
        return None
    fmt = ((manifest.get("notes") or {}).get("torch_load") or {}).get("format") or "saved"
    return (f"this {fmt} artifact ran {ratio:.1f}x slower than the eager module it was saved from "
            f"({measured['artifact_ms']:.3g} vs {measured['eager_ms']:.3g} ms per call at batch {measured.get('batch', 1)}, "
            f"on the build host): its latency is the format's as much as the model's")


def inherited_note(baseline: Optional[Mapping[str, Any]]) -> Optional[str]:
    """A row compared with an fp32 baseline that carries an execution note repeats it."""
    note = (baseline or {}).get("execution_note")
    return f"baseline {baseline['case_id']}: {note}" if note else None
