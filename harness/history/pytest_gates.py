"""What harness.pytest_plugin calls for the history: the options, and their translation into
the plain objects that do the work without pytest (harness.history.gate.HistoryGate, the
per-case gate; harness.finish.FinishOptions, the end of the run)."""
from __future__ import annotations

from typing import Any, Optional

import pytest

from harness import pytest_options, settings
from harness.finish import FinishOptions
from harness.history import gate
from harness.history.gates import Gates
from harness.limits import FLAGS, OBJECTIVES, Limits

# Limits field -> its pytest flag: quantbench recommend's spelling with the --qb- prefix (--qb-max-p99-ms, ...)
LIMIT_OPTIONS = dict(zip(FLAGS, pytest_options.LIMITS))

# command-line flag -> Gates field (None: the suite's value)
THRESHOLD_OPTIONS = {
    "--latency-threshold": ("latency", float, "relative p50 change that counts as a regression (default 0.10 = 10%%)"),
    "--accuracy-threshold": ("accuracy_points", float, "accuracy drop in points that counts (default 0.5)"),
    "--size-threshold": ("size", float, "relative artifact size change that counts (default 0.10)"),
    "--memory-threshold": ("memory", float, "relative peak memory change that counts (default 0.10)"),
    "--energy-threshold": ("energy", float, "relative energy-per-inference change that counts (default 0.10)"),
    "--qb-alpha": ("alpha", float, "significance level of the latency test (default 0.01; CIs are 1-alpha)"),
    "--noise-threshold": ("noise", float, "IQR/median at which a case's timing counts as noisy (default 0.10)"),
    "--noise-k": ("noise_k", float, "a noisy case's latency/energy threshold widens by this x its IQR/median (default 1.0)"),
}


def add_options(group) -> None:
    group.addoption("--qb-results-db", default=None,
                    help="results database: a SQLite path or postgresql://... (default: $QUANTBENCH_RESULTS_DB, "
                         "else <results-dir>/history.sqlite; 'off' keeps results/<run-id>/ only)")
    group.addoption("--qb-baseline", default=None,
                    help="compare each case with latest | RUN_ID | TAG from the results database; regressions fail")
    group.addoption("--qb-tag", action="append", default=[], help="label this run in the results database (repeatable)")
    for flag, (_, kind, text) in THRESHOLD_OPTIONS.items():
        group.addoption(flag, type=kind, default=None, help=text)
    group.addoption("--max-accuracy-drop", type=float, default=None,
                    help="accuracy budget in points for the recommendation printed at the end and the dashboard "
                         "(default 1.0, as quantbench recommend)")
    for name, flag in LIMIT_OPTIONS.items():
        _, kind, text = FLAGS[name]
        group.addoption(flag, type=kind, default=None, dest=f"qb_limit_{name}",
                        help=f"{text}; for the answer at the end of the run, over the suite's Limits(...)"
                        .replace("%", "%%"), **({"choices": list(OBJECTIVES)} if name == "objective" else {}))
    group.addoption("--qb-dashboard", default=None,
                    help="where the dashboard is rebuilt at the end of the run (default <results-dir>/dashboard; "
                         "'off' skips it)")


def _overrides(config: pytest.Config) -> dict[str, Any]:
    return {name: config.getoption(flag) for flag, (name, _, _) in THRESHOLD_OPTIONS.items()}


def limits(config: pytest.Config) -> Limits:
    """The command line's limits (None: the suite's, else the default): --max-accuracy-drop and --qb-max-*."""
    return Limits(max_accuracy_drop=config.getoption("--max-accuracy-drop"),
                  **{name: config.getoption(f"qb_limit_{name}") for name in LIMIT_OPTIONS})


def finish_options(config: pytest.Config, targets: Optional[str] = None, profile: Optional[str] = None,
                   failed_tests=frozenset()) -> FinishOptions:
    """The end-of-run options from pytest's (`targets`, `profile`: the summary's title)."""
    return FinishOptions(results_dir=settings.for_pytest(config).results_dir, results_db=config.getoption("--qb-results-db"),
                         baseline=config.getoption("--qb-baseline"), tags=tuple(config.getoption("--qb-tag") or []),
                         thresholds=_overrides(config), max_accuracy_drop=config.getoption("--max-accuracy-drop"),
                         limits=limits(config),
                         dashboard=config.getoption("--qb-dashboard"), targets=targets, profile=profile,
                         failed_tests=frozenset(failed_tests))


def configure(config: pytest.Config, target_name) -> None:
    """Validate the options; with --qb-baseline, resolve it now so a bad one stops the run before it starts.
    `target_name`: the run's target, or a list of them (a run across devices)."""
    drop = config.getoption("--max-accuracy-drop")
    if drop is not None and not drop >= 0:
        raise pytest.UsageError(f"quantbench: --max-accuracy-drop must be a non-negative number of points, not {drop!r}")
    problem = limits(config).validate()
    if problem:
        for name, flag in LIMIT_OPTIONS.items():
            problem = problem.replace(f"limit {name} ", f"{flag} ")
        raise pytest.UsageError(f"quantbench: {problem}")
    problem = Gates().override(_overrides(config)).validate()
    if problem:
        raise pytest.UsageError(f"quantbench: {problem.replace('gates.', 'threshold ')}")
    config.stash[_STATE] = None
    ref = config.getoption("--qb-baseline")
    if not ref:
        return
    from harness.history.location import HistoryError

    try:
        config.stash[_PRESET] = gate.resolve_baseline(config.getoption("--qb-results-db"), settings.for_pytest(config).results_dir,
                                                      ref, target_name, exclude_run_id=config.getoption("--qb-run-id"))
    except HistoryError as exc:
        raise pytest.UsageError(f"quantbench: {exc}") from exc


_STATE = pytest.StashKey()
_PRESET = pytest.StashKey()


class HistoryGate(gate.HistoryGate):
    """harness.history.gate.HistoryGate, made from pytest's options, one per session."""

    @classmethod
    def for_run(cls, config: pytest.Config, store) -> "HistoryGate":
        """The run's gate (made once; `store`: the run's harness.store.RunStore)."""
        if config.stash.get(_STATE, None) is None:
            config.stash[_STATE] = cls(config.getoption("--qb-results-db"), settings.for_pytest(config).results_dir,
                                       _overrides(config), config.getoption("--qb-tag") or [], store,
                                       config.stash.get(_PRESET, None))
        return config.stash[_STATE]

    @classmethod
    def for_session(cls, config: pytest.Config, session) -> "HistoryGate":
        return cls.for_run(config, session.store)

