"""The one module that touches verl: registry, config base class and aggregation helpers.

Everything version-specific lives here, so a verl upgrade changes this file only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, agg_loss, get_policy_loss_fn
from verl.workers.config import PolicyLossConfig

__all__ = ["PolicyLossConfig", "aggregate", "register_once", "vanilla_policy_loss"]


def register_once(name: str, loss_fn: Callable) -> None:
    """Add ``loss_fn`` to verl's policy-loss registry under ``name``; idempotent.

    Refuses to replace a different function already registered under ``name``, so verl's own
    modes (and anyone else's) are never overwritten.
    """
    registered = POLICY_LOSS_REGISTRY.setdefault(name, loss_fn)
    if (registered.__module__, registered.__qualname__) != (loss_fn.__module__, loss_fn.__qualname__):
        raise RuntimeError(f"verl-cov: policy loss {name!r} is already registered by {registered.__module__}")


def vanilla_policy_loss() -> Callable:
    """verl's own registered ``vanilla`` PPO policy loss."""
    return get_policy_loss_fn("vanilla")


def aggregate(loss_mat: torch.Tensor, mask: torch.Tensor, loss_agg_mode: str, global_batch_info: dict) -> torch.Tensor:
    """verl's ``agg_loss`` with the micro-batch's global-batch info, finite on an all-masked micro-batch.

    Without global-batch info (a single process calling the loss directly) verl divides by the local
    token or sequence count, which is 0 when every token is masked; that denominator is clamped to 1
    here, which changes nothing when it is >= 1.
    """
    info = dict(global_batch_info)
    if info.get("dp_size", 1) <= 1:
        if info.get("batch_num_tokens") is None:
            info["batch_num_tokens"] = mask.sum().clamp(min=1)
        if info.get("global_batch_size") is None:
            info["global_batch_size"] = (mask.sum(dim=-1) > 0).sum().clamp(min=1)
    return agg_loss(loss_mat=loss_mat, loss_mask=mask, loss_agg_mode=loss_agg_mode, **info)
