"""Sensitivity tables as text, DataFrames and one picture, from the compact form a `mixed` row's
`sensitivity` column holds (harness/mixed_columns.py: compact_sensitivity), so the CLI and the
dashboard draw the same thing from the same data.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import pandas as pd

Entry = Mapping[str, Any]  # one compact sensitivity dict (one model x framework recipe)


def parse(value: Union[str, Entry, None]) -> Optional[dict]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return json.loads(value) if isinstance(value, str) else dict(value)


def label(entry: Entry) -> str:
    """The framework, and its source or quantizer where it has several: 'tflite (litert-torch)'."""
    recipe, framework = str(entry.get("recipe", "")), entry["framework"]
    if framework == "tflite":
        return "tflite (keras)" if recipe.startswith("tf.lite") else "tflite (litert-torch)"
    if framework == "torch":
        return "torch (pt2e-arm)" if "Arm" in recipe else "torch (pt2e-x86)"
    return framework


def layers_frame(entries: Iterable[Entry], model: str = "") -> pd.DataFrame:
    """One row per (framework, layer): rank, names, SQNR, the metric alone and its loss."""
    rows = []
    for entry in entries:
        columns = entry["layer_columns"]
        for values in entry["layers"]:
            layer = dict(zip(columns, values))
            rows.append({"model": model or entry.get("model", ""), "framework": label(entry), "recipe": entry["recipe"],
                         "metric": entry["metric"], "split": entry["split"], "samples": entry["samples"],
                         "sqnr_tool": entry["sqnr_tool"], **layer})
    return pd.DataFrame(rows)


def steps_frame(entries: Iterable[Entry], model: str = "") -> pd.DataFrame:
    """One row per full evaluation of each framework's search."""
    rows = []
    for entry in entries:
        for i, values in enumerate(entry.get("steps") or [], 1):
            rows.append({"model": model, "framework": label(entry), "step": i, **dict(zip(entry["step_columns"], values)),
                         "budget_pts": entry.get("budget_pts"), "target_pts": entry.get("target_pts")})
    return pd.DataFrame(rows)


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


def text_table(entry: Entry, width: int = 48) -> str:
    """The layers of one framework, worst first."""
    columns = entry["layer_columns"]
    layers = sorted((dict(zip(columns, values)) for values in entry["layers"]), key=lambda layer: layer["rank"])
    lines = [f"{label(entry)}: {entry['recipe']}",
             f"  {entry['metric']} on the {entry['split']} split ({entry['samples']} samples): fp32 {entry['fp32']:.4f}, "
             f"all int8 {entry['all_int8']:.4f}; layer SQNR from {entry['sqnr_tool']}",
             f"  {'rank':>4}  {'layer':<{width}} {'native':<28} {'op':<16} {'alone ' + entry['metric']:>12} "
             f"{'loss pts':>9} {'out SQNR dB':>11} {'layer SQNR dB':>13}"]
    for layer in layers:
        native = str(layer["native"])
        lines.append(f"  {layer['rank']:>4}  {layer['name'][-width:]:<{width}} {native[-28:]:<28} {layer['op'][:16]:<16} "
                     f"{_fmt(layer['alone_metric'], '.4f'):>12} {_fmt(layer['alone_loss_pts'], '+.2f'):>9} "
                     f"{_fmt(layer['alone_output_sqnr_db'], '.1f'):>11} {_fmt(layer['sqnr_db'], '.1f'):>13}")
    if entry.get("steps"):
        lines.append(f"  search within {entry['budget_pts']:g} points (target {entry['target_pts']:.2f} on the "
                     f"{entry['split']} split):")
        for what, k, metric, loss, meets in entry["steps"]:
            lines.append(f"    {what:<44.44} {k:>3} float  {entry['metric']} {metric:.4f}  loss {loss:+.2f}  "
                         f"{'meets' if meets else 'over'}")
    return "\n".join(lines)


def figure(entries: list[Entry], title: str, path: Path) -> Path:
    """Per-layer sensitivity bars for every framework, aligned by layer (top), and the metric
    against the number of float layers each search tried, with each budget line (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    order: list[str] = []
    for entry in entries:
        for values in entry["layers"]:
            name = values[entry["layer_columns"].index("name")]
            if name not in order:
                order.append(name)
    width = max(8.0, 0.32 * len(order) + 3)
    fig, (bars, curve) = plt.subplots(2, 1, figsize=(width, 9), gridspec_kw={"height_ratios": [3, 2]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    step = 0.8 / max(len(entries), 1)
    x = np.arange(len(order))
    for i, entry in enumerate(entries):
        columns = entry["layer_columns"]
        loss = {v[columns.index("name")]: v[columns.index("alone_loss_pts")] for v in entry["layers"]}
        heights = [loss.get(name, np.nan) for name in order]
        bars.bar(x - 0.4 + step * (i + 0.5), heights, step, label=label(entry), color=colors[i % len(colors)])
    bars.set_xticks(x)
    bars.set_xticklabels(order, rotation=90, fontsize=7)
    bars.set_ylabel("metric loss with only this layer int8 (points)")
    bars.axhline(0, color="#888", linewidth=0.8)
    bars.legend(fontsize=8)
    bars.set_title(title, fontsize=10)
    drew = False
    for i, entry in enumerate(entries):
        steps = sorted(entry.get("steps") or [], key=lambda s: s[1])
        if not steps:
            continue
        color = colors[i % len(colors)]
        ks, values = [s[1] for s in steps], [s[2] for s in steps]
        curve.plot(ks, values, "o-", color=color, label=label(entry), markersize=4)
        budget = entry.get("budget_pts")
        if budget is not None:
            sign = -1 if entry.get("higher_is_better", True) else 1
            curve.axhline(entry["fp32"] + sign * budget / 100.0, color=color, linestyle="--", linewidth=0.9)
        drew = True
    curve.set_xlabel("layers kept float (search evaluations)")
    curve.set_ylabel(f"{entries[0]['metric'] if entries else 'metric'} on the {entries[0]['split'] if entries else ''} split")
    if drew:
        curve.legend(fontsize=8, title="dashed: fp32 - budget", title_fontsize=8)
    else:
        curve.text(0.5, 0.5, "no search (the suite has no mixed budget)", ha="center", va="center", transform=curve.transAxes)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
