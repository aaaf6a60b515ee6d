#!/usr/bin/env bash
# Create (or reuse) .venv with the CPU build of torch first, then verl-cov and its test tools.
# Installing torch==2.13.0 first keeps pip from pulling a multi-GB CUDA build for the "torch" requirement.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VERL_COV_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet -e ".[test]"
echo "$VENV"
