#!/usr/bin/env bash
# The tests of the harness itself (tests/). Extra arguments go to pytest.
source "$(dirname "$0")/bootstrap.sh"
ensure_debian_packages
ensure_venv
cd "$QB_ROOT"
exec "$QB_VENV/bin/python" -m pytest tests/ "$@"
