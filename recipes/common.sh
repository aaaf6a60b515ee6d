#!/usr/bin/env bash
# Shared part of the paper-reproduction recipes (Cui et al. 2025, verl recipe/entropy settings),
# mapped onto verl 0.9.1's `python -m verl.trainer.main_ppo`. launch.sh sets MODEL_PATH, ROLLOUT_TP,
# TOKENS_PER_GPU, EXPERIMENT and METHOD_ARGS, then sources this file. Everything below can be changed
# from the environment; extra Hydra overrides can be passed as arguments to the recipe.
#   DRY_RUN=1  resolve and check the full config with verl's own files, print the policy loss, exit.
set -euo pipefail

RECIPES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$RECIPES_DIR")"
PYTHON=${PYTHON:-python}

DATA_DIR=${DATA_DIR:-$HOME/data/verl-cov}               # written by scripts/prepare_data.py
TRAIN_FILE=${TRAIN_FILE:-$DATA_DIR/dapo_math_17k.parquet}
VAL_FILES=${VAL_FILES:-"[$DATA_DIR/aime24.parquet,$DATA_DIR/aime25.parquet,$DATA_DIR/amc23.parquet,$DATA_DIR/math500.parquet,$DATA_DIR/olympiadbench.parquet,$DATA_DIR/minerva.parquet,$DATA_DIR/omni_math.parquet]"}
NNODES=${NNODES:-4}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
LOGGER=${LOGGER:-wandb}                                   # your logger; console and file are always on
PROJECT=${PROJECT:-verl-cov}
OUT_DIR=${OUT_DIR:-$PWD/runs}
TOTAL_STEPS=${TOTAL_STEPS:-2400}
TEST_FREQ=${TEST_FREQ:-20}
SAVE_FREQ=${SAVE_FREQ:-100}
MAX_PROMPT=${MAX_PROMPT:-2048}
MAX_RESPONSE=${MAX_RESPONSE:-8192}

case "$LOGGER" in console|file|none|"") LOGGERS="[console,file]" ;; *) LOGGERS="[console,file,$LOGGER]" ;; esac
# verl's file logger writes here; `verl-cov fit $OUT_DIR/$EXPERIMENT.jsonl` reads it.
export VERL_FILE_LOGGER_PATH=${VERL_FILE_LOGGER_PATH:-$OUT_DIR/$EXPERIMENT.jsonl}

ARGS=(
  --config-path="$("$PYTHON" -m verl_cov.cli config-path)" --config-name=verl_cov_trainer
  # GRPO advantages, no KL anywhere (paper: no KL loss, no KL in reward)
  algorithm.adv_estimator=grpo
  algorithm.use_kl_in_reward=False
  actor_rollout_ref.actor.use_kl_loss=False
  actor_rollout_ref.actor.entropy_coeff=0
  # DAPO dynamic sampling: drop groups whose answers are all right or all wrong; up to 3 x 256 prompts
  # generating at once (the paper's generation batch of 768)
  trainer.use_v1=True
  algorithm.filter_groups.enable=True
  algorithm.filter_groups.metric=acc
  algorithm.filter_groups.max_inflight_gen_batches=3
  # data: 256 prompts x 8 responses per step, prompt 2048 / response 8192 tokens
  data.train_files="$TRAIN_FILE"
  data.val_files="$VAL_FILES"
  data.train_batch_size=256
  data.max_prompt_length="$MAX_PROMPT"
  data.max_response_length="$MAX_RESPONSE"
  data.filter_overlong_prompts=True
  data.truncation=left
  actor_rollout_ref.rollout.n=8
  # actor: mini-batch 32 prompts, lr 1e-6 constant, no weight decay, grad clip 1, token-mean, dual clip 10
  actor_rollout_ref.model.path="$MODEL_PATH"
  actor_rollout_ref.model.use_remove_padding=True
  actor_rollout_ref.model.enable_gradient_checkpointing=True
  actor_rollout_ref.actor.ppo_mini_batch_size=32
  actor_rollout_ref.actor.use_dynamic_bsz=True
  actor_rollout_ref.actor.ppo_max_token_len_per_gpu="$TOKENS_PER_GPU"
  actor_rollout_ref.actor.optim.lr=1e-6
  actor_rollout_ref.actor.optim.lr_warmup_steps=0
  actor_rollout_ref.actor.optim.weight_decay=0
  actor_rollout_ref.actor.grad_clip=1.0
  actor_rollout_ref.actor.loss_agg_mode=token-mean
  actor_rollout_ref.actor.clip_ratio_c=10.0
  # rollout: vLLM, temperature 1, top-p 1; validation greedy, one sample
  actor_rollout_ref.rollout.name=vllm
  actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP"
  actor_rollout_ref.rollout.temperature=1.0
  actor_rollout_ref.rollout.top_p=1.0
  actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True
  actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu="$TOKENS_PER_GPU"
  actor_rollout_ref.rollout.val_kwargs.do_sample=False
  actor_rollout_ref.rollout.val_kwargs.n=1
  # reward: math-verify on the final answer
  reward.custom_reward_function.path=pkg://verl_cov.dapo_math.math_reward
  reward.custom_reward_function.name=compute_score
  # trainer
  trainer.logger="$LOGGERS"
  trainer.project_name="$PROJECT"
  trainer.experiment_name="$EXPERIMENT"
  trainer.nnodes="$NNODES"
  trainer.n_gpus_per_node="$GPUS_PER_NODE"
  trainer.total_training_steps="$TOTAL_STEPS"
  trainer.test_freq="$TEST_FREQ"
  trainer.save_freq="$SAVE_FREQ"
  trainer.val_before_train=True
  trainer.default_local_dir="$OUT_DIR/checkpoints/$EXPERIMENT"
  "${METHOD_ARGS[@]}"
)

if [ "${DRY_RUN:-0}" = 1 ]; then
  exec "$PYTHON" "$REPO_DIR/scripts/resolve_config.py" "${ARGS[@]}" "$@"
fi
mkdir -p "$OUT_DIR"
exec "$PYTHON" -m verl.trainer.main_ppo "${ARGS[@]}" "$@"
