"""Results history: every run in a SQL database, regression gates against a baseline run,
step detection over the history, the static dashboard and the recommendation.

Modules (import the one you need; this package file stays light because harness.suite
imports `gates`):
    gates       the thresholds (a frozen dataclass a suite can carry)
    schema      the versioned SQLAlchemy Core schema and its forward migrations
    db          open a database (SQLite file or PostgreSQL), append runs, query DataFrames
    regress     baseline selection and the gates
    stepdetect  penalised change-point detection over a case's history
    recommend   the fastest mode within an accuracy budget, with evidence
    dashboard   the static HTML + matplotlib site
    gate        the per-case gate against a baseline and the run's append with its verdicts (no pytest)
    answer      the answer's headlines at the end of a run (harness.finish.finish_run)
    pytest_gates  pytest's options -> gate.HistoryGate and finish.FinishOptions
    export      a run in pytest-benchmark's JSON layout
"""
