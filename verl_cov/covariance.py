"""Token-level covariance between log-probability and advantage (paper-notes, "Token-level covariance").

    Cov(y_i) = (log π(y_i) − mean_j log π(y_j)) · (A(y_i) − mean_j A(y_j))

over the valid (unmasked) response tokens of a batch. Pure torch; no verl import.
"""

from __future__ import annotations

import torch


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor, n_valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` holding ``n_valid`` tokens; 0 (not NaN) when there are none."""
    return torch.where(mask, values, 0).sum() / n_valid.clamp(min=1)


def token_covariance(log_prob: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token covariance term Cov(y_i), in float32, 0 at masked positions.

    Args:
        log_prob: (batch, response_len) log π(y_i); detached here, the statistic carries no gradient.
        advantages: (batch, response_len) A(y_i).
        mask: (batch, response_len) bool, True for valid response tokens.

    Returns:
        (batch, response_len) float32 tensor. Its mean over valid tokens is the covariance
        Cov(log π, A) of the batch (natural-policy-gradient form, paper Eq. for dH).
    """
    log_pi = log_prob.detach().float()
    adv = advantages.detach().float()
    n_valid = mask.sum()
    centred_log_pi = log_pi - masked_token_mean(log_pi, mask, n_valid)
    centred_adv = adv - masked_token_mean(adv, mask, n_valid)
    return torch.where(mask, centred_log_pi * centred_adv, 0)
