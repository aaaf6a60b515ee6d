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
from verl_cov.covariance import TokenCovariance, finite_tokens
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
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    covariance: TokenCovariance,
) -> dict[str, torch.Tensor]:
    """The entropy-mechanism statistics of one micro-batch, as 0-d tensors.

    Args:
        log_prob, old_log_prob, advantages: (batch, response_len) log π, log π_old and A.
        mask: (batch, response_len) bool valid tokens.
        covariance: ``token_covariance(log_prob, advantages, mask)``.
    """
    cov, centred_log_prob, scored, n_valid = covariance
    n = n_valid.clamp(min=1)
    # Cov(x, z) = mean((x − mean x)·z): centring one factor is enough, z = π·A.
    pi_times_A = torch.where(scored, torch.exp(log_prob.detach().float()) * advantages.float(), 0.0)
    quantile, maximum = upper_tail(cov, scored, n_valid, UPPER_QUANTILE)
    sampled = finite_tokens(mask, old_log_prob)
    return {
        "actor/cov/mean": cov.sum() / n,
        "actor/cov/pg_mean": (centred_log_prob * pi_times_A).sum() / n,
        "actor/cov/p999": quantile,
        "actor/cov/max": maximum,
        "actor/cov/entropy_estimate": mean_over(-old_log_prob.float(), sampled, sampled.sum()),
    }


def selection_metrics(
    log_prob: torch.Tensor, advantages: torch.Tensor, n_valid: torch.Tensor, selected: torch.Tensor
) -> dict[str, torch.Tensor]:
    """What a covariance method acted on: ``selected`` is its (batch, response_len) bool I_clip or I_KL,
    out of ``n_valid`` valid tokens (``TokenCovariance.n_valid``)."""
    n_selected = selected.sum()
    return {
        "actor/cov/selected_frac": n_selected / n_valid.clamp(min=1),
        "actor/cov/selected_adv_mean": mean_over(advantages.detach().float(), selected, n_selected),
        "actor/cov/selected_logp_mean": mean_over(log_prob.detach().float(), selected, n_selected),
    }


def control_metrics(
    config: CovPolicyLossConfig, stats: MiniBatchStatistics | None, with_beta: bool
) -> dict[str, float]:
    """The mini-batch statistics the loss used (``verl_cov.scope``), when it used any: the share
    selected, the measured entropy Ĥ (0 for a mini-batch without a valid token), KL-Cov's β
    (``with_beta``), and with a target H* and whether this mini-batch had to skip it."""
    if stats is None:
        return {}
    entropy = stats.entropy if math.isfinite(stats.entropy) else 0.0
    metrics = {"actor/cov/share": stats.control.share, "actor/cov/batch_entropy": entropy}
    if with_beta:
        metrics["actor/cov/beta"] = stats.control.beta
    if config.target_entropy is not None:
        metrics["actor/cov/target_entropy"] = config.target_entropy
        metrics["actor/cov/target_skipped"] = float(stats.control.skipped)
    return metrics


def to_floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Move every 0-d metric tensor to the host in one transfer."""
    values = torch.stack([value.detach().float().reshape(()) for value in metrics.values()]).tolist()
    return dict(zip(metrics, values, strict=True))
