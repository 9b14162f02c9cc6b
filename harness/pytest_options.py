"""The pytest plugin's command-line options that are spelled to live beside other plugins.

quantbench is a pytest11 entry point, so its options share one namespace with every plugin a
user has installed. `--target` keeps the design card's spelling; an option whose plain name
another common plugin takes (`--profile`: pytest-profiling, `--inventory`: pytest-ansible,
`--tag`: pytest-monitor) or plausibly would (--threads, --rounds, --baseline, --alpha, ...)
carries the `--qb-` prefix. The measurement and gate options (--min-runs, --case-budget,
--latency-threshold, ...) name quantbench's own ideas and keep their names.

The old spellings stay accepted for one release, with a deprecation warning naming the new one,
wherever the plugin is loaded as a plugin (the entry point or `-p harness.pytest_plugin`): they
are rewritten before pytest parses the command line, unless another installed plugin owns that
spelling (then it is that plugin's option, as it should be).
"""
from __future__ import annotations

from harness.limits import FLAGS as LIMIT_FLAGS

# old spelling -> new spelling (deprecated in 0.2, removed in the release after)
RENAMED = {
    "--profile": "--qb-profile",
    "--inventory": "--qb-inventory",
    "--results-dir": "--qb-results-dir",
    "--cache-dir": "--qb-cache-dir",
    "--results-db": "--qb-results-db",
    "--run-id": "--qb-run-id",
    "--threads": "--qb-threads",
    "--rounds": "--qb-rounds",
    "--baseline": "--qb-baseline",
    "--tag": "--qb-tag",
    "--dashboard": "--qb-dashboard",
    "--alpha": "--qb-alpha",
}


def _taken(parser) -> set:
    """Every option string some plugin has registered so far."""
    groups = [parser._anonymous, *parser._groups]
    return {name for group in groups for option in group.options for name in option.names()}


def rewrite(args: list, taken: set = frozenset()) -> list[str]:
    """Old spellings in `args` (changed in place) -> new ones; returns one warning per spelling
    rewritten. `taken`: option strings another plugin owns (left alone). Stops at `--`."""
    warnings = []
    for i, arg in enumerate(args):
        if arg == "--":
            break
        name, eq, value = str(arg).partition("=")
        new = RENAMED.get(name)
        if new is None or name in taken:
            continue
        args[i] = new + eq + value
        message = f"quantbench: {name} is deprecated, use {new} (the old spelling goes in the next release)"
        if message not in warnings:
            warnings.append(message)
    return warnings


def rewrite_for_pytest(args: list, parser) -> list[str]:
    """In pytest_load_initial_conftests: rewrite what no other plugin claims."""
    ours = set(RENAMED.values())
    return rewrite(args, {n for n in _taken(parser) if n not in ours})


def translate(args: list) -> list:
    """`quantbench run`'s own arguments for pytest: the old spellings are accepted there
    without a warning (it is our command) and handed on in the new ones."""
    out = list(args)
    rewrite(out)
    return out


# The options that keep their names (besides the renamed ones): for `used`.
OWN = ("--target", "--min-runs", "--min-duration", "--max-duration", "--warmup-runs", "--eval-samples",
       "--case-budget", "--fail-over-budget", "--latency-threshold", "--accuracy-threshold", "--size-threshold",
       "--memory-threshold", "--energy-threshold", "--noise-threshold", "--noise-k", "--max-accuracy-drop")


# The user's limits for the answer (harness/limits.py): new, so --qb- from the start.
LIMITS = tuple("--qb-" + flag[2:] for flag, _, _ in LIMIT_FLAGS.values())  # --qb-max-p99-ms, ..., --qb-objective


def used(args) -> bool:
    """Whether a command line names any quantbench option (the plugin then acts)."""
    names = set(RENAMED.values()) | set(OWN) | set(LIMITS)
    return any(str(a).partition("=")[0] in names for a in args)
