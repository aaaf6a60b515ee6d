"""The ``actor/cov/...`` metrics: the entropy mechanism of a micro-batch, and what a method selected.

Entropy change under a policy-gradient step follows the covariance between a token's log-probability
and its advantage (Cui et al. 2025, Sec. 3): dH ≈ −η·Cov(log π, π·A) for vanilla PG and
dH ≈ −η·Cov(log π, A) for natural PG. verl averages a loss's metrics over micro-batches and
data-parallel ranks, then reduces them over mini-batches by key name (``max``/``min`` in the name
-> max/min, else mean). Every call returns the same keys, each finite, in one device-to-host copy;
the statistics are taken over the valid tokens whose log π and A are finite.
"""

from __future__ import annotations

import math

import torch

from verl_cov.config import CovPolicyLossConfig
from verl_cov.covariance import TokenCovariance, finite_tokens, zero_outside
from verl_cov.scope import MiniBatchStatistics

UPPER_QUANTILE = 0.999  # near the share Clip-Cov and KL-Cov act on (k, r = 2e-4 .. 2e-3)


def mean_over(values: torch.Tensor, where: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over the bool mask ``where``, divided by ``count`` (0 when ``count`` is 0)."""
    return torch.where(where, values, 0).sum() / count.clamp(min=1)


def upper_tail(
    values: torch.Tensor, where: torch.Tensor, count: torch.Tensor, q: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-rank q-quantile (the ceil(q·N)-th smallest) and the max of ``values`` over ``where``.

    For q close to 1: one ``topk`` over a bound computed from the shape, so no sort of all tokens and
    no host sync. Both are 0 when ``count`` (the number of True in ``where``) is 0.
    """
    if values.numel() == 0:
        return values.new_zeros(()), values.new_zeros(())
    bound = min(values.numel(), math.floor((1 - q) * values.numel()) + 1)
    largest, _ = torch.where(where, values, -torch.inf).flatten().topk(bound)
    rank_from_top = (count - torch.ceil(q * count.double()).long()).clamp(0, bound - 1)
    has_values = count > 0
    quantile = largest.gather(0, rank_from_top.view(1)).squeeze(0)  # a gather: no host sync for the index
    return torch.where(has_values, quantile, 0.0), torch.where(has_values, largest[0], 0.0)


def mechanism_metrics(
    old_log_prob: torch.Tensor, mask: torch.Tensor, covariance: TokenCovariance
) -> dict[str, torch.Tensor]:
    """The entropy-mechanism statistics of one micro-batch, as 0-d tensors.

    Args:
        old_log_prob: (batch, response_len) log π_old.
        mask: (batch, response_len) bool valid tokens.
        covariance: ``token_covariance(log_prob, advantages, mask)``.
    """
    n = covariance.n_valid.clamp(min=1)
    # Cov(x, z) = mean((x − mean x)·z): centring one factor is enough, z = π·A (0 outside the scored tokens,
    # where the covariance's A is 0).
    pi_times_A = torch.exp(covariance.log_prob).mul_(covariance.advantage)
    quantile, maximum = upper_tail(covariance.cov, covariance.scored, covariance.n_valid, UPPER_QUANTILE)
    sampled = finite_tokens(mask, old_log_prob)
    n_sampled = torch.count_nonzero(sampled).clamp(min=1)
    return {
        "actor/cov/mean": covariance.cov.sum() / n,
        "actor/cov/pg_mean": pi_times_A.mul_(covariance.centred_log_prob).sum() / n,
        "actor/cov/p999": quantile,
        "actor/cov/max": maximum,
        "actor/cov/entropy_estimate": -zero_outside(old_log_prob, sampled.float()).sum() / n_sampled,
    }


def selection_metrics(covariance: TokenCovariance, selected: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a covariance method acted on: ``selected`` is its (batch, response_len) bool I_clip or I_KL; its
    share of the valid tokens, and the mean A and log π over those of them whose log π and A are finite."""
    scored = selected & covariance.scored
    weight, n_scored = scored.float(), torch.count_nonzero(scored).clamp(min=1)
    advantage_sum = weight.mul(covariance.advantage).sum()
    return {
        "actor/cov/selected_frac": torch.count_nonzero(selected) / covariance.n_valid.clamp(min=1),
        "actor/cov/selected_adv_mean": advantage_sum / n_scored,
        "actor/cov/selected_logp_mean": weight.mul_(covariance.log_prob).sum() / n_scored,  # weight's last use
    }


def control_metrics(
    config: CovPolicyLossConfig, stats: MiniBatchStatistics | None, with_beta: bool
) -> dict[str, float]:
    """The mini-batch statistics the loss used (``verl_cov.scope``), when it used any: the share
    selected, the measured entropy Ĥ (0 for a mini-batch without a valid token), KL-Cov's β
    (``with_beta``), and with a target: H* in force for this mini-batch, the tracking error Ĥ − H*, whether
    this mini-batch had to skip the target (both 0 then, and H* 0 while a relative one awaits Ĥ_0), and with
    κ_I > 0 the integral I (``verl_cov.controller``)."""
    if stats is None:
        return {}
    entropy = stats.entropy if math.isfinite(stats.entropy) else 0.0
    metrics = {"actor/cov/share": stats.control.share, "actor/cov/batch_entropy": entropy}
    if with_beta:
        metrics["actor/cov/beta"] = stats.control.beta
    if config.target_entropy is not None:
        target = stats.control.target if math.isfinite(stats.control.target) else 0.0
        metrics["actor/cov/target_entropy"] = target
        metrics["actor/cov/target_error"] = 0.0 if stats.control.skipped else entropy - target
        metrics["actor/cov/target_skipped"] = float(stats.control.skipped)
        if config.target_integral_gain > 0:
            metrics["actor/cov/target_integral"] = stats.control.integral
    return metrics


def to_floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Move every 0-d metric tensor to the host in one transfer."""
    values = torch.stack([value.detach().float().reshape(()) for value in metrics.values()]).tolist()
    return dict(zip(metrics, values, strict=True))
