#!/usr/bin/env bash
# Create (or reuse) a venv for one verl version: torch==2.13.0 first, then verl-cov[test] under
# scripts/constraints/verl-$VERL_VERSION.txt. Prints the venv path on the last line.
# Pinning torch first keeps pip from resolving an unpinned "torch". Whether that pin is a CPU build
# depends on the package index: this project's machines serve one; an index that serves only the
# CUDA build downloads several GB, so point pip at a CPU-only index there (PIP_INDEX_URL).
# Venvs live under $VERL_COV_VENVS (default /tmp/verl-cov-venvs-<uid>), keyed by a hash of the
# dependency files, so a later run on the same machine reuses them and only re-links the checkout.
# That folder must belong to the current user and be writable by nobody else: a venv found under a
# folder another user could write to is never run.
set -euo pipefail
cd "$(dirname "$0")/.."
VERL_VERSION="${VERL_VERSION:-0.9.1}"
CONSTRAINTS="scripts/constraints/verl-$VERL_VERSION.txt"
[ -f "$CONSTRAINTS" ] || { echo "no $CONSTRAINTS: supported test versions are $(ls scripts/constraints)" >&2; exit 2; }
ROOT="${VERL_COV_VENVS:-/tmp/verl-cov-venvs-$(id -u)}"
mkdir -p -m 700 "$ROOT"
owner="$(stat -c %u "$ROOT")"
mode="$(stat -c %a "$ROOT")"
if [ "$owner" != "$(id -u)" ] || [ $(( 8#$mode & 8#022 )) -ne 0 ]; then
  echo "setup_venv: $ROOT is owned by uid $owner with mode $mode; it must be yours and not group- or" \
       "world-writable. Remove it or set VERL_COV_VENVS to a folder of your own." >&2
  exit 2
fi
KEY="$(cat pyproject.toml "$CONSTRAINTS" | sha256sum | cut -c1-12)"
VENV="$ROOT/verl-$VERL_VERSION-$KEY"
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
