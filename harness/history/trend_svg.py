"""One case's p50 over runs as a small SVG file, written as text.

The dashboard draws one trend per case, and a run rebuilds the dashboard at its end: with
matplotlib each trend cost ~0.15 s on a quiet core (0.7 s on a busy one), which made the
dashboard the slowest step after a digits run. This writer draws the same content (p50 and
the p50-p90 band, step-detected levels and steps, the runs the pairwise gate flagged, noisy
and unknown-noise runs, dates) in well under a millisecond per case.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from harness.history.stepdetect import REGRESSION, Step, levels
from harness.values import number

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 30, 34
BLUE, GREY, RED, GREEN = "#1f77b4", "#555555", "#d62728", "#2ca02c"


def _num(value: float) -> str:
    return f"{value:.1f}"


def noise_marks(iqr_over_median: Sequence, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, unknown) masks: IQR/median at or above the gate's noise threshold, and missing
    (a run without the figure is not counted as quiet)."""
    values = np.array([number(v) if number(v) is not None else np.nan for v in iqr_over_median], dtype=float)
    unknown = np.isnan(values)
    return (~unknown) & (np.nan_to_num(values) >= noise), unknown


def trend(history: pd.DataFrame, steps: Sequence[Step], gate_regressions: Sequence[str], threshold: float,
          title: str, path: Path, noise: float = 0.10) -> Path:
    """p50 (and the p50-p90 band) of one case over runs (history: oldest first, with
    latency_p50_ms, latency_p90_ms, iqr_over_median, run_id, run_started_at)."""
    h = history.reset_index(drop=True)
    n = len(h)
    p50 = h["latency_p50_ms"].astype(float).to_numpy()
    p90 = h["latency_p90_ms"].astype(float).fillna(h["latency_p50_ms"]).to_numpy() if "latency_p90_ms" in h else p50
    lo, hi = float(np.nanmin(p50)), float(np.nanmax(np.maximum(p50, p90)))
    pad = (hi - lo) * 0.08 or hi * 0.05 or 1.0
    lo, hi = max(lo - pad, 0.0), hi + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: float) -> float:
        return LEFT + (plot_w * (i + 0.5) / n)

    def y(v: float) -> float:
        return TOP + plot_h * (1.0 - (v - lo) / (hi - lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
           f'font-family="sans-serif" font-size="10" role="img" aria-label="{html.escape(title)}">',
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{WIDTH / 2:.0f}" y="14" text-anchor="middle" font-size="11">{html.escape(title)}</text>']
    for k in range(5):  # y grid and labels
        value = lo + (hi - lo) * k / 4
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_num(y(value))}" y2="{_num(y(value))}" stroke="#ddd"/>'
                   f'<text x="{LEFT - 4}" y="{_num(y(value) + 3)}" text-anchor="end">{value:.4g}</text>')
    out.append(f'<text x="12" y="{TOP + plot_h / 2:.0f}" transform="rotate(-90 12 {TOP + plot_h / 2:.0f})" '
               f'text-anchor="middle">latency (ms)</text>')
    every = max(1, n // 6)
    for i in range(0, n, every):  # x labels: run dates
        when = h["run_started_at"].iloc[i] if "run_started_at" in h else None
        label = pd.Timestamp(when).strftime("%m-%d %H:%M") if when is not None and pd.notna(when) else str(h["run_id"].iloc[i])
        out.append(f'<text x="{_num(x(i))}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle">{html.escape(label)}</text>')
    band = [f"{_num(x(i))},{_num(y(v))}" for i, v in enumerate(p90)] + \
           [f"{_num(x(i))},{_num(y(v))}" for i, v in reversed(list(enumerate(p50)))]
    out.append(f'<polygon points="{" ".join(band)}" fill="{BLUE}" fill-opacity="0.15"><title>p50-p90</title></polygon>')
    for start, end, level in levels(p50, threshold):  # step-detected levels
        out.append(f'<line x1="{_num(x(start - 0.4))}" x2="{_num(x(end - 0.6))}" y1="{_num(y(level))}" '
                   f'y2="{_num(y(level))}" stroke="{GREY}" stroke-width="1.5"/>')
    line = " ".join(f"{_num(x(i))},{_num(y(v))}" for i, v in enumerate(p50))
    out.append(f'<polyline points="{line}" fill="none" stroke="{BLUE}" stroke-width="1"/>')
    noisy, unknown = noise_marks(h["iqr_over_median"] if "iqr_over_median" in h else [None] * n, noise)
    for i, v in enumerate(p50):
        tip = f"<title>{html.escape(str(h['run_id'].iloc[i]))}: p50 {v:.4g} ms</title>"
        if unknown[i]:
            out.append(_cross(x(i), y(v), 3.5, "#7f7f7f", tip + "<title>noise unknown</title>"))
        else:
            fill = "white" if noisy[i] else BLUE
            out.append(f'<circle cx="{_num(x(i))}" cy="{_num(y(v))}" r="3" fill="{fill}" stroke="{BLUE}">{tip}</circle>')
    for step in steps:
        bad = step.kind == REGRESSION
        cx, cy = x(step.index), y(p50[step.index])
        tri = (f"{_num(cx - 5)},{_num(cy + 4)} {_num(cx + 5)},{_num(cy + 4)} {_num(cx)},{_num(cy - 5)}" if bad else
               f"{_num(cx - 5)},{_num(cy - 4)} {_num(cx + 5)},{_num(cy - 4)} {_num(cx)},{_num(cy + 5)}")
        color = RED if bad else GREEN
        out.append(f'<polygon points="{tri}" fill="{color}"><title>{step.kind} {step.change:+.0%}</title></polygon>'
                   f'<text x="{_num(cx + 6)}" y="{_num(cy - 6)}" fill="{color}">{step.change:+.0%}</text>')
    flagged = set(gate_regressions)
    for i, run in enumerate(h["run_id"]):
        if run in flagged:
            out.append(_cross(x(i), y(p50[i]), 5, "black", "<title>gate: regression</title>"))
    legend = [("p50", BLUE), (f"open: noisy (IQR/median >= {noise:g})", BLUE), ("grey x: noise unknown", "#7f7f7f"),
              ("black x: gate regression", "black")]
    lx = LEFT + 4
    for text, color in legend:
        out.append(f'<text x="{lx}" y="{TOP - 4}" fill="{color}">{html.escape(text)}</text>')
        lx += 7 * len(text) // 1.3 + 12
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")
    return path


def _cross(cx: float, cy: float, r: float, color: str, inner: str = "") -> str:
    return (f'<g stroke="{color}" stroke-width="1.5">{inner}<line x1="{_num(cx - r)}" y1="{_num(cy - r)}" '
            f'x2="{_num(cx + r)}" y2="{_num(cy + r)}"/><line x1="{_num(cx - r)}" y1="{_num(cy + r)}" '
            f'x2="{_num(cx + r)}" y2="{_num(cy - r)}"/></g>')
