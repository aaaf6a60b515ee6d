"""The ``actor/cov/...`` metrics a verl-cov loss returns: what was selected and why.

verl averages a loss's metrics over micro-batches and data-parallel ranks, then reduces them over
mini-batches by key name (``max``/``min`` in the name -> max/min, else mean). Every call returns the
same keys, each a finite float, with a single device-to-host transfer.
"""

from __future__ import annotations

import torch


def mean_over(values: torch.Tensor, where: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over the bool mask ``where``, divided by ``count`` (0 when ``count`` is 0)."""
    return torch.where(where, values, 0).sum() / count.clamp(min=1)


def masked_max(values: torch.Tensor, where: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Max of ``values`` over ``where``; 0 when ``count`` (the number of True) is 0."""
    if values.numel() == 0:
        return values.new_zeros(())
    return torch.where(count > 0, torch.where(where, values, -torch.inf).amax(), 0.0)


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
    n_valid, n_selected = mask.sum(), selected.sum()
    return {
        "actor/cov/mean": cov.sum() / n_valid.clamp(min=1),
        "actor/cov/max": masked_max(cov, mask, n_valid),
        "actor/cov/selected_frac": n_selected / n_valid.clamp(min=1),
        "actor/cov/selected_adv_mean": mean_over(advantages.detach(), selected, n_selected),
        "actor/cov/selected_logp_mean": mean_over(log_prob.detach(), selected, n_selected),
    }


def to_floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Move every 0-d metric tensor to the host in one transfer."""
    values = torch.stack([value.detach().float().reshape(()) for value in metrics.values()]).tolist()
    return dict(zip(metrics, values, strict=True))
