#!/usr/bin/env bash
# launch.sh SIZE METHOD [hydra overrides...]: one of the paper's six runs (SIZE 7b|32b, METHOD
# grpo|clip_cov|kl_cov) on verl 0.9.1. The recipes qwen2.5-<size>-<method>.sh call this.
set -euo pipefail
SIZE=$1
METHOD=$2
shift 2
case "$SIZE" in
  7b)  MODEL_DEFAULT=Qwen/Qwen2.5-7B;  TP_DEFAULT=2; KL_COV_DEFAULT=0.002;  TOKENS_DEFAULT=30720 ;;
  32b) MODEL_DEFAULT=Qwen/Qwen2.5-32B; TP_DEFAULT=4; KL_COV_DEFAULT=0.0002; TOKENS_DEFAULT=20480 ;;
  *) echo "unknown SIZE=$SIZE (7b, 32b)" >&2; exit 2 ;;
esac
MODEL_PATH=${MODEL_PATH:-$MODEL_DEFAULT}
ROLLOUT_TP=${ROLLOUT_TP:-$TP_DEFAULT}
KL_COV_RATIO=${KL_COV_RATIO:-$KL_COV_DEFAULT}
TOKENS_PER_GPU=${TOKENS_PER_GPU:-$TOKENS_DEFAULT}   # the paper's max_token: dynamic batch size per GPU
EXPERIMENT=${EXPERIMENT:-qwen2.5-$SIZE-$METHOD}
source "$(dirname "${BASH_SOURCE[0]}")/methods.sh"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
