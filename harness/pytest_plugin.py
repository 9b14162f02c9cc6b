"""pytest integration: `pytest suites/ --target=NAME` runs every case as a test.

`--target=a,b,pool:pi5` runs every case on `a` and on `b`, and once on a free board of the
pool `pi5`; with pytest-xdist (`-n N`) the cases spread over N worker processes, each holding
at most one board at a time. The controller hands every worker the run id, and alone
finishes the run: run.json, the report table, the history run (printed and recorded once).

Registered as a pytest11 entry point (pyproject.toml), so an installed quantbench needs no
conftest.py; the repo's conftest.py names it too, for a checkout that is not installed. It does
nothing (no output, no files, no run directory, no inventory read) in a pytest run that neither
uses its options nor collects a suite's cases. Option names: harness/pytest_options.py.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import pytest

from harness import interrupts, profiles, pytest_options, settings
from harness.finish import finish_run
from harness.fleet.display import FleetDisplay
from harness.fleet.shared import SharedRun, StatusProgress
from harness.history import pytest_gates
from harness.progress import Progress
from harness.session import BenchSession, SessionOptions
from harness.store import RunStore, is_run_dir, new_run_id
from harness.suite import Case, Suite
from harness.vocabulary import STATUS_ERROR, STATUS_NA
from targets import TargetError
from targets.fleet import parse_placements
from targets.inventory import load_fleet


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("quantbench")
    group.addoption("--target", default="local",
                    help="where to run: a target from the inventory (default: local), several (a,b: every case on "
                         "each), a pool of identical boards (pool:NAME: every case once, on a free board), or labgrid "
                         "places (lab:PLACE, lab:key=value+key=value: held at the coordinator across runs)")
    # defaults relative to the rootdir (when pytest found its configuration) or the working directory: harness/settings.py
    group.addoption("--qb-inventory", default=None,
                    help=f"target inventory file (default: ${settings.INVENTORY_ENV} or <rootdir>/targets.toml)")
    group.addoption("--qb-results-dir", default=None,
                    help=f"where results/<run-id>/ go (default: ${settings.RESULTS_ENV} or <rootdir>/results)")
    group.addoption("--qb-cache-dir", default=None,
                    help=f"artifact cache (default: ${settings.CACHE_ENV} or <rootdir>/.cache/quantbench)")
    group.addoption("--qb-threads", type=int, default=None, help="runner threads (default: the target's physical cores)")
    group.addoption("--min-runs", type=int, default=None, help="override the suites' minimum timed runs")
    group.addoption("--min-duration", type=float, default=None, help="override the suites' minimum timed seconds")
    group.addoption("--max-duration", type=float, default=None, help="override the suites' maximum timed seconds")
    group.addoption("--warmup-runs", type=int, default=None, help="override the suites' warmup runs")
    group.addoption("--qb-run-id", default=None, help="name of the run directory (default: UTC time + random suffix)")
    group.addoption("--qb-rounds", type=int, default=None,
                    help="fresh runner processes per case, each beside a fresh fp32 baseline process (ABBA): the "
                         "speedup gets a bootstrap interval over rounds and a flag when they disagree; the evaluation "
                         "runs once (default: the suite's Timing.rounds, else the profile's: quick 1, nightly 3)")
    group.addoption("--qb-no-race", action="store_true", default=False,
                    help="no race of the finalists at the end of the run: the answer then ranks p50s timed in "
                         "separate processes and says so (harness/race.py)")
    group.addoption("--qb-race-cap", type=float, default=None,
                    help="seconds the race of the finalists may take per model and target (default: the profile's, "
                         "quick 20, nightly 120; 0: no race)")
    group.addoption("--qb-build-jobs", type=int, default=None, metavar="N",
                    help="artifacts built at once before the first case is timed, on a single target (default: 2 on a "
                         "machine with 2 or more CPUs; 1: each case builds its own in its turn)")
    group.addoption("--qb-profile", default=None, choices=list(profiles.PROFILES),
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
    pytest_gates.add_options(group)  # --qb-results-db, --qb-baseline, --qb-tag, thresholds


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list) -> None:
    """The old option spellings (--profile, --results-dir, ...) become the new ones, with a
    deprecation warning, unless another plugin owns them (called when quantbench is loaded as a
    plugin: the entry point or -p; not when only a conftest.py names it)."""
    early_config.stash[_DEPRECATED] = pytest_options.rewrite_for_pytest(args, parser)


def _placements(config: pytest.Config) -> list:
    """The run's placements, from --target and the inventory: read the first time they are needed."""
    if config.stash.get(_PLACEMENTS, None) is None:
        try:
            where = settings.for_pytest(config)
            config.stash[_PLACEMENTS] = parse_placements(config.getoption("--target"), load_fleet(where.inventory, where.base_dir))
        except TargetError as exc:
            raise pytest.UsageError(f"quantbench: {exc}") from exc
    return config.stash[_PLACEMENTS]


