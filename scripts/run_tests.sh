#!/usr/bin/env bash
# Set up .venv (CPU torch, verl, verl-cov) and run the fast test suite (no GPU, no downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(bash scripts/setup_venv.sh | tail -n 1)"
"$VENV/bin/ruff" check .
"$VENV/bin/python" -m pytest -q -m "not slow and not gpu" "$@"
