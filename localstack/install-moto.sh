#!/usr/bin/env bash
# Installs moto server into a virtualenv (once per machine) and prints the venv's path.
set -euo pipefail
VENV=${TOLLGATE_MOTO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tollgate/moto-venv-5.2.5}
mkdir -p "$(dirname "$VENV")"
(
  flock 9
  # The marker is written last: a half-finished install is redone.
  if [ ! -f "$VENV/.installed" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5' >&2
    touch "$VENV/.installed"
  fi
) 9>"$(dirname "$VENV")/.moto-install.lock"
echo "$VENV"
