"""Clip-Cov and KL-Cov policy losses (Cui et al. 2025, Sec. 4), in verl's policy-loss signature.

Both score each valid token by Cov(y_i) = (log π(y_i) − mean log π)(A(y_i) − mean A) and act on a small
share of the tokens: Clip-Cov cuts the gradient of a random share of those with Cov in [ω_low, ω_high],
KL-Cov adds β·|log π − log π_old| to the top share by Cov. Arguments are (batch, response_len) tensors;
the loss is aggregated with verl's ``agg_loss`` and the micro-batch's global-batch info.
"""

from __future__ import annotations

from typing import Any

import torch

from verl_cov import scope
from verl_cov.compat import aggregate, vanilla_policy_loss
from verl_cov.config import CLIP_COV, GLOBAL, KL_COV, settings
from verl_cov.controller import configured
from verl_cov.covariance import token_covariance
from verl_cov.metrics import control_metrics, mean_over, mechanism_metrics, selection_metrics, to_floats
from verl_cov.selection import batch_draw, random_candidates, salt_of, stochastic_count, top_k_tokens

# verl's vanilla PPO clamps the log-ratio to the same range so that exp() stays finite.
LOG_RATIO_BOUND = 20.0


def compute_policy_loss_clip_cov(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clip-Cov, paper Eq. 11:  J(θ) = E_t[ min(r_t A_t, clip(r_t, 1−ε_low, 1+ε_high) A_t) ] for t ∉ I_clip,
    and 0 for t ∈ I_clip, where I_clip holds r·N tokens drawn uniformly among Cov(y_t) ∈ [ω_low, ω_high].

    As in the authors' code, tokens the ratio clip already cut (no gradient either way) are not
    candidates, so the budget r·N goes to tokens whose gradient would otherwise flow. With
    ``selection_scope=global`` the candidates (Cov_old in [ω_low, ω_high]; the ratio clip is only known
    after the forward) and the draw come from the whole mini-batch (``verl_cov.scope``); with an entropy
    target r and [ω_low, ω_high] come from the controller.
    """
    cfg = settings(config.policy_loss)
    stats = scope.current(cfg)
    r, _, lb, ub, _ = stats.control if stats else configured(cfg.clip_cov_ratio, cfg)
    mask = response_mask.bool()
    A = advantages.float()
    log_ratio = (log_prob.float() - old_log_prob.float()).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    ratio = torch.exp(log_ratio)
    eps_low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    eps_high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio

    unclipped = -A * ratio
    clipped = -A * ratio.clamp(1 - eps_low, 1 + eps_high)
    ratio_clipped = (clipped > unclipped) & mask
    pg_losses = torch.maximum(unclipped, clipped)

    covariance = token_covariance(log_prob, advantages, mask)
    cov = covariance.cov
    if cfg.selection_scope == GLOBAL:
        I_clip, candidates = scope.selected_tokens(CLIP_COV, old_log_prob, advantages, mask, stats)
    else:
        candidates = covariance.scored & ~ratio_clipped & (cov >= lb) & (cov <= ub)
        salt = salt_of(cfg.seed)
        count = stochastic_count(r, covariance.scored, batch_draw(old_log_prob, advantages, covariance.scored, salt))
        I_clip = random_candidates(candidates, count, r, old_log_prob, advantages, salt)
    pg_losses = torch.where(I_clip, 0.0, pg_losses)

    pg_loss = aggregate(pg_losses, mask, loss_agg_mode, config, rollout_is_weights)

    n_valid = covariance.n_valid.clamp(min=1)
    metrics = {
        "actor/pg_clipfrac": ratio_clipped.sum() / mask.sum().clamp(min=1),
        "actor/ppo_kl": mean_over(-log_ratio, mask, mask.sum()),
        **mechanism_metrics(log_prob, old_log_prob, advantages, mask, covariance),
        **selection_metrics(log_prob, advantages, covariance.n_valid, I_clip),
        "actor/cov/candidate_frac": candidates.sum() / n_valid,
    }
    return pg_loss, {**to_floats(metrics), **control_metrics(cfg, stats, with_beta=False)}


def compute_policy_loss_kl_cov(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """KL-Cov, paper Eq. 12:  J(θ) = E_t[ r_t A_t ] for t ∉ I_KL and E_t[ r_t A_t − β·D_KL(π_old(y_t) ‖ π(y_t)) ]
    for t ∈ I_KL, where I_KL holds the top k·N tokens by Cov(y_t) and D_KL = |log π(y_t) − log π_old(y_t)|.

    There is no ratio clip. On a fully on-policy update (log π = log π_old) the KL term and its
    gradient are zero; it acts from the second mini-batch or PPO epoch of a rollout batch on. The
    log-ratio inside D_KL is bounded to ±20 like the one inside r_t, so a token sampled with
    log π = −inf gives a finite loss. With ``selection_scope=global`` I_KL is the top k·N of the whole
    mini-batch (``verl_cov.scope``); with an entropy target k (and optionally β) come from the controller.
    """
    cfg = settings(config.policy_loss)
    stats = scope.current(cfg)
    k, beta, _, _, _ = stats.control if stats else configured(cfg.kl_cov_ratio, cfg)
    mask = response_mask.bool()
    A = advantages.float()
    log_ratio = (log_prob.float() - old_log_prob.float()).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    ratio = torch.exp(log_ratio)
    D_KL = log_ratio.abs()

    covariance = token_covariance(log_prob, advantages, mask)
    if cfg.selection_scope == GLOBAL:
        I_KL, _ = scope.selected_tokens(KL_COV, old_log_prob, advantages, mask, stats)
    else:
        u = batch_draw(old_log_prob, advantages, covariance.scored, salt_of(cfg.seed))
        count = stochastic_count(k, covariance.scored, u)
        I_KL = top_k_tokens(covariance.cov, covariance.scored, count, k)
    pg_losses = -A * ratio + torch.where(I_KL, beta * D_KL, 0.0)

    pg_loss = aggregate(pg_losses, mask, loss_agg_mode, config, rollout_is_weights)

    metrics = {
        "actor/ppo_kl": mean_over(-log_ratio, mask, mask.sum()),
        **mechanism_metrics(log_prob, old_log_prob, advantages, mask, covariance),
        **selection_metrics(log_prob, advantages, covariance.n_valid, I_KL),
        "actor/cov/selected_kl_mean": mean_over(D_KL.detach(), I_KL, I_KL.sum()),
    }
    return pg_loss, {**to_floats(metrics), **control_metrics(cfg, stats, with_beta=True)}


def compute_policy_loss_vanilla_with_cov_metrics(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl's own ``vanilla`` PPO objective, untouched, plus the ``actor/cov/`` mechanism metrics,
    so a GRPO/PPO baseline run logs the same entropy-mechanism statistics as Clip-Cov and KL-Cov."""
    pg_loss, pg_metrics = vanilla_policy_loss()(
        old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights
    )
    mask = response_mask.bool()
    covariance = token_covariance(log_prob, advantages, mask)
    metrics = mechanism_metrics(log_prob, old_log_prob, advantages, mask, covariance)
    return pg_loss, {**to_floats(metrics), **pg_metrics}
