#!/usr/bin/env bash
# KL-Cov on Qwen2.5-7B (Cui et al. 2025, "The Entropy Mechanism of Reinforcement
# Learning for Reasoning Language Models", arXiv 2505.22617) with verl's built-in policy losses: FSDP
# training, vLLM rollout, DAPO-Math-17k, GRPO advantages with dynamic sampling. Needs verl 0.9.1
# (REQUIRED_VERL.txt); data from dapo/prepare_dapo_data.sh.
#   bash run_qwen2_5_7b_kl_cov_fsdp.sh [extra Hydra overrides]
#   DRY_RUN=1 bash run_qwen2_5_7b_kl_cov_fsdp.sh     # print the resolved config and exit: no Ray, no GPU
set -xeuo pipefail

# ================================ USER-ADJUSTABLE ================================
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-7B}
TRAIN_FILE=${TRAIN_FILE:-${HOME}/verl/data/dapo-math-17k.parquet}
TEST_FILE=${TEST_FILE:-${HOME}/verl/data/aime-2024.parquet}
CKPTS_DIR=${CKPTS_DIR:-${HOME}/ckpts/entropy_cov/qwen2_5_7b_kl_cov}
PROJECT_NAME=${PROJECT_NAME:-verl-entropy-cov}
EXP_NAME=${EXP_NAME:-qwen2_5_7b_kl_cov}
LOGGER=${LOGGER:-'["console","wandb"]'}
NNODES=${NNODES:-4}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
ROLLOUT_TP=${ROLLOUT_TP:-2}
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.85}
OFFLOAD=${OFFLOAD:-False}
PYTHON=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}
# =================================================================================

# KL-Cov (paper Eq. 12): per micro-batch, add beta * |log pi - log pi_old| to the loss of the top share k
# of the valid tokens by Cov = (log pi - mean)(A - mean); k = 2e-3 (2e-4 for 32B), beta = 1. kl_cov has no
# ratio clip: clip_ratio_* are the paper's values and unused.
loss_mode=kl_cov
kl_cov_ratio=0.002
ppo_kl_coef=1.0
clip_ratio_low=0.2
clip_ratio_high=0.2
policy_loss_args=(
    actor_rollout_ref.actor.policy_loss.loss_mode=${loss_mode}
    actor_rollout_ref.actor.policy_loss.kl_cov_ratio=${kl_cov_ratio}
    actor_rollout_ref.actor.policy_loss.ppo_kl_coef=${ppo_kl_coef}
)

# The paper's shared settings (its recipe/entropy/7b_kl_cov.sh); README.md lists what differs.
max_prompt_length=$((1024 * 2))
max_response_length=$((1024 * 8))
max_token=30720
train_prompt_bsz=256
train_prompt_mini_bsz=32
n_resp_per_prompt=8
inflight_gen_batches=3 # up to 3 x 256 prompts generating at once: the paper's generation batch of 768

if [ "${DRY_RUN}" = 1 ]; then hydra_mode=(--cfg job --resolve); else hydra_mode=(); fi

HYDRA_FULL_ERROR=1 "${PYTHON}" -m verl.trainer.main_ppo "${hydra_mode[@]}" \
    data.train_files="${TRAIN_FILE}" \
    data.val_files="${TEST_FILE}" \
    data.prompt_key=prompt \
    data.truncation=left \
    data.filter_overlong_prompts=False \
    data.max_prompt_length=${max_prompt_length} \
    data.max_response_length=${max_response_length} \
    data.train_batch_size=${train_prompt_bsz} \
    data.return_raw_chat=True \
    algorithm.adv_estimator=grpo \
    algorithm.use_kl_in_reward=False \
    algorithm.kl_ctrl.kl_coef=0.0 \
    algorithm.filter_groups.enable=True \
    algorithm.filter_groups.metric=acc \
    algorithm.filter_groups.max_inflight_gen_batches=${inflight_gen_batches} \
    "${policy_loss_args[@]}" \
    actor_rollout_ref.model.path="${MODEL_PATH}" \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.actor.kl_loss_coef=0.0 \
    actor_rollout_ref.actor.clip_ratio_low=${clip_ratio_low} \
    actor_rollout_ref.actor.clip_ratio_high=${clip_ratio_high} \
    actor_rollout_ref.actor.clip_ratio_c=10.0 \
    actor_rollout_ref.actor.loss_agg_mode=token-mean \
    actor_rollout_ref.actor.entropy_coeff=0 \
    actor_rollout_ref.actor.grad_clip=1.0 \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.optim.weight_decay=0 \
    actor_rollout_ref.actor.optim.lr_scheduler_type=constant \
    actor_rollout_ref.actor.ppo_mini_batch_size=${train_prompt_mini_bsz} \
    actor_rollout_ref.actor.use_dynamic_bsz=True \
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=${max_token} \
    actor_rollout_ref.actor.ulysses_sequence_parallel_size=1 \
    actor_rollout_ref.actor.fsdp_config.fsdp_size=-1 \
    actor_rollout_ref.actor.fsdp_config.param_offload=${OFFLOAD} \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=${OFFLOAD} \
    actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True \
    actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=${max_token} \
    actor_rollout_ref.ref.fsdp_config.param_offload=${OFFLOAD} \
    actor_rollout_ref.ref.ulysses_sequence_parallel_size=1 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=${n_resp_per_prompt} \
    actor_rollout_ref.rollout.tensor_model_parallel_size=${ROLLOUT_TP} \
    actor_rollout_ref.rollout.gpu_memory_utilization=${GPU_MEMORY_UTILIZATION} \
    actor_rollout_ref.rollout.enable_chunked_prefill=True \
    actor_rollout_ref.rollout.max_num_batched_tokens=${max_token} \
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True \
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=${max_token} \
    actor_rollout_ref.rollout.temperature=1.0 \
    actor_rollout_ref.rollout.top_p=1.0 \
    actor_rollout_ref.rollout.top_k=-1 \
    actor_rollout_ref.rollout.val_kwargs.temperature=1.0 \
    actor_rollout_ref.rollout.val_kwargs.top_p=1.0 \
    actor_rollout_ref.rollout.val_kwargs.top_k=-1 \
    actor_rollout_ref.rollout.val_kwargs.do_sample=False \
    actor_rollout_ref.rollout.val_kwargs.n=1 \
    reward.reward_manager.name=dapo \
    trainer.use_v1=True \
    trainer.logger="${LOGGER}" \
    trainer.project_name="${PROJECT_NAME}" \
    trainer.experiment_name="${EXP_NAME}" \
    trainer.n_gpus_per_node=${GPUS_PER_NODE} \
    trainer.nnodes=${NNODES} \
    trainer.val_before_train=False \
    trainer.test_freq=4 \
    trainer.save_freq=32 \
    trainer.total_epochs=1000 \
    trainer.default_local_dir="${CKPTS_DIR}" \
    trainer.resume_mode=disable \
    "$@"
