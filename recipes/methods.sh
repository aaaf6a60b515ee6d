#!/usr/bin/env bash
# The three methods' policy-loss settings (Cui et al. 2025, Sec. 4 and its recipe), selected by METHOD;
# sourced by the recipes.
PL=actor_rollout_ref.actor.policy_loss
case "$METHOD" in
  grpo)      # verl's vanilla PPO-clip loss (bit-identical) plus the actor/cov/ metrics
    METHOD_ARGS=("$PL.loss_mode=verl_cov.vanilla" actor_rollout_ref.actor.clip_ratio_low=0.2
                 actor_rollout_ref.actor.clip_ratio_high=0.2) ;;
  clip_cov)  # r = 2e-4, omega = [1, 5]; the ratio clip widened to 1 so Clip-Cov does the clipping
    METHOD_ARGS=("$PL.loss_mode=verl_cov.clip_cov" "$PL.clip_cov_ratio=0.0002" "$PL.clip_cov_lb=1.0"
                 "$PL.clip_cov_ub=5.0" actor_rollout_ref.actor.clip_ratio_low=1.0
                 actor_rollout_ref.actor.clip_ratio_high=1.0 "$PL.seed=${SEED:-0}") ;;
  kl_cov)    # k = KL_COV_RATIO (2e-3 for 7B, 2e-4 for 32B), beta = 1, no ratio clip
    METHOD_ARGS=("$PL.loss_mode=verl_cov.kl_cov" "$PL.kl_cov_ratio=$KL_COV_RATIO" "$PL.ppo_kl_coef=1.0"
                 "$PL.seed=${SEED:-0}") ;;
  *) echo "unknown METHOD=$METHOD (grpo, clip_cov, kl_cov)" >&2; exit 2 ;;
esac
