"""The evidence behind a target's answer as small SVG files, written as text (like trend_svg):

- `latency_rounds`: each case's latency distribution per round (one runner process each), as a
  box per round on one log axis (whiskers p5-p95, box p25-p75, median tick). A process that
  landed on the machine's slow level shows as a box apart from its case's other rounds, and is
  drawn red (`apart`: its median is more than APART from the median of the case's round medians).
- `power_trace`: the power samples of a case's timed window, with the idle power read before it.
- `candidates`: the answer's candidates (the modes the candidate rule let through) with their
  speedup intervals at their stated level and their accuracy intervals; the choice is marked.

Each figure is built from what the history stores (latencies with `round_n_runs`, power traces,
the rows' interval columns); nothing is re-measured.
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from harness.values import number

WIDTH = 680
LABEL = 250  # left column: what each row is
RIGHT, TOP, ROW = 16, 34, 15
BLUE, RED, GREEN, GREY = "#1f77b4", "#d62728", "#2ca02c", "#777777"
APART = 0.25  # a round whose median is this far (relative) from its case's median of round medians is drawn apart


def _n(value: float) -> str:
    return f"{value:.1f}"


def _svg(height: float, title: str, body: list[str]) -> str:
    return "\n".join([f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
                      f'viewBox="0 0 {WIDTH} {height:.0f}" font-family="sans-serif" font-size="10" role="img" '
                      f'aria-label="{html.escape(title)}">', f'<rect width="{WIDTH}" height="{height:.0f}" fill="white"/>',
                      f'<text x="{WIDTH / 2:.0f}" y="14" text-anchor="middle" font-size="11">{html.escape(title)}</text>',
                      *body, "</svg>"]) + "\n"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def split_rounds(latencies: Sequence[float], round_n_runs: Any) -> list[np.ndarray]:
    """A row's latencies, round after round (its `round_n_runs`: '412 398 405'); one round when
    the row has no such column or it does not add up."""
    values = np.asarray(latencies, dtype=float)
    sizes = [int(float(v)) for v in str(round_n_runs).split()] if round_n_runs not in (None, "") and not (
        isinstance(round_n_runs, float) and math.isnan(round_n_runs)) else []
    if not sizes or sum(sizes) != len(values):
        return [values]
    return list(np.split(values, np.cumsum(sizes)[:-1]))


def apart_rounds(rounds: Sequence[np.ndarray]) -> list[Optional[float]]:
    """Per round: its median / the median of the case's round medians when that is further than
    APART from 1 (the round ran at another speed level), else None."""
    medians = [float(np.median(r)) for r in rounds]
    centre = float(np.median(medians))
    return [m / centre if len(rounds) > 1 and centre > 0 and abs(m / centre - 1.0) > APART else None for m in medians]


def latency_rounds(cases: Sequence[tuple[str, list[np.ndarray]]], title: str, path: Path) -> tuple[Path, list[str]]:
    """One box per (case, round) on a shared log axis; returns the file and a line per round apart."""
    rows = [(label, r, values) for label, rounds in cases for r, values in enumerate(rounds) if len(values)]
    every = np.concatenate([values for _, _, values in rows])
    lo, hi = (float(v) for v in np.percentile(every, [1, 99.5]))
    lo, hi = max(lo * 0.9, 1e-9), hi * 1.1
    plot_w = WIDTH - LABEL - RIGHT

    def x(v: float) -> float:
        return LABEL + plot_w * (math.log(min(max(v, lo), hi)) - math.log(lo)) / (math.log(hi) - math.log(lo))

    body, notes = [], []
    height = TOP + ROW * len(rows) + 30
    for k in range(6):  # log-axis ticks
        value = lo * (hi / lo) ** (k / 5)
        body.append(f'<line x1="{_n(x(value))}" x2="{_n(x(value))}" y1="{TOP - 4}" y2="{height - 26}" stroke="#e4e4e4"/>'
                    f'<text x="{_n(x(value))}" y="{height - 14:.0f}" text-anchor="middle">{value:.3g}</text>')
    body.append(f'<text x="{LABEL + plot_w / 2:.0f}" y="{height - 3:.0f}" text-anchor="middle">latency (ms, log scale)'
                f' per round: whiskers p5-p95, box p25-p75, tick median; red: a round apart from its case</text>')
    flags = {label: apart_rounds(rounds) for label, rounds in cases}
    for i, (label, r, values) in enumerate(rows):
        y = TOP + ROW * i + ROW / 2
        p5, p25, p50, p75, p95 = (float(v) for v in np.percentile(values, [5, 25, 50, 75, 95]))
        ratio = flags[label][r]
        color = RED if ratio is not None else BLUE
        if ratio is not None:
            notes.append(f"{label}, round {r + 1}: median {p50:.4g} ms, {ratio:.2f}x its case's median of round medians")
        tip = (f"<title>{html.escape(label)} round {r + 1}: {len(values)} latencies, p50 {p50:.4g} ms, "
               f"p25-p75 {p25:.4g}-{p75:.4g} ms</title>")
        body.append(f'<g class="round{" apart" if ratio is not None else ""}" data-case="{html.escape(label)}" '
                    f'data-round="{r + 1}" data-median-ms="{p50:.6g}">{tip}'
                    f'<text x="{LABEL - 6}" y="{_n(y + 3)}" text-anchor="end">{html.escape(label)} r{r + 1}</text>'
                    f'<line x1="{_n(x(p5))}" x2="{_n(x(p95))}" y1="{_n(y)}" y2="{_n(y)}" stroke="{color}"/>'
                    f'<rect x="{_n(x(p25))}" y="{_n(y - 5)}" width="{_n(max(x(p75) - x(p25), 1.0))}" height="10" '
                    f'fill="{color}" fill-opacity="0.25" stroke="{color}"/>'
                    f'<line x1="{_n(x(p50))}" x2="{_n(x(p50))}" y1="{_n(y - 6)}" y2="{_n(y + 6)}" stroke="{color}" '
                    f'stroke-width="2"/></g>')
    return _write(path, _svg(height, title, body)), notes


def power_trace(trace: Sequence[tuple[float, float]], idle_w: Optional[float], title: str, path: Path) -> Path:
    """Watts over the timed window (seconds since it opened), the idle power dashed."""
    t = np.asarray([s for s, _ in trace], dtype=float)
    w = np.asarray([p for _, p in trace], dtype=float)
    height, left, bottom = 170, 56, 30
    top_w = max(float(w.max()), idle_w or 0.0) * 1.1 or 1.0
    span = float(t.max()) or 1.0
    plot_w, plot_h = WIDTH - left - RIGHT, height - TOP - bottom

    def x(s: float) -> float:
        return left + plot_w * s / span

    def y(v: float) -> float:
        return TOP + plot_h * (1.0 - v / top_w)

    body = [f'<line x1="{left}" x2="{WIDTH - RIGHT}" y1="{_n(y(0))}" y2="{_n(y(0))}" stroke="#ccc"/>',
            f'<text x="{left - 4}" y="{_n(y(top_w / 1.1) + 3)}" text-anchor="end">{top_w / 1.1:.3g} W</text>',
            f'<text x="{left - 4}" y="{_n(y(0) + 3)}" text-anchor="end">0</text>',
            f'<text x="{WIDTH - RIGHT}" y="{height - 10}" text-anchor="end">{span:.3g} s</text>',
            f'<text x="{left}" y="{height - 10}">0 s (window opens)</text>']
    if idle_w is not None:
        body.append(f'<line class="idle" x1="{left}" x2="{WIDTH - RIGHT}" y1="{_n(y(idle_w))}" y2="{_n(y(idle_w))}" '
                    f'stroke="{GREY}" stroke-dasharray="4 3"><title>idle power before the window: {idle_w:.4g} W</title>'
                    f'</line><text x="{WIDTH - RIGHT - 2}" y="{_n(y(idle_w) - 3)}" text-anchor="end" fill="{GREY}">'
                    f'idle {idle_w:.3g} W</text>')
    points = " ".join(f"{_n(x(s))},{_n(y(v))}" for s, v in zip(t, w))
    body.append(f'<polyline class="trace" data-samples="{len(t)}" points="{points}" fill="none" stroke="{BLUE}" '
                f'stroke-width="1.2"/>')
    return _write(path, _svg(height, title, body))


def candidates(entries: Sequence[dict[str, Any]], title: str, path: Path) -> Path:
    """The answer's candidates: each a dict with label, speedup, low, high, level (the interval's
    stated confidence, None: one round, no interval), accuracy and its interval, chosen."""
    highs = [e["high"] if e.get("high") is not None else e["speedup"] for e in entries if e.get("speedup") is not None]
    lows = [e["low"] if e.get("low") is not None else e["speedup"] for e in entries if e.get("speedup") is not None]
    lo, hi = min(lows + [1.0]) * 0.9, max(highs + [1.0]) * 1.1
    plot_w = WIDTH - LABEL - RIGHT - 150
    height = TOP + ROW * 1.6 * len(entries) + 28

    def x(v: float) -> float:
        return LABEL + plot_w * (v - lo) / (hi - lo)

    body = [f'<line x1="{_n(x(1.0))}" x2="{_n(x(1.0))}" y1="{TOP - 4}" y2="{height - 24:.0f}" stroke="{GREY}" '
            f'stroke-dasharray="3 3"/><text x="{_n(x(1.0))}" y="{height - 12:.0f}" text-anchor="middle">1x (fp32)</text>',
            f'<text x="{LABEL + plot_w + 10}" y="{TOP - 8}">accuracy [95% interval]</text>']
    for i, e in enumerate(entries):
        y = TOP + ROW * 1.6 * i + ROW / 2
        color = GREEN if e.get("chosen") else BLUE
        speed = e.get("speedup")
        interval = (f"{speed:.2f}x" if speed is not None else "no speedup") + (
            f" [{e['low']:.2f}-{e['high']:.2f} @{100 * e['level']:.3g}%]" if e.get("level") is not None else
            " (one round: no interval)" if speed is not None else "")
        acc = "" if e.get("accuracy") is None else f"{e['accuracy']:.4f}" + (
            f" [{e['acc_low']:.4f}-{e['acc_high']:.4f}]" if e.get("acc_low") is not None else "")
        if e.get("baseline"):
            interval = "1x: the fp32 baseline"
        weight = ' font-weight="bold"' if e.get("chosen") else ""
        parts = [f'<g class="candidate{" chosen" if e.get("chosen") else ""}" data-label="{html.escape(e["label"])}" '
                 f'data-interval="{html.escape(interval)}">',
                 f'<text x="{LABEL - 6}" y="{_n(y + 3)}" text-anchor="end"{weight}>{html.escape(e["label"])}</text>']
        if speed is not None:
            if e.get("low") is not None and e.get("high") is not None:
                parts.append(f'<line x1="{_n(x(e["low"]))}" x2="{_n(x(e["high"]))}" y1="{_n(y)}" y2="{_n(y)}" '
                             f'stroke="{color}" stroke-width="2"/>')
            parts.append(f'<circle cx="{_n(x(speed))}" cy="{_n(y)}" r="3.5" fill="{color}"/>'
                         f'<text x="{_n(x(speed))}" y="{_n(y - 6)}" text-anchor="middle" fill="{color}">'
                         f'{html.escape(interval)}</text>')
        parts.append(f'<text x="{LABEL + plot_w + 10}" y="{_n(y + 3)}">{html.escape(acc)}</text></g>')
        body.append("".join(parts))
    return _write(path, _svg(height, title, body))


def candidate_entry(row: dict[str, Any], label: str, chosen: bool) -> dict[str, Any]:
    """A row's figures for `candidates`."""
    baseline = row.get("mode") == "fp32"  # the speedups' 1x
    return {"label": label, "chosen": chosen, "baseline": baseline,
            "speedup": 1.0 if baseline else number(row.get("speedup")), "low": number(row.get("speedup_ci_low")),
            "high": number(row.get("speedup_ci_high")), "level": number(row.get("speedup_ci_level")),
            "accuracy": number(row.get("accuracy")), "acc_low": number(row.get("accuracy_ci_low")),
            "acc_high": number(row.get("accuracy_ci_high"))}
