"""pytest integration: `pytest suites/ --target=NAME` runs every case as a test.

Loaded by the repo's conftest.py; elsewhere use `pytest -p harness.pytest_plugin`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import pytest

from harness import interrupts, profiles
from harness.history import pytest_gates
from harness.progress import Progress
from harness.session import DEFAULT_CACHE_DIR, REPO_ROOT, BenchSession, SessionOptions
from harness.suite import Case
from harness.vocabulary import STATUS_ERROR, STATUS_NA
from targets import TargetError, load_inventory


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("quantbench")
    group.addoption("--target", default="local", help="target from the inventory to run cases on (default: local)")
    group.addoption("--inventory", default=None, help="target inventory file (default: $QUANTBENCH_INVENTORY or ./targets.toml)")
    group.addoption("--results-dir", default=str(REPO_ROOT / "results"), help="where results/<run-id>/ go")
    group.addoption("--cache-dir", default=None, help="artifact cache (default: $QUANTBENCH_CACHE or .cache/quantbench)")
    group.addoption("--threads", type=int, default=None, help="runner threads (default: the target's physical cores)")
    group.addoption("--min-runs", type=int, default=None, help="override the suites' minimum timed runs")
    group.addoption("--min-duration", type=float, default=None, help="override the suites' minimum timed seconds")
    group.addoption("--max-duration", type=float, default=None, help="override the suites' maximum timed seconds")
    group.addoption("--warmup-runs", type=int, default=None, help="override the suites' warmup runs")
    group.addoption("--run-id", default=None, help="name of the run directory (default: UTC time + random suffix)")
    group.addoption("--rounds", type=int, default=None,
                    help="fresh runner processes per case, each beside a fresh fp32 baseline process (ABBA): the "
                         "speedup gets a bootstrap interval over rounds and a flag when they disagree; the evaluation "
                         "runs once (default: the suite's Timing.rounds, else the profile's: quick 1, nightly 3)")
    group.addoption("--profile", default=None, choices=list(profiles.PROFILES),
                    help="how much of the declared matrix to run: "
                         + "; ".join(f"{p.name}: {p.help}" for p in profiles.PROFILES.values())
                         + f" (default: ${profiles.ENV} or {profiles.QUICK})")
    group.addoption("--eval-samples", type=int, default=None, metavar="N",
                    help="score every case on a seeded subset of N evaluation samples (default: each suite's figure "
                         "for the profile; all of them where it has none)")
    group.addoption("--case-budget", type=float, default=None, metavar="SECONDS",
                    help="seconds a case may take in the runner before its evaluation pass is skipped, with the "
                         "projected time in its reason (default: the profile's; the target's case timeout bounds it)")
    group.addoption("--fail-over-budget", action="store_true", default=False,
                    help="a case over its accuracy budget fails its test (default: shown in the table and summary, "
                         "not failed; a suite can ask for it with Suite(fail_over_budget=True))")
    pytest_gates.add_options(group)  # --results-db, --baseline, --tag, thresholds


def pytest_configure(config: pytest.Config) -> None:
    try:
        inventory = load_inventory(config.getoption("--inventory"))
    except TargetError as exc:
        raise pytest.UsageError(str(exc)) from exc
    name = config.getoption("--target")
    if name not in inventory:
        raise pytest.UsageError(f"unknown target {name!r}; known targets: {', '.join(sorted(inventory))}")
    config.stash[_TARGET] = inventory[name]
    config.stash[_SESSION] = None
    try:
        config.stash[_PROFILE] = profiles.resolve(config.getoption("--profile") or os.environ.get(profiles.ENV) or profiles.QUICK)
    except ValueError as exc:
        raise pytest.UsageError(f"{exc} (from --profile or ${profiles.ENV})") from exc
    config.addinivalue_line("markers", "nightly: a case that only the nightly profile runs (quantbench --profile nightly)")
    config.stash[_BUDGET_FAILED] = set()
    if config.getoption("--eval-samples") is not None and config.getoption("--eval-samples") < 2:
        raise pytest.UsageError(f"--eval-samples must be at least 2, not {config.getoption('--eval-samples')}")
    if config.getoption("--rounds") is not None and config.getoption("--rounds") < 1:
        raise pytest.UsageError(f"--rounds must be at least 1, not {config.getoption('--rounds')}")
    pytest_gates.configure(config, name)
    config.add_cleanup(interrupts.raise_on_sigterm())  # SIGTERM stops the run like Ctrl-C: runner killed, report written


_TARGET = pytest.StashKey()
_SESSION = pytest.StashKey()
_PROFILE = pytest.StashKey()
_BUDGET_FAILED = pytest.StashKey()


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Deselect the cases the profile leaves out (pytest reports them as deselected)."""
    profile = config.stash[_PROFILE].name
    keep, drop = [], []
    for item in items:
        case = getattr(getattr(item, "callspec", None), "params", {}).get("case")
        (drop if isinstance(case, Case) and profile not in case.profiles else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _cache_dir(config: pytest.Config) -> Path:
    return Path(config.getoption("--cache-dir") or os.environ.get("QUANTBENCH_CACHE") or DEFAULT_CACHE_DIR)


class _Fixture:
    """What a suite's test function talks to: runs a case and turns the row into a verdict."""

    def __init__(self, session: BenchSession, history: Optional[pytest_gates.HistoryGate] = None,
                 fail_over_budget: bool = False, budget_failed: Optional[set] = None) -> None:
        self.session = session
        self.history = history
        self.fail_over_budget = fail_over_budget
        self.budget_failed = budget_failed if budget_failed is not None else set()  # case ids failed for their budget

    def check(self, case) -> None:
        row = self.session.run_case(case)
        if row["status"] == STATUS_NA:
            pytest.skip(f"n/a: {row['reason']}")
        failure = self.session.verdict(case, row, self.session.baseline_row(case), self.fail_over_budget)
        if failure and row["status"] != STATUS_ERROR:
            self.budget_failed.add(case.case_id)
        if failure:
            pytest.fail(failure, pytrace=False)
        regression = self.history.check(case, row) if self.history else None
        if regression:
            pytest.fail(regression, pytrace=False)


@pytest.fixture(scope="session")
def quantbench(request: pytest.FixtureRequest) -> _Fixture:
    config = request.config
    if config.stash[_SESSION] is None:
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        live = bool(terminal and terminal.isatty() and config.get_verbosity() < 2)
        capture = config.pluginmanager.get_plugin("capturemanager")

        def write(text: str) -> None:
            # Straight to the real stdout (not through pytest's writer, so its column
            # bookkeeping stays right); tests' output is captured, progress must not be.
            if capture is None:
                sys.stdout.write(text)
                sys.stdout.flush()
                return
            with capture.global_and_fixture_disabled():
                sys.stdout.write(text)
                sys.stdout.flush()

        def column() -> int:
            return getattr(getattr(terminal, "_tw", None), "width_of_current_line", 0)

        options = SessionOptions(
            results_dir=Path(config.getoption("--results-dir")),
            cache_dir=_cache_dir(config),
            threads=config.getoption("--threads"),
            min_runs=config.getoption("--min-runs"),
            min_duration_s=config.getoption("--min-duration"),
            max_duration_s=config.getoption("--max-duration"),
            warmup_runs=config.getoption("--warmup-runs"),
            run_id=config.getoption("--run-id"),
            profile=config.stash[_PROFILE].name,
            case_budget_s=config.getoption("--case-budget"),
            eval_samples=config.getoption("--eval-samples"),
            rounds=config.getoption("--rounds"),
        )
        try:
            config.stash[_SESSION] = BenchSession(config.stash[_TARGET], options, Progress(write, live, column),
                                                  command=["pytest", *config.invocation_params.args])
        except TargetError as exc:
            # One clear stop instead of the same error on every test of the run.
            pytest.exit(f"quantbench: cannot use target {config.stash[_TARGET].name!r}: {exc}", returncode=pytest.ExitCode.INTERRUPTED)
    return _Fixture(config.stash[_SESSION], pytest_gates.HistoryGate.for_session(config, config.stash[_SESSION]),
                    fail_over_budget=config.getoption("--fail-over-budget"), budget_failed=config.stash[_BUDGET_FAILED])


def outage_lines(target: str, outages: list[dict]) -> list[str]:
    """How long the device was away, once per outage (run.json has the same under target.outages)."""
    lines = []
    for o in outages:
        when = f"from {o['since']} to {o['until']}" if o["until"] else f"since {o['since']}, still away at the end of the run"
        lines.append(f"target {target} stopped answering {when}: away {o['away_s']:.0f} s, {o['cases_failed']} case(s) failed")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    session: Optional[BenchSession] = config.stash.get(_SESSION, None)
    if session is None:
        return
    session.close()
    from harness.report import budget_lines, comparison_table
    from harness.store import load_run

    terminalreporter.section(f"quantbench: run {session.run_id} on {session.target_info.name}, {session.options.profile} profile")
    df = load_run(session.store.dir)
    terminalreporter.write_line(comparison_table(df))
    for line in outage_lines(session.target_info.name, session.target.outage_report()):
        terminalreporter.write_line(line)
    over = budget_lines(df)
    if over:
        failed = config.stash.get(_BUDGET_FAILED, set())
        terminalreporter.write_line(f"accuracy budgets: {len(over)} case(s) over budget or unchecked; a verdict, "
                                    f"not a failure, unless --fail-over-budget or Suite(fail_over_budget=True):")
        for case_id, verdict in over:
            terminalreporter.write_line(f"  {case_id}: {verdict}" + (" [test failed]" if case_id in failed else ""))
    terminalreporter.write_line(f"report: {session.store.dir / 'results.parquet'} (also results.csv, latencies.parquet, run.json)")
    pytest_gates.finish(config, terminalreporter)  # into the results database; regressions table
    pytest_gates.the_answer(config, terminalreporter, df)  # which mode to ship; the dashboard
