"""The `quantbench` command. Each subcommand lives in a small function; COMMANDS is the registry."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from harness import cli_history, cli_sensitivity, cli_targets, pytest_options, settings


def version() -> str:
    """The installed package's version (pyproject.toml's, through the package metadata)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("quantbench")
    except PackageNotFoundError:  # a checkout on PYTHONPATH, never installed
        return "unknown (not installed)"


def _suites_dir() -> Path:
    return settings.base_dir() / "suites"


def _names_a_suite(arg: str) -> bool:
    """A pytest argument that selects suites: an existing .py file (or file::test), or a
    directory holding test_*.py files. Not an option's value such as `--results-dir DIR`."""
    if arg.startswith("-"):
        return False
    path = Path(arg.split("::", 1)[0])
    return (path.is_file() and path.suffix == ".py") or (path.is_dir() and any(path.glob("test_*.py")))


# pytest plugins that installed packages register and a benchmark run never uses (a test
# framework's, a config library's, labgrid's own test runner: quantbench drives labgrid through
# its client), kept out of `quantbench run`: importing them cost ~2.7 s of every run on the 2-vCPU
# build host. `pytest suites/` loads whatever is installed; `-p NAME` brings one back here.
UNUSED_PLUGINS = ("hypothesispytest", "hydra_pytest", "labgrid", "jaxtyping", "kgb", "anyio", "benchmark")


def unused_plugins_off(rest: list[str]) -> list[str]:
    """`-p no:NAME` for each of UNUSED_PLUGINS the arguments do not ask for with `-p NAME`."""
    asked = {rest[i + 1] for i, a in enumerate(rest[:-1]) if a == "-p"} | {a[2:] for a in rest if a.startswith("-p") and len(a) > 2}
    return [arg for name in UNUSED_PLUGINS if name not in asked for arg in ("-p", f"no:{name}")]


def cmd_run(args: argparse.Namespace, rest: list[str]) -> int:
    """A thin wrapper over `pytest suites/ --target=NAME`; suites/ is left out when the
    arguments name suite files or directories themselves."""
    import pytest

    where = [] if any(_names_a_suite(a) for a in rest) else [str(_suites_dir())]
    # The plugin is named too (it is found registered already where quantbench is installed):
    # the run works from a checkout that is not installed as well. Our own spellings of the
    # options (--profile, --results-dir, ...) go on to pytest in their new names, without a warning.
    argv = [*where, "-p", "harness.pytest_plugin", f"--target={args.target}", "-p", "no:cacheprovider",
            *unused_plugins_off(rest), *pytest_options.translate(rest)]
    if args.inventory:
        argv.append(f"--qb-inventory={args.inventory}")
    print("quantbench: pytest " + " ".join(argv), file=sys.stderr)
    return int(pytest.main(argv))


def cmd_report(args: argparse.Namespace, rest: list[str]) -> int:
    from harness.report import comparison_table
    from harness.store import Run, resolve_run

    try:
        flags = cli_history.limits_from_args(args, "report")
    except cli_history.LimitsError as exc:
        print(exc, file=sys.stderr)
        return 2
    run_dir = resolve_run(args.run, settings.results_dir(args.results_dir))
    run = Run(run_dir)
    if args.json:
        import json

        from harness.finish import FinishOptions, run_limits
        from harness.fleet.recommend import recommend_fleet
        from harness.history.answer_json import document
        from harness.history.recommend import recommend

        flags, declared = run_limits(run, FinishOptions(limits=flags))
        recs = recommend(run.rows, flags, suite_limits=declared)
        print(json.dumps(document(recs, recommend_fleet(recs), flags, {"run_id": run.run_id, "run_dir": str(run_dir)}),
                         indent=1))
        return 0
    print(f"run {run_dir.name} ({run_dir})")
    print(comparison_table(run.rows))
    return 0


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run suites (pytest suites/ --target=NAME); other arguments go to pytest")
    p.add_argument("--target", default="local", help="target name from the inventory (default: local)")
    p.add_argument("--inventory", "--qb-inventory", default=None,
                   help="inventory file (default: $QUANTBENCH_INVENTORY or ./targets.toml)")


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="print a stored run's comparison table")
    p.add_argument("run", nargs="?", default="latest", help="run id, run directory, or 'latest' (default)")
    p.add_argument("--results-dir", "--qb-results-dir", default=None,
                   help=f"where results/<run-id>/ live (default: ${settings.RESULTS_ENV} or ./results)")
    p.add_argument("--json", action="store_true",
                   help="print which mode to ship from this run's rows as JSON (as quantbench recommend --json)")
    p.add_argument("--max-accuracy-drop", type=float, default=None,
                   help="with --json: accuracy budget vs fp32 in points (default: the suite's Limits, else 1.0)")
    cli_history.add_limit_options(p)


# name -> (add the subparser, handler). A handler gets the parsed args and the unparsed rest.
COMMANDS: dict[str, tuple[Callable, Callable[[argparse.Namespace, list[str]], int]]] = {
    "run": (_add_run, cmd_run),
    "report": (_add_report, cmd_report),
    **cli_history.COMMANDS,  # history, dashboard, recommend, export (harness/cli_history.py)
    **cli_targets.COMMANDS,  # targets [list | check NAME | clean NAME] (harness/cli_targets.py)
    **cli_sensitivity.COMMANDS,  # sensitivity SUITE_FILE [-k EXPR] [--target NAME] (harness/cli_sensitivity.py)
}

PASSTHROUGH = {"run"}  # subcommands whose unknown arguments go on to pytest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quantbench", description="Which quantization mode should we ship on this device?")
    parser.add_argument("--version", action="version", version=f"quantbench {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in PASSTHROUGH:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return COMMANDS[args.command][1](args, rest)
    except FileNotFoundError as exc:
        print(f"quantbench {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