def _activate(config: pytest.Config) -> None:
    """This run uses quantbench: SIGTERM stops it like Ctrl-C (runner killed, report written)."""
    if not config.stash.get(_ACTIVE, False):
        config.stash[_ACTIVE] = True
        config.add_cleanup(interrupts.raise_on_sigterm())


def pytest_configure(config: pytest.Config) -> None:
    for message in config.stash.get(_DEPRECATED, []):
        config.issue_config_time_warning(pytest.PytestDeprecationWarning(message), stacklevel=2)
    # quantbench options on the command line (or a worker of such a run): check the target now,
    # so that a bad one stops the run before it starts; otherwise when a suite's cases appear.
    used = (pytest_options.used(config.invocation_params.args) or bool(config.stash.get(_DEPRECATED, []))
            or getattr(config, "workerinput", {}).get("quantbench_used", False))
    config.stash[_USED] = used
    config.stash[_PLACEMENTS] = None
    if used:
        _placements(config)
    config.stash[_SESSION] = None
    try:
        config.stash[_PROFILE] = profiles.resolve(config.getoption("--qb-profile") or os.environ.get(profiles.ENV) or profiles.QUICK)
    except ValueError as exc:
        raise pytest.UsageError(f"{exc} (from --qb-profile or ${profiles.ENV})") from exc
    config.addinivalue_line("markers", "nightly: a case that only the nightly profile runs (quantbench --qb-profile nightly)")
    config.stash[_BUDGET_FAILED] = set()
    if config.getoption("--eval-samples") is not None and config.getoption("--eval-samples") < 2:
        raise pytest.UsageError(f"--eval-samples must be at least 2, not {config.getoption('--eval-samples')}")
    if config.getoption("--qb-race-cap") is not None and not config.getoption("--qb-race-cap") >= 0:
        raise pytest.UsageError(f"--qb-race-cap must be a non-negative number of seconds, not {config.getoption('--qb-race-cap')}")
    if config.getoption("--qb-rounds") is not None and config.getoption("--qb-rounds") < 1:
        raise pytest.UsageError(f"--qb-rounds must be at least 1, not {config.getoption('--qb-rounds')}")
    # One run id for the whole run: an xdist worker takes the controller's.
    given = getattr(config, "workerinput", {}).get("quantbench_run_id")
    config.stash[_RUN_ID] = given or config.getoption("--qb-run-id") or new_run_id()
    names = [p.name for p in config.stash[_PLACEMENTS] or []]
    pytest_gates.configure(config, names[0] if len(names) == 1 else names)
    if used or _is_controller(config):
        _activate(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """pytest-xdist, on the controller, before a worker starts: hand it the run id."""
    node.workerinput["quantbench_run_id"] = node.config.stash[_RUN_ID]
    node.workerinput["quantbench_base_dir"] = str(settings.for_pytest(node.config).base_dir)
    node.workerinput["quantbench_used"] = node.config.stash[_USED]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A suite's test function gets one test per case, times each placement when --target
    names several (case ids then end in @<target>)."""
    suite = getattr(metafunc.function, "suite", None)
    if not isinstance(suite, Suite) or "case" not in metafunc.fixturenames:
        return
    # Grouped by target: xdist hands each worker consecutive tests, so workers start on
    # different targets (and each target's fp32 runs before its other modes).
    metafunc.parametrize("case", suite.pytest_params([p.name for p in _placements(metafunc.config)]))


_SESSION = pytest.StashKey()
_PROFILE = pytest.StashKey()
_ACTIVE = pytest.StashKey()
_USED = pytest.StashKey()
_DEPRECATED = pytest.StashKey()
_BUDGET_FAILED = pytest.StashKey()


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Deselect the cases the profile leaves out (pytest reports them as deselected)."""
    profile = config.stash[_PROFILE].name
    keep, drop = [], []
    for item in items:
        case = getattr(getattr(item, "callspec", None), "params", {}).get("case")
        if isinstance(case, Case):
            _activate(config)
        (drop if isinstance(case, Case) and profile not in case.profiles else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
_PLACEMENTS = pytest.StashKey()
_RUN_ID = pytest.StashKey()
_DISPLAY = pytest.StashKey()


def _worker_id(config: pytest.Config) -> str:
    return getattr(config, "workerinput", {}).get("workerid", "")


def _is_controller(config: pytest.Config) -> bool:
    """The xdist controller: it runs no test itself, and alone finishes the run."""
    return not _worker_id(config) and getattr(config.option, "dist", "no") != "no" and bool(getattr(config.option, "tx", None))


def _results_dir(config: pytest.Config) -> Path:
    # absolute: the runner and its files live in other working directories (a relative
    # --results-dir once made every local runner fail to find its config.json)
    return settings.for_pytest(config).results_dir


def _run_dir(config: pytest.Config) -> Path:
    return _results_dir(config) / config.stash[_RUN_ID]


def _terminal_writer(config: pytest.Config):
    """(write, live, column): text straight to the real stdout, not through pytest's writer
    (so its column bookkeeping stays right), whether the terminal is live, pytest's column."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    live = bool(terminal and terminal.isatty() and config.get_verbosity() < 2)
    capture = config.pluginmanager.get_plugin("capturemanager")

    def write(text: str) -> None:
        # tests' output is captured, progress must not be
        if capture is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        with capture.global_and_fixture_disabled():
            sys.stdout.write(text)
            sys.stdout.flush()

    def column() -> int:
        return getattr(getattr(terminal, "_tw", None), "width_of_current_line", 0)

    return write, live, column


def _cache_dir(config: pytest.Config) -> Path:
    return settings.for_pytest(config).cache_dir


def _options(config: pytest.Config) -> SessionOptions:
    return SessionOptions(
        results_dir=_results_dir(config),
        cache_dir=_cache_dir(config),
        threads=config.getoption("--qb-threads"),
        min_runs=config.getoption("--min-runs"),
        min_duration_s=config.getoption("--min-duration"),
        max_duration_s=config.getoption("--max-duration"),
        warmup_runs=config.getoption("--warmup-runs"),
        run_id=config.stash[_RUN_ID],
        profile=config.stash[_PROFILE].name,
        case_budget_s=config.getoption("--case-budget"),
        eval_samples=config.getoption("--eval-samples"),
        rounds=config.getoption("--qb-rounds"),
        limits=pytest_gates.limits(config),
    )


class _ControllerReports:
    """On the xdist controller: which cases' tests failed in the workers (the summary marks
    the over-budget ones whose test failed, as a single process does from its own fixture)."""

    def __init__(self, failed: set) -> None:
        self.failed = failed

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" and report.failed and report.nodeid.endswith("]"):
            self.failed.add(report.nodeid[report.nodeid.rindex("[") + 1:-1])


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
        worker = _worker_id(config)
        if worker:  # its output is not shown: the controller displays what it does
            progress = StatusProgress(SharedRun(_run_dir(config)), worker)
        else:
            progress = Progress(*_terminal_writer(config))
        options = _options(config)
        placements = _placements(config)
        try:
            config.stash[_SESSION] = BenchSession(placements, options, progress,
                                                  command=["pytest", *config.invocation_params.args], worker=worker)
        except TargetError as exc:
            # One clear stop instead of the same error on every test of the run.
            pytest.exit(f"quantbench: cannot use target {placements[0].name!r}: {exc}", returncode=pytest.ExitCode.INTERRUPTED)
        if not worker:
            _build_ahead(config.stash[_SESSION], request.session.items, config.getoption("--qb-build-jobs"))
    return _Fixture(config.stash[_SESSION], pytest_gates.HistoryGate.for_session(config, config.stash[_SESSION]),
                    fail_over_budget=config.getoption("--fail-over-budget"), budget_failed=config.stash[_BUDGET_FAILED])


def _build_ahead(bench: BenchSession, items: list, jobs: Optional[int]) -> None:
    """Every selected case's artifact built before the first is timed, two at a time (harness/build_ahead.py)."""
    selected = [(item.callspec.params["case"], str(item.path)) for item in items
                if isinstance(getattr(getattr(item, "callspec", None), "params", {}).get("case"), Case)]
    jobs = jobs if jobs is not None else min(2, os.cpu_count() or 1)
    if selected and jobs >= 2:
        bench.build_ahead([case for case, _ in selected], jobs, {case.case_id: path for case, path in selected})


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if _is_controller(config):
        config.pluginmanager.register(_ControllerReports(config.stash[_BUDGET_FAILED]), "quantbench-controller-reports")
        display = FleetDisplay(SharedRun(_run_dir(config)), *_terminal_writer(config))
        config.stash[_DISPLAY] = display
        display.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker releases its boards (the controller finishes the run)."""
    bench: Optional[BenchSession] = session.config.stash.get(_SESSION, None)
    if bench is not None and _worker_id(session.config):
        bench.close(finalize=False)


def _race(session: BenchSession, config: pytest.Config, exitstatus) -> None:
    """The race of the finalists before the answer (not after an interrupt, nor with --qb-no-race)."""
    if config.getoption("--qb-no-race") or exitstatus == pytest.ExitCode.INTERRUPTED:
        return
    try:
        session.race(None, config.getoption("--qb-race-cap"))  # the session's limits, as the answer's
    except Exception as exc:  # noqa: BLE001 - the rows are written; the answer then says it was not raced
        session.store.log(f"race of the finalists NOT run: {type(exc).__name__}: {exc}")
        sys.stderr.write(f"quantbench: race of the finalists not run: {type(exc).__name__}: {exc}\n")


@pytest.hookimpl(tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    if _worker_id(config):
        return  # the controller prints the run once
    display = config.stash.get(_DISPLAY, None)
    if display is not None:
        display.stop()
    session: Optional[BenchSession] = config.stash.get(_SESSION, None)
    if session is not None:
        _race(session, config, exitstatus)
        store, run = session.store, session.close()
    elif _is_controller(config) and is_run_dir(_run_dir(config)):
        # run.json (every board the workers opened) and the tidy report, once, by the controller
        store = RunStore(_results_dir(config), config.stash[_RUN_ID])
        run = store.finish(["pytest", *config.invocation_params.args], None, _placements(config), _options(config))
    else:
        return
    options = pytest_gates.finish_options(config, ", ".join(p.label for p in _placements(config)),
                                          config.stash[_PROFILE].name, config.stash.get(_BUDGET_FAILED, set()))
    summary = finish_run(run, options, pytest_gates.HistoryGate.for_run(config, store))
    for title, lines in summary.blocks:  # the table, the history, which mode to ship, the dashboard
        if title:
            terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)
