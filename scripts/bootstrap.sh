#!/usr/bin/env bash
# Sourced by run.sh and test.sh: creates .venv inside the repo on first use and
# (re)installs the pinned dependencies whenever requirements/*.lock, no-deps.txt or pyproject.toml change.
set -euo pipefail
QB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QB_VENV=${QB_VENV:-"$QB_ROOT/.venv"}
QB_PYTHON=${QB_PYTHON:-$(command -v python3.11 || command -v python3)}
# The extras installed beside the base dependencies (each has requirements/<extra>.lock).
QB_EXTRAS=${QB_EXTRAS:-"torch tflite remote lab fleet history minilm test"}

install_locked() {
  # The locks: pip-compile's full closure of the base and of each extra, every file hashed
  # (requirements/README.md). --no-deps: exactly what the locks say, nothing resolved again.
  local python=$1 req=(-r "$QB_ROOT/requirements/base.lock") extra torch
  for extra in $QB_EXTRAS; do req+=(-r "$QB_ROOT/requirements/$extra.lock"); done
  # torch's CPU build first, where pip finds it (requirements/torch-cpu.txt): offered both, the
  # locks' torch line would take PyPI's CUDA build and its gigabytes of CUDA libraries.
  "$python" -m pip install --quiet --require-hashes --no-deps -r "$QB_ROOT/requirements/torch-cpu.txt" 2>/dev/null \
    || echo "quantbench: no CPU build of torch offered here; the locks' torch is PyPI's" >&2
  "$python" -m pip install --quiet --require-hashes --no-deps "${req[@]}"
  # The one step outside hash checking: torch's own platform libraries. PyPI's Linux wheel needs
  # its CUDA libraries (nvidia-*, triton) at import; pip adds them here (none for the CPU build).
  torch=$(grep -m1 '^torch==' "$QB_ROOT/requirements/base.lock" | cut -d' ' -f1)
  "$python" -m pip install --quiet "$torch"
  "$python" -m pip install --quiet --require-hashes --no-deps -r "$QB_ROOT/requirements/no-deps.txt"
  "$python" -m pip install --quiet --no-deps -e "$QB_ROOT"
}

ensure_venv() {
  local stamp="$QB_VENV/.quantbench-installed" want
  want=$(cat "$QB_ROOT"/requirements/*.lock "$QB_ROOT"/requirements/{torch-cpu,no-deps}.txt "$QB_ROOT/pyproject.toml" \
         <(echo "$QB_EXTRAS") | sha256sum | cut -d' ' -f1)
  if [ ! -x "$QB_VENV/bin/python" ]; then
    echo "quantbench: creating $QB_VENV with $QB_PYTHON" >&2
    "$QB_PYTHON" -m venv "$QB_VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "quantbench: installing pinned dependencies (first run takes a few minutes)" >&2
    "$QB_VENV/bin/python" -m pip install --quiet --upgrade pip
    install_locked "$QB_VENV/bin/python"
    echo "$want" > "$stamp"
  fi
}

ensure_debian_packages() {
  # Installs the packages listed in requirements/debian.txt that are missing (needs root).
  local missing=() pkg
  while read -r pkg; do
    [ -z "$pkg" ] && continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done < <(grep -v '^\s*#' "$QB_ROOT/requirements/debian.txt" | tr -s ' \t' '\n')
  if [ ${#missing[@]} -gt 0 ]; then
    echo "quantbench: installing Debian packages: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
