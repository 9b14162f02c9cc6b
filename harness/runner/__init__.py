"""The runner: measures one artifact in a fresh process on the device itself.

Self-contained on purpose: it imports only the standard library, numpy and the one
runtime it runs, and is written for Python 3.8+ (tested on 3.9 and 3.11: tests/test_emulated_pi*.py),
because it is copied to edge devices.
Run it as `python -m runner CONFIG.json` with this package's parent on sys.path; protocol.py
says what the config and the result file hold (RunnerConfig, RunnerResult) and their format version.
"""
