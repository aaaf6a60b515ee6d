#!/usr/bin/env bash
# Qwen2.5-7B with clip_cov on DAPO-Math-17k, the paper's settings on verl 0.9.1.
# Usage: [DRY_RUN=1] [MODEL_PATH=...] [DATA_DIR=...] [NNODES=...] bash recipes/qwen2.5-7b-clip_cov.sh [overrides]
set -euo pipefail
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-7B}
ROLLOUT_TP=${ROLLOUT_TP:-2}
METHOD=clip_cov
KL_COV_RATIO=${KL_COV_RATIO:-0.002}
EXPERIMENT=${EXPERIMENT:-qwen2.5-7b-clip_cov}
source "$(dirname "${BASH_SOURCE[0]}")/methods.sh"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
