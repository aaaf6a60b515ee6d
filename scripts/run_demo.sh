#!/usr/bin/env bash
# Set up the venv (CPU torch, verl 0.9.1, verl-cov) and run the CPU study: GRPO vs Clip-Cov vs KL-Cov.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(bash scripts/setup_venv.sh | tail -n 1)"
"$VENV/bin/verl-cov" demo "$@"
