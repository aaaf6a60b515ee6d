"""verl-cov's policy losses, in verl's policy-loss signature: Clip-Cov and KL-Cov (Cui et al. 2025, Sec. 4),
the 80/20 rule (Wang et al. 2025) and verl's vanilla objective with the covariance metrics.

Clip-Cov and KL-Cov score each valid token by Cov(y_i) = (log π(y_i) − mean log π)(A(y_i) − mean A) and
act on a small share of the tokens: Clip-Cov cuts the gradient of a random share of those with Cov in
[ω_low, ω_high], KL-Cov adds β·|log π − log π_old| to the top share by Cov; each is one entry of the
table in ``verl_cov.methods``, run by ``covariance_policy_loss``. Arguments are (batch, response_len)
tensors; the loss is aggregated with verl's ``agg_loss`` and the micro-batch's global-batch info.
"""

from __future__ import annotations

from typing import Any

import torch

from verl_cov import scope, token_entropy
from verl_cov.compat import aggregate, vanilla_policy_loss
from verl_cov.config import CLIP_COV, GLOBAL, KL_COV, settings
from verl_cov.controller import configured
from verl_cov.covariance import token_covariance
from verl_cov.methods import METHODS, RANDOM, Method, Terms
from verl_cov.metrics import control_metrics, mean_over, mechanism_metrics, selection_metrics, to_floats
from verl_cov.selection import batch_draw, random_candidates, salt_of, stochastic_count, top_k_tokens

# verl's vanilla PPO clamps the log-ratio to the same range so that exp() stays finite.
LOG_RATIO_BOUND = 20.0


def covariance_policy_loss(
    method: Method,
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str,
    config: Any,
    rollout_is_weights: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One entry of the methods table as a verl policy loss: score every valid token by Cov(y_t), select
    the method's share (``verl_cov.scope`` in global scope, else this micro-batch), apply the method to the
    selected tokens, and aggregate with verl's ``agg_loss``. With ``forking_share`` (the 80/20 rule) only the
    forking tokens keep their term, and the method selects among them: its share of the N valid tokens is
    spent where the gradient flows."""
    cfg = settings(config.policy_loss)
    stats = scope.current(cfg)
    control = stats.control if stats else configured(getattr(cfg, method.ratio_key), cfg)
    mask = response_mask.bool()
    log_ratio = (log_prob.float() - old_log_prob.float()).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    terms = Terms(advantages.float(), torch.exp(log_ratio), log_ratio, mask, config, control)
    objective = method.objective(terms)

    covariance = token_covariance(log_prob, advantages, mask)
    forking = token_entropy.forking_tokens(cfg, mask)
    if cfg.selection_scope == GLOBAL:
        eligible = mask if forking is None else mask & forking
        selected, candidates = scope.selected_tokens(method.name, old_log_prob, advantages, eligible, stats)
    else:
        candidates = covariance.scored if forking is None else covariance.scored & forking
        if objective.ineligible is not None:
            candidates = candidates & ~objective.ineligible
        if method.banded:
            candidates = candidates & (covariance.cov >= control.clip_cov_lb) & (covariance.cov <= control.clip_cov_ub)
        salt = salt_of(cfg.seed)
        count = stochastic_count(
            control.share, covariance.scored, batch_draw(old_log_prob, advantages, covariance.scored, salt)
        )
        if method.ranking == RANDOM:
            selected = random_candidates(candidates, count, control.share, old_log_prob, advantages, salt)
        else:
            selected = top_k_tokens(covariance.cov, candidates, count, control.share)
    pg_losses = method.act(terms, objective.loss, selected)
    if forking is not None:
        pg_losses = torch.where(forking, pg_losses, 0.0)
    pg_loss = aggregate(pg_losses, mask, loss_agg_mode, config, rollout_is_weights)

    metrics = {
        **objective.metrics,
        "actor/ppo_kl": -mean_over(log_ratio.detach(), mask, torch.count_nonzero(mask)),  # mean(log π_old − log π)
        **mechanism_metrics(old_log_prob, mask, covariance),
        **selection_metrics(covariance, selected),
        **method.selected_metrics(terms, selected),
        **token_entropy.forking_metrics(forking, mask),
    }
    if method.banded:
        metrics["actor/cov/candidate_frac"] = torch.count_nonzero(candidates) / covariance.n_valid.clamp(min=1)
    return pg_loss, {**to_floats(metrics), **control_metrics(cfg, stats, with_beta=method.has_beta)}


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
    return covariance_policy_loss(
        METHODS[CLIP_COV], old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights
    )


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
    return covariance_policy_loss(
        METHODS[KL_COV], old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights
    )


def compute_policy_loss_forking(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The 80/20 rule (Wang et al. 2025, arXiv 2506.01939): verl's own vanilla PPO objective with the
    policy gradient only for the forking tokens, the top ρ share of the valid tokens by entropy H_t:

        J(θ) = E_t[ 1[H_t ≥ τ_ρ] · min(r_t A_t, clip(r_t, 1−ε_low, 1+ε_high) A_t) ]

    with τ_ρ the ⌈ρ·N⌉-th largest H_t of the micro-batch (dual-clip and the rest as in verl's ``vanilla``).
    Every other token's advantage is set to 0, so it adds 0 to the loss and its gradient but still counts
    in the aggregation's denominator, as TRL's ``top_entropy_quantile`` masks the per-token loss. H_t is the
    entropy of π_θ from verl's update forward (``verl_cov.token_entropy``).
    """
    cfg = settings(config.policy_loss)
    mask = response_mask.bool()
    forking = token_entropy.forking_tokens(cfg, mask)
    pg_loss, pg_metrics = vanilla_policy_loss()(
        old_log_prob,
        log_prob,
        torch.where(forking, advantages, 0.0),
        response_mask,
        loss_agg_mode,
        config,
        rollout_is_weights,
    )
    covariance = token_covariance(log_prob, advantages, mask)
    metrics = {
        **mechanism_metrics(old_log_prob, mask, covariance),
        **token_entropy.forking_metrics(forking, mask),
    }
    return pg_loss, {**to_floats(metrics), **pg_metrics}


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
    metrics = mechanism_metrics(old_log_prob, mask, covariance)
    return pg_loss, {**to_floats(metrics), **pg_metrics}
