#!/usr/bin/env bash
# Qwen2.5-32B with kl_cov on DAPO-Math-17k, the paper's settings on verl 0.9.1 (see README.md).
# Usage: [DRY_RUN=1] [MODEL_PATH=...] [DATA_DIR=...] [NNODES=...] bash recipes/qwen2.5-32b-kl_cov.sh [overrides]
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" 32b kl_cov "$@"
