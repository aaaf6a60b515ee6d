#!/usr/bin/env bash
# Create (or reuse) a venv for one verl version: the CPU build of torch first, then verl-cov[test]
# under scripts/constraints/verl-$VERL_VERSION.txt. Prints the venv path on the last line.
# Installing torch==2.13.0 first keeps pip from pulling a multi-GB CUDA build for "torch".
# Venvs live under $VERL_COV_VENVS (default /tmp/verl-cov-venvs), keyed by a hash of the
# dependency files, so a later run on the same machine reuses them and only re-links the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
VERL_VERSION="${VERL_VERSION:-0.9.1}"
CONSTRAINTS="scripts/constraints/verl-$VERL_VERSION.txt"
[ -f "$CONSTRAINTS" ] || { echo "no $CONSTRAINTS: supported test versions are $(ls scripts/constraints)" >&2; exit 2; }
KEY="$(cat pyproject.toml "$CONSTRAINTS" | sha256sum | cut -c1-12)"
VENV="${VERL_COV_VENVS:-/tmp/verl-cov-venvs}/verl-$VERL_VERSION-$KEY"
if [ ! -f "$VENV/.complete" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
  "$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" -e ".[test]"
  touch "$VENV/.complete"
else
  "$VENV/bin/python" -m pip install --quiet --no-deps -e .
fi
echo "$VENV"
