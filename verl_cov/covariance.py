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
        scored: bool, the valid tokens whose log π and A are finite: the statistic is taken over these
            (a token sampled with log π = −inf, or a non-finite advantage, has no covariance).
        n_valid: 0-d count of ``scored`` tokens.
    """

    cov: torch.Tensor
    centred_log_prob: torch.Tensor
    scored: torch.Tensor
    n_valid: torch.Tensor


def finite_tokens(mask: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
    """``mask`` restricted to the positions where every tensor of ``values`` is finite."""
    for value in values:
        mask = mask & torch.isfinite(value.detach())
    return mask


def centred(values: torch.Tensor, mask: torch.Tensor, n_valid: torch.Tensor) -> torch.Tensor:
    """``values`` minus their mean over ``mask`` (``n_valid`` tokens), in float32, 0 outside ``mask``."""
    masked = torch.where(mask, values.detach().float(), 0)
    return torch.where(mask, masked - masked.sum() / n_valid.clamp(min=1), 0)


def token_covariance(log_prob: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> TokenCovariance:
    """Cov(y_i) for every token. The log-probability is detached: the statistic carries no gradient.

    Args:
        log_prob: (batch, response_len) log π(y_i).
        advantages: (batch, response_len) A(y_i).
        mask: (batch, response_len) bool, True for valid response tokens.
    """
    scored = finite_tokens(mask, log_prob, advantages)
    n_valid = scored.sum()
    centred_log_prob = centred(log_prob, scored, n_valid)
    cov = centred_log_prob * centred(advantages, scored, n_valid)
    return TokenCovariance(cov, centred_log_prob, scored, n_valid)
