"""The ``actor/cov/...`` metrics a verl-cov loss returns: what was selected and why.

verl averages a loss's metrics over micro-batches and data-parallel ranks, then reduces them over
mini-batches by key name (``max``/``min`` in the name -> max/min, else mean). Every call returns the
same keys, each a finite float, with a single device-to-host transfer.
"""

from __future__ import annotations

import torch

from verl_cov.compat import masked_mean


def selection_metrics(
    cov: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    selected: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Covariance and selected-set statistics of one micro-batch, as 0-d tensors.

    Args:
        cov: (batch, response_len) token covariance, 0 at masked positions.
        log_prob, advantages: (batch, response_len) log π and A.
        mask: (batch, response_len) bool valid tokens.
        selected: (batch, response_len) bool tokens the method acted on (I_clip or I_KL).
    """
    has_tokens = mask.any()
    return {
        "actor/cov/mean": masked_mean(cov, mask),
        "actor/cov/max": torch.where(has_tokens, torch.where(mask, cov, -torch.inf).amax(), 0.0),
        "actor/cov/selected_frac": masked_mean(selected.float(), mask),
        "actor/cov/selected_adv_mean": masked_mean(advantages.detach().float(), selected),
        "actor/cov/selected_logp_mean": masked_mean(log_prob.detach().float(), selected),
    }


def to_floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Move every 0-d metric tensor to the host in one transfer."""
    values = torch.stack([value.detach().float().reshape(()) for value in metrics.values()]).tolist()
    return dict(zip(metrics, values, strict=True))
