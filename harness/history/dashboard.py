"""The static dashboard: index.html (targets, models, the recommended mode of each) and one
page per target (Pareto plot with the recommendation marked, size/memory/energy bars, the
evidence behind the answer: each case's latencies per round, its power trace, the candidates
with their intervals (evidence_svg), the latest verdicts against the baseline, trend plots per
case with step-detected regressions).

Everything is local files (HTML, inline CSS, PNGs under img/): open index.html from disk
or serve the folder; nothing is fetched from the network.
"""
from __future__ import annotations

import datetime as dt
import html
import math
import re
from pathlib import Path
from typing import Any, Optional, Union

import pandas as pd

from harness.history import evidence_svg, plots, trend_svg
from harness.history.gates import Gates
from harness.history.recommend import DEFAULT_MAX_DROP, Recommendation, as_limits, limits_suffix, recommend
from harness.history.regress import IMPROVEMENT, KEY, REGRESSION, case_key, current_rows, format_change, format_p
from harness.history.stepdetect import detect_steps
from harness.limits import Limits
from harness.metrics import direction_text, row_higher_is_better
from harness.values import formatted, number

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1, h2, h3 { font-weight: 600; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 12px; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; max-width: 380px; overflow-wrap: break-word; }
th { background: #f3f3f3; white-space: nowrap; } img.thumb { width: 260px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.heat { text-align: center; min-width: 70px; font-variant-numeric: tabular-nums; }
.rec { background: #eef8ee; border-left: 4px solid #2ca02c; padding: .5em 1em; margin: .5em 0; }
.rec.none { background: #fbeeee; border-left-color: #d62728; }
.rec ul { margin: .3em 0; padding-left: 1.2em; font-size: 13px; }
.regression { color: #b00; font-weight: 600; } .improvement { color: #080; font-weight: 600; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; } .grid figure { margin: 0; }
figcaption { font-size: 12px; color: #555; max-width: 620px; }
#broken { background: #fdd; padding: .5em; }
.meta { color: #666; font-size: 13px; }
"""

# Marks every image as loaded or not and says so on the page when one failed (a browser
# test reads the marks; a reader sees the warning).
CHECK_IMAGES = """
window.addEventListener("load", function () {
  var imgs = document.images, bad = [];
  for (var i = 0; i < imgs.length; i++) {
    var ok = imgs[i].complete && imgs[i].naturalWidth > 0;
    imgs[i].setAttribute("data-loaded", ok ? "yes" : "no");
    if (!ok) { bad.push(imgs[i].getAttribute("src")); }
  }
  document.body.setAttribute("data-images", (imgs.length - bad.length) + "/" + imgs.length);
  if (bad.length) {
    var p = document.getElementById("broken");
    p.textContent = "These images failed to load: " + bad.join(", ");
    p.hidden = false;
  }
});
"""


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "x"


def _e(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return html.escape(str(value))


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head>\n<body>\n<p id=\"broken\" hidden></p>\n{body}\n"
            f"<script>{CHECK_IMAGES}</script>\n</body></html>\n")


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td class=\"num\">{c}</td>" if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _rec_block(rec: Recommendation) -> str:
    cls = "rec" if rec.choice else "rec none"
    items = "".join(f"<li>{_e(line)}</li>" for line in rec.evidence())
    return (f"<div class=\"{cls}\" data-model=\"{_e(rec.model)}\" data-batch=\"{rec.batch_size}\" "
            f"data-recommended=\"{_e(rec.answer)}\"><b>Recommended for {_e(rec.model)} (batch {rec.batch_size}) "
            f"within {rec.max_drop:g} accuracy points{_e(limits_suffix(rec.limits))}: {_e(rec.answer)}</b><ul>{items}</ul></div>")


def _latest_table(rows: pd.DataFrame) -> str:
    out = []
    for r in rows.to_dict("records"):
        delta = number(r.get("accuracy_delta"))
        out.append([_e(r["framework"]), _e(r["mode"]), _e(r.get("recipe")) or "-", _e(r["status"]),
                    formatted(r.get("latency_p50_ms"), ".4g"), formatted(r.get("speedup"), ".2f", "x"),
                    formatted(r.get("accuracy"), ".4f"), "-" if delta is None else f"{100 * delta:+.2f}",
                    formatted(r.get("size_ratio"), ".2f"), formatted(r.get("peak_rss_mb"), ".1f"),
                    formatted(r.get("energy_mj_per_inf"), ".4g"), _e(r["run_id"]),
                    _e(str(r.get("reason") or "")[:100])])
    metrics = sorted({f"{r['metric']}, {direction_text(row_higher_is_better(r))}" for r in rows.to_dict("records")
                      if isinstance(r.get("metric"), str)})
    accuracy = f"accuracy ({'; '.join(metrics)})" if metrics else "accuracy"
    return _table(["framework", "mode", "recipe", "status", "p50 ms", "speedup", accuracy, "Δ pts vs fp32", "size vs fp32",
                   "peak RSS MB", "mJ/inf", "run", "reason"], out, numeric={4, 5, 6, 7, 8, 9, 10})


def _verdicts_section(verdicts: pd.DataFrame, run_id: str) -> str:
    mine = verdicts[(verdicts["run_id"] == run_id) & verdicts["verdict"].isin([REGRESSION, IMPROVEMENT])] \
        if len(verdicts) else verdicts
    if not len(verdicts) or not len(verdicts[verdicts["run_id"] == run_id]):
        return f"<p class=\"meta\">Run {_e(run_id)} was not compared with a baseline (run it with --qb-baseline).</p>"
    if mine.empty:
        return f"<p>Run {_e(run_id)}: no regressions or improvements beyond the thresholds.</p>"
    rows = [[f"<span class=\"{_e(v['verdict'])}\">{_e(v['verdict'])}</span>", _e(v["case_id"]), _e(v["quantity"]),
             formatted(v["old"], ".5g"), formatted(v["new"], ".5g"), _e(format_change(v["quantity"], number(v["change"]))),
             _e(format_p(number(v["p_value"]))), _e(v["method"]), _e(v["baseline_run_id"])] for v in mine.to_dict("records")]
    return _table(["verdict", "case", "quantity", "old", "new", "change", "p-value", "method", "baseline"], rows,
                  numeric={3, 4, 6})


def _pooled(history: pd.DataFrame) -> bool:
    return "pool" in history.columns and bool(history["pool"].notna().any())


def speedup_colour(speedup: Optional[float]) -> str:
    """Background of a heatmap cell: white at 1x, greener up to 4x faster, redder down to 4x slower."""
    if speedup is None or speedup <= 0:
        return "#eeeeee"
    t = max(-1.0, min(1.0, math.log2(speedup) / 2.0))
    target = (44, 160, 44) if t > 0 else (214, 39, 40)
    r, g, b = (round(255 + (c - 255) * abs(t)) for c in target)
    return f"#{r:02x}{g:02x}{b:02x}"


def _heatmap(model: str, batch: int, cells: pd.DataFrame, devices: list[str]) -> str:
    """Devices down, (framework, mode) across: colour = speedup vs the device's own fp32, text =
    accuracy points vs that fp32 (and the speedup, small)."""
    from harness.vocabulary import FRAMEWORKS, MODES

    fw = {f: i for i, f in enumerate(FRAMEWORKS)}
    md = {m: i for i, m in enumerate(MODES)}
    modes = sorted({(r["framework"], r["mode"]) for r in cells.to_dict("records")},
                   key=lambda k: (fw.get(k[0], 99), md.get(k[1], 99)))
    index = {(r["target"], r["framework"], r["mode"]): r for r in cells.to_dict("records")}
    head = "<tr><th>device</th>" + "".join(f"<th>{_e(f)}<br>{_e(m)}</th>" for f, m in modes) + "</tr>"
    body = []
    for device in devices:
        tds = []
        for f, m in modes:
            r = index.get((device, f, m))
            if r is None:
                tds.append("<td class=\"heat\" data-device=\"{0}\" data-mode=\"{1}/{2}\">-</td>".format(_e(device), _e(f), _e(m)))
                continue
            speedup = 1.0 if m == "fp32" else number(r.get("speedup"))
            delta = 0.0 if m == "fp32" else number(r.get("accuracy_delta"))
            text = "-" if delta is None else f"{100 * delta:+.2f} pts"
            over = " over budget" if r.get("within_budget") is False else ""
            tds.append(f"<td class=\"heat\" style=\"background:{speedup_colour(speedup)}\" data-device=\"{_e(device)}\" "
                       f"data-mode=\"{_e(f)}/{_e(m)}\" data-speedup=\"{'' if speedup is None else f'{speedup:.4f}'}\" "
                       f"data-delta=\"{'' if delta is None else f'{100 * delta:.4f}'}\" "
                       f"title=\"{_e(r.get('recipe'))}: p50 {number(r.get('latency_p50_ms')):.4g} ms{over}\">"
                       f"{_e(text)}{'*' if over else ''}<br><small>{formatted(speedup, '.2f', 'x')}</small></td>")
        body.append(f"<tr><th>{_e(device)}</th>{''.join(tds)}</tr>")
    return (f"<table class=\"heatmap\" data-model=\"{_e(model)}\" data-batch=\"{batch}\">{head}{''.join(body)}</table>")


def _fleet_section(history: pd.DataFrame, max_drop, noise: float, declared) -> str:
    """The index's view across devices: per model, a device-by-mode heatmap and the mode for the fleet."""
    from harness.fleet.recommend import heatmap_cells, recommend_fleet

    recs = recommend(history, max_drop, noise, declared)
    fleet = {(f.model, f.batch_size): f for f in recommend_fleet(recs)}
    parts = ["<h2 id=\"fleet\">Across devices</h2><p class=\"meta\">Colour: speedup vs each device's own fp32 "
             "(green faster, red slower, white 1x); text: accuracy points vs that fp32 (* over the budget). The newest "
             "result of each mode; the fastest recipe where a mode has several.</p>"]
    for (model, batch), cells in heatmap_cells(history).items():
        devices = sorted(set(cells["target"]))
        if len(devices) < 2:
            continue
        parts.append(f"<h3>{_e(model)}, batch {batch}</h3>" + _heatmap(model, batch, cells, devices))
        rec = fleet.get((model, batch))
        if rec is not None:
            cls = "rec" if rec.choice else "rec none"
            items = "".join(f"<li>{_e(line)}</li>" for line in rec.evidence())
            parts.append(f"<div class=\"{cls}\" data-fleet-model=\"{_e(model)}\" data-recommended=\"{_e(rec.answer)}\">"
                         f"<b>For the fleet ({_e(', '.join(rec.devices))}) within {rec.max_drop:g} accuracy points"
                         f"{_e(limits_suffix(rec.limits))}: "
                         f"{_e(rec.answer)}{' (' + _e(rec.kind) + ')' if rec.choice else ''}</b><ul>{items}</ul></div>")
    return "".join(parts)


def _sensitivity_section(rows: pd.DataFrame, img: Path, name: str, out: Path) -> str:
    """The per-layer sensitivity of the newest keep_float="auto" `mixed` rows, aligned by layer
    across frameworks, and what each search kept float ('' when the model has none)."""
    from harness.sensitivity import report

    if "sensitivity" not in rows.columns:
        return ""
    found = [(r, report.parse(r["sensitivity"])) for r in rows.to_dict("records")]
    found = [(r, entry) for r, entry in found if entry]
    if not found:
        return ""
    entries = [entry for _, entry in found]
    png = report.figure(entries, f"{rows.iloc[0]['model']}: metric loss with only this layer int8 ({entries[0]['split']} split)",
                        img / f"sensitivity-{name}.png")
    table = _table(["framework", "kept float (keep_float=\"auto\")", "search", "evaluations", "minutes"],
                   [[_e(report.label(entry)), _e(r.get("kept_float")) or "none", _e(r.get("keep_float_search")),
                     formatted(r.get("search_evaluations"), ".0f"), formatted(r.get("search_minutes"), ".1f")]
                    for r, entry in found], numeric={3, 4})
    return (f"<h3>Layer sensitivity</h3><figure data-sensitivity=\"{len(entries)}\"><img src=\"{png.relative_to(out).as_posix()}\" "
            f"alt=\"per-layer sensitivity of {_e(rows.iloc[0]['model'])}\"><figcaption>Top: the metric's loss on the "
            f"{_e(entries[0]['split'])} split with only that layer in int8, per framework. Bottom: the metric against the "
            f"number of layers each search kept float, dashed: fp32 less the budget.</figcaption></figure>{table}")


def _labels(rows: list[dict]) -> list[str]:
    """'framework mode', with the recipe where two rows share both."""
    plain = [f"{r['framework']} {r['mode']}" for r in rows]
    return [p if plain.count(p) == 1 else f"{p} ({str(r.get('recipe') or '')[:24]})" for p, r in zip(plain, rows)]


def _evidence_section(db, rows: pd.DataFrame, rec: Recommendation, img: Path, name: str, out: Path) -> str:
    """What the answer rests on, drawn from what is stored: each case's latencies per round
    (a process at the slow level stands apart), the power trace of each timed window, and the
    candidates with their intervals."""
    ok = [r for r in rows.to_dict("records") if r.get("status") == "ok" and number(r.get("result_pk")) is not None]
    ok.sort(key=lambda r: (r["framework"], r["mode"] != "fp32", r["mode"], str(r.get("recipe"))))
    if not ok:
        return ""
    labels = dict(zip((r["case_id"] for r in ok), _labels(ok)))
    arrays = db.latency_arrays([int(r["result_pk"]) for r in ok])
    cases = [(labels[r["case_id"]], evidence_svg.split_rounds(arrays[int(r["result_pk"])], r.get("round_n_runs")))
             for r in ok if int(r["result_pk"]) in arrays]
    parts = ["<h3>Evidence</h3>"]
    if cases:
        svg, apart = evidence_svg.latency_rounds(cases, f"{rec.model}, batch {rec.batch_size}: latencies per round",
                                                 img / f"rounds-{name}.svg")
        rounds = sum(len(r) for _, r in cases)
        parts.append(f"<figure data-evidence=\"latency-rounds\" data-cases=\"{len(cases)}\" data-rounds=\"{rounds}\" "
                     f"data-apart=\"{len(apart)}\"><img src=\"{svg.relative_to(out).as_posix()}\" alt=\"latency "
                     f"distribution per round of each case\"><figcaption>Each case's latencies in each round (one runner "
                     f"process per round), newest run. "
                     + (f"Rounds apart from their case (another speed level): {_e('; '.join(apart))}." if apart else
                        "No round stands apart from its case.") + "</figcaption></figure>")
    traces = db.power(run_id=sorted({r["run_id"] for r in ok}))
    for r in ok:
        trace = traces[(traces["run_id"] == r["run_id"]) & (traces["case_id"] == r["case_id"])]
        if not len(trace):
            continue
        svg = evidence_svg.power_trace(list(zip(trace["t_s"], trace["power_w"])), number(r.get("idle_power_w")),
                                       f"{r['case_id']}: power over its timed window", img / f"power-{slug(r['case_id'])}.svg")
        parts.append(f"<figure data-evidence=\"power-trace\" data-case=\"{_e(r['case_id'])}\" data-samples=\"{len(trace)}\">"
                     f"<img src=\"{svg.relative_to(out).as_posix()}\" alt=\"power trace of {_e(r['case_id'])}\">"
                     f"<figcaption>{_e(labels[r['case_id']])}: {len(trace)} power samples over the timed window "
                     f"({_e(r.get('power_source'))}), the idle power read before it dashed.</figcaption></figure>")
    eligible = [c for c in rec.candidates if c.eligible]
    if eligible:
        chosen = (rec.choice.row.get("case_id"), rec.choice.row.get("run_id")) if rec.choice else None
        entries = [evidence_svg.candidate_entry(c.row, f"{c.row['framework']} {c.row['mode']}",
                                                (c.row.get("case_id"), c.row.get("run_id")) == chosen) for c in eligible]
        svg = evidence_svg.candidates(entries, f"{rec.model}, batch {rec.batch_size}: the answer's candidates",
                                      img / f"candidates-{name}.svg")
        parts.append(f"<figure data-evidence=\"candidates\" data-candidates=\"{len(entries)}\"><img "
                     f"src=\"{svg.relative_to(out).as_posix()}\" alt=\"the answer's candidates with their intervals\">"
                     f"<figcaption>The modes the candidate rule let through, fastest first: speedup vs fp32 with its "
                     f"interval over paired rounds at its stated level, accuracy with its 95% interval; green: the "
                     f"answer.</figcaption></figure>")
    return "".join(parts)


def _target_page(db, target: str, out: Path, max_drop, gates: Gates) -> tuple[str, list[tuple[Recommendation, str]], dict]:
    history = db.results(target=target)
    runs = db.runs(target=target)  # runs across devices included
    verdicts = db.comparisons(run_id=list(runs["run_id"])) if len(runs) else pd.DataFrame()
    if len(verdicts):  # a run across devices judged every target's cases: keep this target's
        verdicts = verdicts[verdicts["case_id"].isin(set(history["case_id"]))]
    recs = recommend(history, max_drop, gates.noise, db.declared_limits(history))  # Suite(limits=...) as the answer
    thumbs = []  # (recommendation, its Pareto plot) for the index
    latest = current_rows(history)
    latest_run = runs.iloc[0]
    newest = history.iloc[-1]  # the device as its newest row describes it (a run may span devices)
    ok = history[(history["status"] == "ok") & history["latency_p50_ms"].notna()]
    keys = pd.Series([case_key(r) for r in ok[list(KEY)].to_dict("records")], index=ok.index, dtype=object)
    measured = {key: ok.loc[index] for key, index in keys.groupby(keys, sort=False).groups.items()}  # key -> its runs
    img = out / "img" / slug(target)
    body = [f"<p><a href=\"index.html\">&larr; all targets</a></p><h1>Target {_e(target)}</h1>",
            f"<p class=\"meta\">kind {_e(newest['target_kind'])}, profile {_e(newest['profile'])}, "
            + (f"pool of {_e(', '.join(sorted(set(history['board'].dropna()))))}, " if _pooled(history) else "")
            + f"device {_e(newest['device'])}, host {_e(newest['host'])}; {len(runs)} run(s), latest "
            f"{_e(latest_run['run_id'])} at {_e(latest_run['started_at'])} UTC</p>"]
    body.append("<h2>Latest run against its baseline</h2>" + _verdicts_section(verdicts, latest_run["run_id"]))
    for rec in recs:
        rows = latest[(latest["model"] == rec.model) & (latest["batch_size"] == rec.batch_size)]
        name = f"{slug(rec.model)}-b{rec.batch_size}"
        pareto = plots.pareto(rows, rec, img / f"pareto-{name}.png")
        thumbs.append((rec, pareto.relative_to(out).as_posix()))
        bar = plots.bars(rows, f"{rec.model}, batch {rec.batch_size} on {target}: newest result of each case",
                         img / f"bars-{name}.png")
        body += [f"<h2 id=\"{_e(name)}\">{_e(rec.model)}, batch {rec.batch_size}</h2>", _rec_block(rec),
                 f"<figure><img src=\"{pareto.relative_to(out).as_posix()}\" alt=\"Pareto plot: accuracy vs p50 latency of "
                 f"{_e(rec.model)} on {_e(target)}\"><figcaption>Accuracy vs p50 latency, newest result of each "
                 f"(framework, mode); the green ring is the recommendation, dotted lines the accuracy budget of each "
                 f"framework's fp32.</figcaption></figure>",
                 f"<figure><img src=\"{bar.relative_to(out).as_posix()}\" alt=\"size, memory and energy of "
                 f"{_e(rec.model)} on {_e(target)}\"></figure>",
                 "<h3>Newest result of each case</h3>", _latest_table(rows), _evidence_section(db, rows, rec, img, name, out),
                 _sensitivity_section(rows, img, name, out),
                 "<h3>Trends</h3>", "<div class=\"grid\">"]
        gate_bad = verdicts[(verdicts["verdict"] == REGRESSION) & (verdicts["quantity"] == "latency_p50_ms")] \
            if len(verdicts) else pd.DataFrame(columns=["case_id", "run_id"])
        for key_row in rows.to_dict("records"):
            series = measured.get(case_key(key_row))
            if series is None or series.empty:
                continue
            threshold = gates.latency
            steps = detect_steps(series["latency_p50_ms"].astype(float).to_numpy(), threshold)
            flagged = list(gate_bad.loc[gate_bad["case_id"] == key_row["case_id"], "run_id"])
            png = trend_svg.trend(series, steps, flagged, threshold, f"{key_row['case_id']}: p50 over {len(series)} run(s)",
                                  img / f"trend-{slug(key_row['case_id'])}.svg", noise=gates.noise)
            marks = ", ".join(f"{s.kind} {s.change:+.0%} at run {series.iloc[s.index]['run_id']}" for s in steps)
            body.append(f"<figure data-case=\"{_e(key_row['case_id'])}\" data-steps=\"{len(steps)}\">"
                        f"<img src=\"{png.relative_to(out).as_posix()}\" alt=\"p50 trend of {_e(key_row['case_id'])}\">"
                        f"<figcaption>{_e(key_row['case_id'])}: {_e(marks) if marks else 'no step in the history'}"
                        f"{'; gate regressions: ' + _e(', '.join(flagged)) if flagged else ''}</figcaption></figure>")
        body.append("</div>")
    page = f"target-{slug(target)}.html"
    (out / page).write_text(_page(f"quantbench: {target}", "\n".join(body)))
    info = {"page": page, "runs": len(runs), "latest": latest_run["run_id"], "started": latest_run["started_at"],
            "device": newest["device"], "kind": newest["target_kind"], "profile": newest["profile"]}
    return page, thumbs, info


def build(db, out_dir: Path, max_drop: Union[Limits, float] = DEFAULT_MAX_DROP, gates: Gates = Gates()) -> Path:
    """Render the site into out_dir; returns the index page. `max_drop`: the command line's limits
    (harness.limits.Limits, or an accuracy budget in points), over each suite's declared ones."""
    from harness.history.db import display_url

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_runs = db.runs()
    targets = db.targets()
    sections = []
    for target in targets:
        page, recs, info = _target_page(db, target, out, max_drop, gates)
        rows = [[_e(r.model), str(r.batch_size), f"<span data-recommended=\"{_e(r.answer)}\">{_e(r.answer)}</span>",
                 _e(r.headline()),  # the line a run prints at its end
                 f"<a href=\"{page}#{_e(slug(r.model))}-b{r.batch_size}\"><img class=\"thumb\" src=\"{png}\" "
                 f"alt=\"accuracy vs latency of {_e(r.model)} on {_e(target)}\"></a>"] for r, png in recs]
        sections.append(f"<h2><a href=\"{page}\">{_e(target)}</a></h2><p class=\"meta\">{_e(info['kind'])} / "
                        f"{_e(info['profile'])} / {_e(info['device'])}; {info['runs']} run(s), latest "
                        f"{_e(info['latest'])} at {_e(info['started'])} UTC</p>"
                        + _table(["model", "batch", f"recommended (budget {as_limits(max_drop).accuracy_drop:g} pts)",
                                  "the answer", "trade-off"], rows))
    if len(targets) > 1:
        history = db.results(target=targets)
        sections.insert(0, _fleet_section(history, max_drop, gates.noise, db.declared_limits(history)))
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = (f"<h1>quantbench dashboard</h1><p class=\"meta\">{len(all_runs)} run(s) from {_e(display_url(db.url))}, "
            f"generated {generated}. Each target page shows the accuracy/latency trade-off, the recommended mode, "
            f"size/memory/energy and the history of every case.</p>"
            + ("".join(sections) if sections else "<p>The results database holds no runs yet.</p>"))
    index = out / "index.html"
    index.write_text(_page("quantbench dashboard", body))
    return index
