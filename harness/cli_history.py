"""`quantbench history | dashboard | recommend | export`: the results database from the shell.
Registered in harness.cli.COMMANDS."""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Callable

from harness import settings


def _db_options(p: argparse.ArgumentParser, sub: bool = False) -> None:
    default = argparse.SUPPRESS if sub else None  # a sub-action does not reset what its parent parsed
    p.add_argument("--results-db", default=default,
                   help="SQLite path or postgresql://... (default: $QUANTBENCH_RESULTS_DB, else <results-dir>/history.sqlite)")
    p.add_argument("--results-dir", default=argparse.SUPPRESS if sub else None,
                   help=f"where results/<run-id>/ live (default: ${settings.RESULTS_ENV} or ./results)")


def _results_dir(args: argparse.Namespace) -> Path:
    return settings.results_dir(args.results_dir)


def _open(args: argparse.Namespace):
    from harness.history.db import HistoryDB

    return HistoryDB.open(args.results_db, _results_dir(args))


def _user_errors(handler: Callable[[argparse.Namespace, list[str]], int]):
    """HistoryError and missing runs become one line on stderr and exit status 2."""
    @functools.wraps(handler)
    def run(args: argparse.Namespace, rest: list[str]) -> int:
        from harness.history.db import HistoryError

        try:
            return handler(args, rest)
        except (HistoryError, FileNotFoundError) as exc:
            print(f"quantbench {args.command}: {exc}", file=sys.stderr)
            return 2
    return run


# -- history ---------------------------------------------------------------------------------
def add_history(sub) -> None:
    p = sub.add_parser("history", help="list past runs in the results database (or import/tag/show one)")
    _db_options(p)
    p.add_argument("--target", default=None, help="only runs on this target")
    p.add_argument("--tag", default=None, help="only runs with this tag")
    p.add_argument("--limit", type=int, default=20, help="newest N runs (default 20; 0 = all)")
    actions = p.add_subparsers(dest="action")
    imp = actions.add_parser("import", help="add results/<run-id>/ directories to the database (replaces a run id already there)")
    imp.add_argument("runs", nargs="+", help="run directories or run ids under --results-dir")
    imp.add_argument("--tag", dest="import_tags", action="append", default=[], help="label the imported runs (repeatable)")
    _db_options(imp, sub=True)
    tag = actions.add_parser("tag", help="add tags to a run already in the database")
    tag.add_argument("run_id")
    tag.add_argument("tags", nargs="+")
    _db_options(tag, sub=True)
    show = actions.add_parser("show", help="a run's comparison table and its verdicts against its baseline")
    show.add_argument("run_id")
    _db_options(show, sub=True)


@_user_errors
def cmd_history(args: argparse.Namespace, rest: list[str]) -> int:
    import pandas as pd

    db = _open(args)
    if args.action == "import":
        from harness.store import resolve_run

        for ref in args.runs:
            run_dir = resolve_run(ref, _results_dir(args))
            run_id = db.append_run_dir(run_dir, args.import_tags)
            print(f"imported {run_id} from {run_dir}")
        return 0
    if args.action == "tag":
        db.add_tags(args.run_id, args.tags)
        print(f"{args.run_id}: tags {', '.join(db.runs(run_id=args.run_id).iloc[0]['tags'].split(','))}")
        return 0
    if args.action == "show":
        from harness.history.regress import verdict_table
        from harness.report import comparison_table

        rows = db.results(run_id=args.run_id)
        if rows.empty:
            db.manifest(args.run_id)  # raises the "no run" error
        print(f"run {args.run_id}")
        print(comparison_table(rows))
        verdicts = db.comparisons(run_id=args.run_id)
        if len(verdicts):
            table = verdict_table(verdicts)
            print(table or "no regressions or improvements against its baseline")
        return 0
    runs = db.runs(target=args.target, tag=args.tag, limit=args.limit or None)
    if runs.empty:
        print(f"no runs in {db!r}" + (f" for target {args.target}" if args.target else "") + (f" tagged {args.tag}" if args.tag else ""))
        return 0
    shown = pd.DataFrame({
        "run_id": runs["run_id"], "started_at": runs["started_at"].astype(str), "target": runs["target"],
        "tags": runs["tags"].replace("", "-"), "suites": runs["suites"], "ok": runs["n_ok"], "error": runs["n_error"],
        "n/a": runs["n_na"],
        "command": [" ".join(json.loads(c))[:60] if c else "" for c in runs["command"]],
    })
    print(shown.to_string(index=False))
    print(f"({len(runs)} run(s) from {db!r}; `quantbench history show RUN` for one run)")
    return 0


