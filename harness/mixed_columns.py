"""The mixed-precision section of a result (`Mixed`): the columns of a `mixed` case: which
layers stayed float, in what precision, how they were chosen, and (keep_float="auto") what the
sensitivity search found, from the artifact's manifest.

`sensitivity` holds the per-layer table and the search trace as compact JSON, so a results
database (and the dashboard reading it) has them without the artifact cache.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from harness.sections import UNSET, Section


def compact_sensitivity(search_notes: Mapping[str, Any]) -> Optional[str]:
    """The table and the trace of a manifest's kept_float_search, as one JSON string."""
    table, search = search_notes.get("sensitivity"), search_notes.get("search")
    if not table:
        return None
    data = {
        "framework": table["framework"], "recipe": table["recipe"], "metric": table["metric"],
        "higher_is_better": table["higher_is_better"], "split": table["split"], "samples": table["samples"],
        "fp32": table["fp32_metric"], "all_int8": table["all_int8_metric"], "sqnr_tool": table["sqnr_tool"],
        "layer_columns": ["name", "native", "op", "sqnr_db", "alone_metric", "alone_loss_pts", "alone_output_sqnr_db", "rank"],
        "layers": [[layer["name"], "; ".join(layer["native"]), layer["op"], layer["sqnr_db"], layer["alone_metric"],
                    layer["alone_loss_pts"], layer["alone_output_sqnr_db"], layer["rank"]] for layer in table["layers"]],
    }
    if search:
        data.update(budget_pts=search["budget_pts"], target_pts=search["target_pts"], met=search["met"],
                    step_columns=["what", "k", "metric", "loss_pts", "meets"],
                    steps=[[s["what"], s["k"], s["metric"], s["loss_pts"], s["meets"]] for s in search["steps"]])
    return json.dumps(data, default=lambda v: None if v != v else str(v))  # NaN/inf become null/"inf"


@dataclass(frozen=True)
class Mixed(Section):
    """The columns of a `mixed` row, from its artifact's manifest."""

    NAME = "mixed"
    EXTRA = ("kept_float", "kept_float_count", "kept_float_precision", "keep_float_source", "keep_float_search",
             "search_evaluations", "search_minutes", "sensitivity")

    kept_float: Any = UNSET  # the layers kept in float, comma-separated
    kept_float_count: Any = UNSET
    kept_float_precision: Any = UNSET
    keep_float_source: Any = UNSET  # named, or searched (keep_float="auto")
    keep_float_search: Any = UNSET  # the search's outcome
    search_evaluations: Any = UNSET
    search_minutes: Any = UNSET
    sensitivity: Any = UNSET  # the per-layer table and the search trace, as compact JSON

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "Mixed":
        notes = manifest.get("notes") or {}
        values: dict[str, Any] = {}
        kept = notes.get("kept_float_layers")
        if kept is None and isinstance(notes.get("layers"), list):
            kept = notes["layers"]  # an artifact built before kept_float_layers was recorded
        if kept is not None:
            values["kept_float"] = ", ".join(kept)
            values["kept_float_count"] = len(kept)
        values["kept_float_precision"] = notes.get("kept_float_precision")
        values["keep_float_source"] = notes.get("keep_float_source")
        search = notes.get("kept_float_search") or {}
        if search:
            trace = search.get("search") or {}
            table = search.get("sensitivity") or {}
            values["keep_float_search"] = search.get("status")
            values["search_evaluations"] = len(trace.get("steps") or [])
            values["search_minutes"] = round(((trace.get("seconds") or 0.0) + (table.get("seconds") or 0.0)) / 60.0, 2)
            values["sensitivity"] = compact_sensitivity(search)
        return cls(**values)


MIXED_COLUMNS = list(Mixed.EXTRA)  # the registry's mixed group (harness/columns.py: group("mixed"))
