#!/usr/bin/env bash
# Download the wheels scripts/gpu_check.sh brings to the borrowed GPU machine (CPython 3.12,
# x86_64 Linux) into .whl/ (or $1): requirements/gpu-check-wheels.txt, without their
# dependencies (each is listed there with what it needs). Run it here, where PyPI is reachable.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/.whl}"
PY="${PYTHON:-python3}"
mkdir -p "$DEST"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    -d "$DEST" -r "$ROOT/requirements/gpu-check-wheels.txt"
du -sh "$DEST"
