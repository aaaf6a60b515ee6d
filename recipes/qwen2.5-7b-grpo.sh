#!/usr/bin/env bash
# Qwen2.5-7B with grpo on DAPO-Math-17k, the paper's settings on verl 0.9.1.
# Usage: [DRY_RUN=1] [MODEL_PATH=...] [DATA_DIR=...] [NNODES=...] bash recipes/qwen2.5-7b-grpo.sh [overrides]
set -euo pipefail
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-7B}
ROLLOUT_TP=${ROLLOUT_TP:-2}
METHOD=grpo
KL_COV_RATIO=${KL_COV_RATIO:-0.002}
EXPERIMENT=${EXPERIMENT:-qwen2.5-7b-grpo}
source "$(dirname "${BASH_SOURCE[0]}")/methods.sh"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
