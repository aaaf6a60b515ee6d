"""The one module that touches verl's API: version check, registry, config base class, aggregation.

Supported: verl 0.6.1 to 0.9.x. Up to 0.7.1 verl's FSDP actor calls the policy loss from
``workers/actor/dp_actor.py``; from 0.8.0 from ``workers/utils/losses.py::ppo_loss``. Both call it
with the same signature, so the only differences handled here are ``agg_loss`` (global-batch
arguments from 0.7) and ``ActorConfig.global_batch_info`` (from 0.7).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import verl
from packaging.version import Version

SUPPORTED = ">=0.6.1,<0.10"
OLDEST, NEWEST_EXCLUDED = Version("0.6.1"), Version("0.10")


def check_version(installed: str) -> None:
    """ImportError naming the installed and supported versions when verl is outside ``SUPPORTED``."""
    if not OLDEST <= Version(installed) < NEWEST_EXCLUDED:
        raise ImportError(f"verl-cov supports verl {SUPPORTED}; verl {installed} is installed")


check_version(verl.__version__)

try:
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, agg_loss, get_policy_loss_fn
    from verl.workers.config import PolicyLossConfig
except ImportError as error:  # the loss contract moved: a verl this module does not know
    raise ImportError(
        f"verl-cov supports verl {SUPPORTED}; verl {verl.__version__} lacks the policy-loss API ({error})"
    ) from error

__all__ = ["HAS_ENGINE_TRAIN_BATCH", "PolicyLossConfig", "aggregate", "register_once", "vanilla_policy_loss"]

# verl 0.6 aggregates over the micro-batch only; 0.7+ takes the global-batch normalisers.
AGG_LOSS_TAKES_GLOBAL_BATCH = "batch_num_tokens" in inspect.signature(agg_loss).parameters

# verl >= 0.8 trains through engine workers: one BaseEngine.train_batch call per mini-batch and rank,
# which ``verl_cov.engine_hook`` wraps. Imported there, on demand: importing verl's engines warns about
# every optional backend that is missing.
HAS_ENGINE_TRAIN_BATCH = Version(verl.__version__) >= Version("0.8")


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


def aggregate(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    loss_agg_mode: str,
    config,
    rollout_is_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weight each token's loss by ``rollout_is_weights`` (if given) and aggregate it, as verl's own
    losses do: verl's ``agg_loss`` with the micro-batch's global-batch info, finite on an all-masked
    micro-batch.

    Without global-batch info (a single process calling the loss directly, or verl's legacy actor)
    verl divides by the local token or sequence count, which is 0 when every token is masked; that
    denominator is clamped to 1 here, which changes nothing when it is >= 1.
    """
    if rollout_is_weights is not None:
        loss_mat = loss_mat * rollout_is_weights
    if not AGG_LOSS_TAKES_GLOBAL_BATCH:
        return agg_loss(loss_mat=loss_mat, loss_mask=mask, loss_agg_mode=loss_agg_mode)
    info = dict(getattr(config, "global_batch_info", None) or {})
    if info.get("dp_size", 1) <= 1:
        if info.get("batch_num_tokens") is None:
            info["batch_num_tokens"] = mask.sum().clamp(min=1)
        if info.get("global_batch_size") is None:
            info["global_batch_size"] = (mask.sum(dim=-1) > 0).sum().clamp(min=1)
    return agg_loss(loss_mat=loss_mat, loss_mask=mask, loss_agg_mode=loss_agg_mode, **info)
