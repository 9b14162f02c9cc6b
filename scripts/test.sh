#!/usr/bin/env bash
# The tests of the harness itself (tests/). Extra arguments go to pytest.
source "$(dirname "$0")/bootstrap.sh"
ensure_debian_packages
ensure_venv
cd "$QB_ROOT"
# Two pytest-xdist workers, one test file each at a time (module fixtures such as the emulated
# Pi's suite run stay in one worker): most tests wait on subprocesses, sshd or emulation, so two
# workers on a 2-core machine took the suite from 23 to 13 minutes. QB_TEST_WORKERS=0 runs it in
# one process; arguments given here (-n 4, ...) come last and win.
exec "$QB_VENV/bin/python" -m pytest tests/ -n "${QB_TEST_WORKERS:-2}" --dist loadfile "$@"
