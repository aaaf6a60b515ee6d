#!/usr/bin/env bash
# Set up .venv (CPU torch, verl, verl-cov) and run the CPU study: GRPO vs Clip-Cov vs KL-Cov, ~1 minute.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(bash scripts/setup_venv.sh | tail -n 1)"
"$VENV/bin/verl-cov" demo "$@"
