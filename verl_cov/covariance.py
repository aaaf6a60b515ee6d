"""Token-level covariance between log-probability and advantage (paper Sec. 3, Eq. 4 at the token level).

    Cov(y_i) = (log π(y_i) − mean_j log π(y_j)) · (A(y_i) − mean_j A(y_j))

over the valid response tokens of a batch. Pure torch; no verl import.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class TokenCovariance(NamedTuple):
    """Per-token covariance terms of a (batch, response_len) micro-batch, float32, 0 outside ``scored``.

    Attributes:
        cov: Cov(y_i); its mean over the scored tokens is the batch covariance Cov(log π, A).
        centred_log_prob: log π(y_i) − mean_j log π(y_j), detached.
        log_prob: log π(y_i), detached.
        advantage: A(y_i).
        scored: bool, the valid tokens whose log π and A are finite: the statistic is taken over these
            (a token sampled with log π = −inf, or a non-finite advantage, has no covariance).
        n_valid: 0-d count of ``scored`` tokens.
    """

    cov: torch.Tensor
    centred_log_prob: torch.Tensor
    log_prob: torch.Tensor
    advantage: torch.Tensor
    scored: torch.Tensor
    n_valid: torch.Tensor


def finite_tokens(mask: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
    """``mask`` restricted to the positions where every tensor of ``values`` is finite."""
    for value in values:
        mask = mask & (value.detach().abs() < torch.inf)  # isfinite's answer (NaN compares False), a cheaper kernel
    return mask


def zero_outside(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``torch.where(weight > 0, values, 0)`` in float32 for ``weight`` the 0/1 float mask of positions where
    ``values`` is finite: non-finite values become 0 first, so the product is exact (x·1 = x, finite·0 = 0),
    and two float kernels cost a fifth of a ``where`` on a bool mask on the CPU."""
    return torch.nan_to_num(values.detach().float(), nan=0.0, posinf=0.0, neginf=0.0).mul_(weight)


def token_covariance(log_prob: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> TokenCovariance:
    """Cov(y_i) for every token. The log-probability is detached: the statistic carries no gradient.

    Args:
        log_prob: (batch, response_len) log π(y_i).
        advantages: (batch, response_len) A(y_i).
        mask: (batch, response_len) bool, True for valid response tokens.
    """
    scored = finite_tokens(mask, log_prob, advantages)
    weight = scored.float()
    n_valid = torch.count_nonzero(scored)  # a bool sum would first copy the mask to int64
    n = n_valid.clamp(min=1)
    log_prob, advantage = zero_outside(log_prob, weight), zero_outside(advantages, weight)
    # In place on fresh tensors: on the CPU each new 1 MB temporary costs more in page faults than its kernel.
    centred_log_prob = (log_prob - log_prob.sum() / n).mul_(weight)
    # centred_log_prob is 0 outside ``scored``, so the centred advantage needs no mask there
    cov = (advantage - advantage.sum() / n).mul_(centred_log_prob)
    return TokenCovariance(cov, centred_log_prob, log_prob, advantage, scored, n_valid)
