"""Does keep_float="auto" keep as few layers float as the hand-picked set, within the budget, and no slower?

For one model (default minilm-s128: all-MiniLM-L6-v2, batch 1, 128 tokens; or digits), in one run
on the local CPU, per framework (onnxruntime QDQ, LiteRT from torch, torch PT2E; digits also
LiteRT from Keras):
  - fp32, `mixed` with the model's hand-picked sensitive_layers, and `mixed` with
    keep_float="auto" (the sensitivity search runs on the host while that artifact is built; the
    first time it is computed, then cached: `--fresh-search` recomputes it), all measured by
    quantbench as usual (accuracy on every evaluation sample);
  - then `--rounds` alternating (ABBA) latency-only measurements of the two mixed artifacts in
    fresh runner processes, so their p50 ratio is measured like with like, close in time.
Printed: kept layers, accuracy, budget verdict, search evaluations and minutes, p50 per round
and the median auto/named ratio. Figures depend on the machine: run it on a quiet one.

    .venv/bin/python benchmarks/mixed_auto.py [--model minilm-s128|digits] [--rounds 4] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from harness import settings
from harness.artifacts import load_artifact
from harness.runner import system
from harness.session import BenchSession, SessionOptions
from harness.suite import Suite, Timing
from targets import RunnerJob, TargetConfig

BUDGET_PTS = {"minilm-s128": 1.0, "digits": 0.5}  # the suites' mixed budgets (suites/test_minilm.py, test_digits.py)


def _model(name: str):
    from harness.models import digits_cnn, minilm_l6_s128

    return {"minilm-s128": minilm_l6_s128, "digits": digits_cnn}[name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(BUDGET_PTS), default="minilm-s128")
    parser.add_argument("--frameworks", default="onnxruntime,tflite,torch")
    parser.add_argument("--rounds", type=int, default=4, help="alternating latency-only rounds of the two mixed artifacts")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=settings.cache_dir())
    parser.add_argument("--fresh-search", action="store_true",
                        help="delete this model's cached searches and auto artifacts first, so the search runs (and is timed)")
    args = parser.parse_args()

    spec = _model(args.model)
    budget = BUDGET_PTS[args.model]
    frameworks = tuple(args.frameworks.split(","))
    if args.fresh_search:  # the search's minutes are only measured when it runs
        import json
        import shutil

        removed = 0
        for path in (args.cache_dir / "sensitivity").glob("*.json"):
            if json.loads(path.read_text()).get("key_parts", {}).get("model") == spec.name:
                path.unlink()
                removed += 1
        for manifest in (args.cache_dir / "artifacts").glob("*/manifest.json"):
            parts = json.loads(manifest.read_text()).get("key_parts", {})
            if parts.get("model") == spec.name and parts.get("keep_float") == ["auto"]:
                shutil.rmtree(manifest.parent)
                removed += 1
        print(f"removed {removed} cached searches and auto artifacts of {spec.name}")
    timing = Timing(warmup_runs=20, warmup_s=0.5, min_runs=50, min_duration_s=args.seconds, max_duration_s=args.seconds * 4)
    named = Suite(name="mixed-named", model=spec, frameworks=frameworks, modes=("mixed",), budgets={"mixed": budget},
                  timing=timing)
    auto = Suite(name="mixed-auto", model=spec, frameworks=frameworks, modes=("mixed",), keep_float="auto",
                 budgets={"mixed": budget}, timing=timing)
    work = Path(tempfile.mkdtemp(prefix="qb-mixed-auto-"))
    options = SessionOptions(results_dir=work / "results", cache_dir=args.cache_dir, threads=args.threads, run_id="mixed-auto")
    session = BenchSession(TargetConfig(name="local", kind="local"), options)
    print(f"{spec.name}: hand-picked vs keep_float='auto' mixed, budget {budget:g} points, {args.threads} threads, "
          f"CPU {system.cpu_model()} ({system.physical_cores()} cores); results in {work / 'results'}", flush=True)
    pairs = []
    try:
        by_recipe = {}
        for case in [c for c in named.cases() if c.mode == "mixed"] + [c for c in auto.cases() if c.mode == "mixed"]:
            if case.recipe is None or case.recipe.not_applicable_reason(case.model, session.target_info):
                continue
            started = time.perf_counter()
            row = session.run_case(case)
            print(f"  {case.case_id}: {row['status']} in {time.perf_counter() - started:.0f} s "
                  f"{row['reason'] or ''}", flush=True)
            by_recipe.setdefault(case.recipe.name, {})["auto" if case.searches_float_layers else "named"] = (case, row)
        pairs = [(v["named"], v["auto"]) for v in by_recipe.values() if "named" in v and "auto" in v]
        latency = {case.case_id: [] for pair in pairs for case, _ in pair}
        for r in range(args.rounds):
            for (n_case, n_row), (a_case, a_row) in pairs:
                order = [(n_case, n_row), (a_case, a_row)] if r % 2 == 0 else [(a_case, a_row), (n_case, n_row)]
                for case, row in order:
                    if row["status"] != "ok":
                        continue
                    artifact = load_artifact(args.cache_dir / "artifacts" / row["artifact_key"])
                    config = session.runner_config(case, artifact, session.options.timing(case.timing), evaluate=False)
                    job = RunnerJob(case.case_id, artifact.path, artifact.manifest["file"], artifact.manifest,
                                    session.models.inputs_file(case), config, work / "rounds" / f"{case.case_id}-{r}")
                    outcome = session.target.run(job, session.progress)
                    if outcome.result.get("status") == "ok":
                        latency[case.case_id].append(statistics.median(outcome.result["latencies_ms"]))
            print(f"round {r + 1}: " + "  ".join(f"{cid.split(spec.name + '-')[1]} {v[-1]:.3f}" for cid, v in latency.items() if v)
                  + " ms", flush=True)
    finally:
        session.close()

    print(f"\n{'framework':<26}{'which':<7}{'float':>6} {'accuracy':>9} {'budget':>7} {'p50 ms':>8} {'rounds p50':>11}  "
          f"{'evals':>5} {'search min':>10}  kept float")
    for (n_case, n_row), (a_case, a_row) in pairs:
        label = n_case.case_id.split(spec.name + "-")[1].replace("-mixed", "").replace("-b1", "")
        for which, case, row in (("named", n_case, n_row), ("auto", a_case, a_row)):
            rounds = latency.get(case.case_id) or []
            p50 = f"{statistics.median(rounds):.3f}" if rounds else "-"
            verdict = {True: "within", False: "OVER", None: "-"}.get(row.get("within_budget"))
            evals = row.get("search_evaluations")
            minutes = row.get("search_minutes")
            print(f"{label:<26}{which:<7}{row.get('kept_float_count') or 0:>6} {row.get('accuracy') or float('nan'):>9.4f} "
                  f"{verdict:>7} {row.get('latency_p50_ms') or float('nan'):>8.3f} {p50:>11}  "
                  f"{'-' if evals is None else int(evals):>5} {'-' if minutes is None else f'{minutes:.1f}':>10}  "
                  f"{row.get('kept_float') or '-'}")
        a, n = latency.get(a_case.case_id) or [], latency.get(n_case.case_id) or []
        if a and n:
            ratios = [x / y for x, y in zip(a, n)]
            print(f"{'':<26}auto/named p50 per round: {', '.join(f'{x:.3f}' for x in ratios)}; median "
                  f"{statistics.median(ratios):.3f} ({'no worse' if statistics.median(ratios) <= 1.05 else 'SLOWER'} "
                  f"within 5%)")
        if a_row.get("keep_float_search"):
            print(f"{'':<26}search: {a_row['keep_float_search']}")


if __name__ == "__main__":
    main()
