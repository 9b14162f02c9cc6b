"""The dashboard's figures drawn with matplotlib (PNG files; no pyplot global state): the Pareto plot
and the size/memory/energy bars. Trends are SVG text (harness/history/trend_svg.py)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.history.recommend import Recommendation
from harness.metrics import direction_text, row_higher_is_better
from harness.values import number

FRAMEWORK_COLORS = {"torch": "#d62728", "onnxruntime": "#1f77b4", "tflite": "#ff7f0e"}
MODE_MARKERS = {"fp32": "o", "fp16": "s", "bf16": "D", "dynamic-int8": "^", "static-int8": "v", "qat-int8": "P",
                "mixed": "X", "int16x8": "h"}
DPI = 96


def _save(fig: Figure, path: Path) -> Path:
    """One draw with the figure's own margins (bbox_inches="tight" draws twice: half the time of a
    rebuilt dashboard went there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path



def _color(framework: str) -> str:
    return FRAMEWORK_COLORS.get(framework, "#7f7f7f")


def pareto(rows: pd.DataFrame, rec: Recommendation, path: Path) -> Path:
    """Accuracy vs p50 latency of every measured (framework, mode); frontier, budgets, the choice."""
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(8.6, 4.4))
    fig.subplots_adjust(left=0.09, right=0.66, bottom=0.12, top=0.92)
    ax = fig.add_subplot()
    ok = rows[(rows["status"] == "ok") & rows["latency_p50_ms"].notna() & rows["accuracy"].notna()]
    if ok.empty:
        ax.text(0.5, 0.5, "no measured cases with accuracy", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, path)
    for (fw, mode), group in ok.groupby(["framework", "mode"], sort=False):  # colour = framework, marker = mode
        ax.scatter(group["latency_p50_ms"], group["accuracy"], s=60, color=_color(str(fw)),
                   marker=MODE_MARKERS.get(str(mode), "o"), edgecolors="black", linewidths=0.5, zorder=3)
    keys = [Line2D([], [], color=_color(str(fw)), marker="o", linestyle="", label=str(fw)) for fw in ok["framework"].unique()]
    keys += [Line2D([], [], color="#999999", marker=MODE_MARKERS.get(str(m), "o"), markeredgecolor="black", linestyle="",
                    label=str(m)) for m in ok["mode"].unique()]
    higher = row_higher_is_better(ok.iloc[0].to_dict())
    sign = 1.0 if higher else -1.0  # accuracy x sign: larger is better either way
    front, best = [], -math.inf  # fastest-first; a point is on the frontier if nothing faster is as good
    for r in ok.sort_values(["latency_p50_ms", "accuracy"], ascending=[True, not higher]).to_dict("records"):
        if sign * r["accuracy"] > best:
            front.append((r["latency_p50_ms"], r["accuracy"]))
            best = sign * r["accuracy"]
    xs, ys = zip(*front)
    ax.step(xs, ys, where="post", color="#555555", linestyle="--", linewidth=1, label="Pareto frontier", zorder=2)
    for fw, group in ok.groupby("framework"):
        base = group[group["mode"] == "fp32"]
        if len(base):
            line = float(base["accuracy"].iloc[0]) - sign * rec.max_drop / 100.0
            ax.axhline(line, color=_color(str(fw)), linestyle=":", linewidth=1,
                       label=f"{fw} fp32 {'-' if higher else '+'} {rec.max_drop:g} pts (budget)")
    if rec.choice is not None:
        r = rec.choice.row
        ax.scatter(r["latency_p50_ms"], r["accuracy"], s=420, facecolors="none", edgecolors="#2ca02c", linewidths=2.5,
                   zorder=4, label=f"recommended: {rec.answer}")
    p50 = ok["latency_p50_ms"].astype(float)
    if p50.max() / max(p50.min(), 1e-12) > 10:
        ax.set_xscale("log")
    ax.set_xlabel("p50 latency (ms), lower is better")
    ax.set_ylabel(f"accuracy ({ok['metric'].iloc[0]}), {direction_text(higher)}")
    ax.set_title(f"{rec.model}, batch {rec.batch_size} on {rec.target}")
    ax.grid(True, alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()  # frontier, budgets, the choice; then one key per framework and mode
    ax.legend(handles=handles + keys, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)


def bars(rows: pd.DataFrame, title: str, path: Path) -> Path:
    """Artifact size, peak memory and energy per inference of each measured case."""
    from harness.history.recommend import label

    ok = rows[rows["status"] == "ok"].copy()
    height = max(2.2, 0.3 * len(ok) + 1.2)
    fig = Figure(figsize=(11.0, height))
    fig.subplots_adjust(left=0.22, right=0.98, wspace=0.25, bottom=0.5 / height, top=1 - 0.75 / height)
    panels = (("size_bytes", "artifact size (KiB)", 1 / 1024), ("peak_rss_mb", "peak RSS (MB)", 1.0),
              ("energy_mj_per_inf", "energy per inference (mJ)", 1.0))
    labels = [label(r) for r in ok.to_dict("records")]  # 'tflite static-int8 (litert-torch)': recipes apart
    colors = [_color(fw) for fw in ok["framework"]]
    for i, (column, name, scale) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        values = [(number(v) or float("nan")) * scale for v in ok[column]] if len(ok) else []
        if not values or all(math.isnan(v) for v in values):
            sources = sorted({str(s) for s in ok.get("power_source", pd.Series(dtype=str)).dropna()}) if column.startswith("energy") else []
            why = sources[0] if sources else "not measured"
            ax.text(0.5, 0.5, "\n".join(_wrap(f"{name}: {why}", 38)), ha="center", va="center", fontsize=8,
                    transform=ax.transAxes)
            ax.set_axis_off()
            continue
        y = np.arange(len(values))
        ax.barh(y, [0 if math.isnan(v) else v for v in values], color=colors)
        ax.set_yticks(y, labels if i == 0 else [""] * len(y), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=10, y=1 - 0.2 / height)
    return _save(fig, path)


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])
