#!/usr/bin/env bash
# The main job: the default suites on the local CPU, printing the comparison table and
# writing results/<run-id>/. Extra arguments go to `quantbench run` (e.g. --target NAME, -k static-int8).
source "$(dirname "$0")/bootstrap.sh"
ensure_venv
cd "$QB_ROOT"
exec "$QB_VENV/bin/quantbench" run "$@"
