"""`quantbench sensitivity SUITE_FILE [-k EXPR] [--target NAME]`: each framework's per-layer
sensitivity for the models of a suite file, worst first, as text, Parquet/CSV and one picture;
with the suite's `mixed` budget, the float-layer search too.

Everything runs on the host (what the `mixed` recipes of keep_float="auto" run); the target
decides which recipes apply (PT2E x86 or arm, no tflite on a cuda target). Results are cached,
so a suite whose auto `mixed` cases ran already prints at once.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any, Optional

from harness import settings


def add_sensitivity(sub) -> None:
    p = sub.add_parser("sensitivity", help="per-layer sensitivity (and the float-layer search) of a suite file's models")
    p.add_argument("suite_file", help="a suite file (test_*.py declaring Suite objects)")
    p.add_argument("-k", dest="keyword", default=None,
                   help="pytest-style expression on case ids, e.g. 'onnxruntime or tflite' (only mixed cases are used)")
    p.add_argument("--target", default="local", help="target from the inventory whose applicable recipes are used")
    p.add_argument("--inventory", default=None, help="inventory file (default: $QUANTBENCH_INVENTORY or ./targets.toml)")
    p.add_argument("--out", default=None, help="output folder (default: <results-dir>/sensitivity/<suite file>-<time>/)")
    p.add_argument("--cache-dir", default=None, help="artifact cache (default: $QUANTBENCH_CACHE or .cache/quantbench)")


def _suites(path: Path) -> list:
    from harness.suite import Suite

    if not path.is_file():
        raise FileNotFoundError(f"suite file {path} does not exist")
    sys.path.insert(0, str(path.parent.resolve()))  # a suite may import modules beside it
    spec = importlib.util.spec_from_file_location(f"quantbench_suite_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    suites = [value for value in vars(module).values() if isinstance(value, Suite)]
    if not suites:
        raise ValueError(f"{path} declares no Suite")
    return suites


def _matches(expression: Optional[str], case_id: str) -> bool:
    if not expression:
        return True
    from _pytest.mark.expression import Expression

    return Expression.compile(expression).evaluate(lambda name, **kwargs: name.lower() in case_id.lower())


def selected(suites: list, expression: Optional[str]) -> list[tuple[Any, Any, Optional[float]]]:
    """(suite, mixed case, budget) per (model, recipe), the first suite declaring it winning; a
    suite's mixed budget is the search's."""
    chosen, seen = [], set()
    for suite in suites:
        for case in suite.cases():
            if case.mode != "mixed" or case.recipe is None or not _matches(expression, case.case_id):
                continue
            key = (case.model.name, case.recipe.name)
            if key not in seen:
                seen.add(key)
                chosen.append((suite, case, suite.budgets.get("mixed")))
    return chosen


def cmd_sensitivity(args: argparse.Namespace, rest: list[str]) -> int:
    from harness.artifacts import ArtifactCache
    from harness.data import resolve_data
    from harness.mixed_columns import compact_sensitivity
    from harness.quantize.base import BuildContext, NotApplicable
    from harness.sensitivity import choose_float_layers, sensitivity_table
    from harness.sensitivity import report
    from targets import load_inventory, open_target

    path = Path(args.suite_file)
    cases = selected(_suites(path), args.keyword)
    if not cases:
        print(f"quantbench sensitivity: no mixed case of {path} matches"
              f"{' -k ' + repr(args.keyword) if args.keyword else ''}", file=sys.stderr)
        return 2
    cache_dir = settings.cache_dir(args.cache_dir)
    inventory = load_inventory(args.inventory)
    if args.target not in inventory:
        print(f"quantbench sensitivity: unknown target {args.target!r}; known targets: {', '.join(sorted(inventory))}",
              file=sys.stderr)
        return 2
    target = open_target(inventory[args.target], cache_dir)
    try:
        info = target.info()
    finally:
        target.close()
    out = Path(args.out or settings.results_dir() / "sensitivity" / f"{path.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    datasets: dict[str, Any] = {}
    entries: dict[str, list[dict]] = {}
    failures = 0
    for suite, case, budget in cases:
        reason = case.recipe.not_applicable_reason(case.model, info)
        if reason:
            print(f"{case.case_id}: n/a on {info.name}: {reason}")
            continue
        model = case.model
        if model.name not in datasets:
            datasets[model.name] = resolve_data(model.data)
        ctx = BuildContext(model, datasets[model.name], ArtifactCache(cache_dir / "artifacts"), cache_dir / "models",
                           progress=lambda message, c=case: print(f"[{c.case_id}] {message}", flush=True),
                           kept_precision=case.kept_precision)
        started = time.perf_counter()
        try:
            found = (choose_float_layers(ctx, case.recipe, budget) if budget is not None
                     else sensitivity_table(ctx, case.recipe))
        except NotApplicable as exc:
            print(f"{case.case_id}: n/a: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - one recipe failing does not stop the others
            failures += 1
            print(f"{case.case_id}: FAILED: {type(exc).__name__}: {' '.join(str(exc).split())[:400]}")
            continue
        entry = report.parse(compact_sensitivity(found.notes()["kept_float_search"]))
        entry["model"] = model.name
        entries.setdefault(model.name, []).append(entry)
        print()
        print(report.text_table(entry))
        if found.result is not None:
            print(f"  -> {found.result.status}; kept float: {', '.join(found.result.kept) or 'none'}")
        print(f"  ({'computed' if found.computed else 'from the cache'} in {time.perf_counter() - started:.1f} s)")
    if not entries:
        return 1 if failures else 2
    out.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    layers = pd.concat([report.layers_frame(e, model) for model, e in entries.items()], ignore_index=True)
    steps = pd.concat([report.steps_frame(e, model) for model, e in entries.items()], ignore_index=True)
    for name, frame in (("sensitivity", layers), ("search", steps)):
        frame.to_parquet(out / f"{name}.parquet", index=False)
        frame.to_csv(out / f"{name}.csv", index=False)
    for model, model_entries in entries.items():
        picture = report.figure(model_entries, f"{model}: metric loss with only this layer int8 ({model_entries[0]['split']} split)",
                                out / f"sensitivity-{model}.png")
        print(f"picture: {picture}")
    print(f"tables: {out / 'sensitivity.parquet'} (also .csv), search trace: {out / 'search.parquet'} (also .csv)")
    return 1 if failures else 0


COMMANDS = {"sensitivity": (add_sensitivity, cmd_sensitivity)}
