#!/usr/bin/env bash
# Sourced by run.sh and test.sh: creates .venv inside the repo on first use and
# (re)installs the pinned dependencies whenever requirements/lock.txt or pyproject.toml change.
set -euo pipefail
QB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QB_VENV="$QB_ROOT/.venv"
QB_PYTHON=${QB_PYTHON:-$(command -v python3.11 || command -v python3)}

ensure_venv() {
  local stamp="$QB_VENV/.quantbench-installed" want
  want=$(cat "$QB_ROOT/requirements/lock.txt" "$QB_ROOT/requirements/no-deps.txt" "$QB_ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
  if [ ! -x "$QB_VENV/bin/python" ]; then
    echo "quantbench: creating $QB_VENV with $QB_PYTHON" >&2
    "$QB_PYTHON" -m venv "$QB_VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "quantbench: installing pinned dependencies (first run takes a few minutes)" >&2
    "$QB_VENV/bin/python" -m pip install --quiet --upgrade pip
    "$QB_VENV/bin/python" -m pip install --quiet -r "$QB_ROOT/requirements/lock.txt"
    "$QB_VENV/bin/python" -m pip install --quiet --no-deps -r "$QB_ROOT/requirements/no-deps.txt"
    "$QB_VENV/bin/python" -m pip install --quiet --no-deps -e "$QB_ROOT"
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
