"""Token-level covariance between log-probability and advantage (paper-notes, "Token-level covariance").

    Cov(y_i) = (log π(y_i) − mean_j log π(y_j)) · (A(y_i) − mean_j A(y_j))

over the valid (unmasked) response tokens of a batch. Pure torch; no verl import.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class TokenCovariance(NamedTuple):
    """Per-token covariance terms of a (batch, response_len) micro-batch, float32, 0 at masked positions.

    Attributes:
        cov: Cov(y_i); its mean over valid tokens is the batch covariance Cov(log π, A).
        centred_log_prob: log π(y_i) − mean_j log π(y_j), detached.
        n_valid: 0-d count of valid tokens.
    """

    cov: torch.Tensor
    centred_log_prob: torch.Tensor
    n_valid: torch.Tensor


def centred(values: torch.Tensor, mask: torch.Tensor, n_valid: torch.Tensor) -> torch.Tensor:
    """``values`` minus their mean over ``mask`` (``n_valid`` tokens), in float32, 0 at masked positions."""
    masked = torch.where(mask, values.detach().float(), 0)
    return torch.where(mask, masked - masked.sum() / n_valid.clamp(min=1), 0)


def token_covariance(log_prob: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> TokenCovariance:
    """Cov(y_i) for every token. The log-probability is detached: the statistic carries no gradient.

    Args:
        log_prob: (batch, response_len) log π(y_i).
        advantages: (batch, response_len) A(y_i).
        mask: (batch, response_len) bool, True for valid response tokens.
    """
    n_valid = mask.sum()
    centred_log_prob = centred(log_prob, mask, n_valid)
    return TokenCovariance(centred_log_prob * centred(advantages, mask, n_valid), centred_log_prob, n_valid)