# -- dashboard -------------------------------------------------------------------------------
def add_dashboard(sub) -> None:
    p = sub.add_parser("dashboard", help="render the static dashboard (HTML + PNG) from the results database")
    _db_options(p)
    p.add_argument("--out", default=None, help="output folder (default: <results-dir>/dashboard)")
    p.add_argument("--max-accuracy-drop", type=float, default=None,
                   help="accuracy budget in points for the recommendation (default: the suite's Limits, else 1.0)")
    add_limit_options(p)
    p.add_argument("--latency-threshold", type=float, default=None, help="relative step that counts in trends (default 0.10)")
    p.add_argument("--noise-threshold", type=float, default=None,
                   help="IQR/median at which a case's timing counts as noisy (default 0.10, as the gates)")


@_user_errors
def cmd_dashboard(args: argparse.Namespace, rest: list[str]) -> int:
    from harness.history.dashboard import build
    from harness.history.gates import Gates

    try:
        limits = limits_from_args(args, "dashboard")
    except LimitsError as exc:
        print(exc, file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else _results_dir(args) / "dashboard"
    gates = Gates().override({"latency": args.latency_threshold, "noise": args.noise_threshold})
    index = build(_open(args), out, limits, gates)
    print(f"dashboard: {index} (open it in a browser; it needs no network)")
    return 0


# -- recommend ------------------------------------------------------------------------------
def add_recommend(sub) -> None:
    p = sub.add_parser("recommend", help="per model, the fastest (framework, mode) within the accuracy budget on each "
                                          "device, and for the fleet of them")
    _db_options(p)
    p.add_argument("--target", default=None,
                   help="a target (or pool), or several separated by commas (default: every target with results); "
                        "with several, also the mode for the whole fleet")
    p.add_argument("--max-accuracy-drop", type=float, default=None,
                   help="accuracy budget vs fp32 in points (default: the suite's Limits, else 1.0)")
    add_limit_options(p)
    p.add_argument("--noise-threshold", type=float, default=None,
                   help="IQR/median at which a candidate's timing is flagged noisy (default 0.10, as the gates)")
    p.add_argument("--json", action="store_true", help="print the answer as one JSON document (its fields: README)")


def add_limit_options(p: argparse.ArgumentParser) -> None:
    """--max-p99-ms, --max-memory-mb, --max-size-mb, --max-size-ratio, --max-energy-mj, --objective
    (harness/limits.py): over each suite's Suite(limits=...)."""
    from harness.limits import FLAGS, OBJECTIVES

    for name, (flag, kind, text) in FLAGS.items():
        p.add_argument(flag, dest=name, type=kind, default=None, help=text,
                       **({"choices": list(OBJECTIVES)} if name == "objective" else {}))


def limits_from_args(args: argparse.Namespace, command: str):
    """The command line's Limits; a bad one is one line on stderr (LimitsError)."""
    from harness.limits import from_options

    from harness.limits import FLAGS

    limits = from_options(vars(args))
    problem = limits.validate()
    if problem:
        for name, (flag, _, _) in {**FLAGS, "max_accuracy_drop": ("--max-accuracy-drop", None, "")}.items():
            problem = problem.replace(f"limit {name} ", f"{flag} ").replace(f"{name} ", f"{flag} ")
        raise LimitsError(f"quantbench {command}: {problem}")
    return limits


class LimitsError(ValueError):
    pass


@_user_errors
def cmd_recommend(args: argparse.Namespace, rest: list[str]) -> int:
    from harness.fleet.recommend import format_fleet, recommend_fleet
    from harness.history.gates import Gates
    from harness.history.recommend import format_recommendations, recommend

    try:
        flags = limits_from_args(args, "recommend")
    except LimitsError as exc:
        print(exc, file=sys.stderr)
        return 2
    db = _open(args)
    known = db.targets()
    wanted = [t.strip().removeprefix("pool:") for t in args.target.split(",")] if args.target else known
    missing = [t for t in wanted if t not in known]
    if missing or not wanted:
        print(f"quantbench recommend: no results for target {', '.join(map(repr, missing)) or '(any)'} in {db!r} "
              f"(targets with results: {', '.join(known) or 'none'})", file=sys.stderr)
        return 2
    rows = db.results(target=wanted)
    recs = recommend(rows, flags, Gates().override({"noise": args.noise_threshold}).noise, db.declared_limits(rows))
    fleet = recommend_fleet(recs)
    if args.json:
        from harness.history.answer_json import document

        print(json.dumps(document(recs, fleet, flags, {"results_db": repr(db), "targets": wanted}), indent=1))
        return 0
    print(format_recommendations(recs))
    if fleet:
        print()
        print(format_fleet(fleet))
    return 0


# -- export --------------------------------------------------------------------------------
def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a run in another tool's format (pytest-benchmark JSON)")
    _db_options(p)
    p.add_argument("run", nargs="?", default="latest", help="run id, run directory or 'latest' (default)")
    p.add_argument("--format", default="pytest-benchmark", choices=["pytest-benchmark"], help="output format")
    where = p.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", default=None, help="output file (default: <run dir or .>/pytest-benchmark.json)")
    where.add_argument("--storage", default=None,
                       help="a pytest-benchmark storage folder (e.g. .benchmarks): writes <machine id>/NNNN_<run id>.json")
    p.add_argument("--no-data", action="store_true", help="leave the raw latencies out of stats.data")


@_user_errors
def cmd_export(args: argparse.Namespace, rest: list[str]) -> int:
    from harness.history.db import HistoryError, resolve_url
    from harness.history.export import load_run, next_storage_path, to_pytest_benchmark

    db = None
    if resolve_url(args.results_db, _results_dir(args)) is not None:
        try:
            db = _open(args)
        except HistoryError as exc:  # the run directory may still be there
            print(f"quantbench export: {exc}; reading results/ instead", file=sys.stderr)
    manifest, rows, lat, tags = load_run(args.run, db, _results_dir(args))
    document = to_pytest_benchmark(manifest, rows, lat, tags, include_data=not args.no_data)
    if not document["benchmarks"]:
        print(f"quantbench export: run {manifest['run_id']} has no measured (ok) cases to export", file=sys.stderr)
        return 2
    if args.storage:
        path = next_storage_path(Path(args.storage), manifest, manifest["run_id"])
    elif args.output:
        path = Path(args.output)
    else:
        run_dir = _results_dir(args) / manifest["run_id"]
        path = (run_dir if run_dir.is_dir() else Path.cwd()) / "pytest-benchmark.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))
    print(f"wrote {len(document['benchmarks'])} benchmark(s) of run {manifest['run_id']} to {path} "
          f"(compare with: pytest-benchmark compare {path} ...)")
    return 0


COMMANDS = {
    "history": (add_history, cmd_history),
    "dashboard": (add_dashboard, cmd_dashboard),
    "recommend": (add_recommend, cmd_recommend),
    "export": (add_export, cmd_export),
}
