#!/usr/bin/env bash
# The GPU check: the cuda target, GPU memory, NVML energy and timing synchronisation measured on
# this machine's GPU 0 in one command (under 8 minutes), with this machine's own Python.
#
#   scripts/gpu_check.sh [OUT_DIR] [--self-check | --rehearse-on-cpu] [--wheels DIR] [--budget-s S]
#
# OUT_DIR (default $QUANTBENCH_GPU_CHECK_OUT, else results/gpu-check-<UTC time>) receives
# summary.txt, run.json, results.csv, timing_sync.json, gpu_check.log and gpu_check.tar.gz.
# PYTHON picks the interpreter (default python3). Wheels in .whl/ (or --wheels DIR) are installed
# into a throwaway layer over it first; scripts/gpu_check_wheels.sh downloads them.
# Without a GPU it runs a self-check, says it found no GPU and exits 0. Exit 1: a GPU is present
# and a check failed; 2: the check itself could not run. scripts/gpu_check.py has the details.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then
    echo "gpu_check: no Python '$PY' here; set PYTHON=/path/to/python3" >&2
    exit 2
fi
cd "$ROOT"
# The borrowed machine's Python does not have quantbench installed: it imports it from this checkout.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" "$ROOT/scripts/gpu_check.py" "$@"
