"""verl's API as verl-cov uses it: version rule, registry lookup, config base class, aggregation (the plugin
adds the modes to the registry itself: verl may import it while this module is half-imported).

Up to 0.7.1 verl's FSDP actor calls the policy loss from ``workers/actor/dp_actor.py``; from 0.8.0 from
``workers/utils/losses.py::ppo_loss``. Both call it with the same signature, so the only differences
handled here are ``agg_loss`` (global-batch arguments from 0.7), ``ActorConfig.global_batch_info``
(from 0.7), the engine workers' ``train_batch`` (from 0.8) and plugin discovery (from 0.9).
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable

import torch
import verl
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from verl_cov.names import ENGINE_WORKERS_SINCE

# The one verl rule, also the requirement in pyproject.toml (a test keeps them equal): pip never
# replaces a newer verl the user installed, and the import refuses only what cannot work.
REQUIRES_VERL = ">=0.6.1"
TESTED = ">=0.6.1,<0.10"  # CI runs 0.9.1 and 0.7.1; 0.6.1 and 0.8.0 by hand
VERL = Version(verl.__version__)


def check_version(installed: str) -> None:
    """ImportError below ``REQUIRES_VERL``; a warning for a verl newer than the tested range."""
    version = Version(installed)
    if version not in SpecifierSet(REQUIRES_VERL, prereleases=True):
        raise ImportError(f"verl-cov needs verl {REQUIRES_VERL}; verl {installed} is installed")
    if not SpecifierSet(TESTED).contains(version, prereleases=True):
        warnings.warn(f"verl-cov is tested on verl {TESTED}; verl {installed} is newer and untested", stacklevel=2)


check_version(verl.__version__)

try:
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, agg_loss, get_policy_loss_fn
    from verl.workers.config import PolicyLossConfig
except ImportError as error:  # the loss contract moved: a verl this module does not know
    raise ImportError(f"verl-cov: verl {verl.__version__} lacks the policy-loss API it plugs into ({error})") from error

__all__ = [
    "HAS_ENGINE_TRAIN_BATCH",
    "PolicyLossConfig",
    "aggregate",
    "plugin_loading_hint",
    "registered_policy_losses",
    "vanilla_policy_loss",
]

# verl 0.6 aggregates over the micro-batch only; 0.7+ takes the global-batch normalisers.
AGG_LOSS_TAKES_GLOBAL_BATCH = "batch_num_tokens" in inspect.signature(agg_loss).parameters

# verl >= 0.8 trains through engine workers: one BaseEngine.train_batch call per mini-batch and rank,
# which ``verl_cov.engine_adapter`` wraps.
HAS_ENGINE_TRAIN_BATCH = VERL >= Version(ENGINE_WORKERS_SINCE)

# verl >= 0.9 imports every installed ``verl.plugins`` entry point on ``import verl``, in every process.
HAS_ENTRY_POINTS = VERL >= Version("0.9")
PLUGIN = "verl_cov.plugin"
EXTERNAL_LIB = f"actor_rollout_ref.model.external_lib={PLUGIN}"


def registered_policy_losses() -> list[str]:
    return list(POLICY_LOSS_REGISTRY)


def plugin_loading_hint() -> str | None:
    """Why verl-cov's modes are missing in a process that should have them, and the fix; None where verl
    loads plugins only in the workers (verl < 0.9: ``external_lib``), so the driver cannot tell."""
    if not HAS_ENTRY_POINTS:
        return None
    policy = os.environ.get("VERL_USE_EXTERNAL_PLUGINS", "auto").strip().lower()
    if policy == "none":
        cause = "VERL_USE_EXTERNAL_PLUGINS=none switches verl's plugin discovery off"
    elif policy != "auto" and "verl_cov" not in {name.strip() for name in policy.split(",")}:
        cause = f"VERL_USE_EXTERNAL_PLUGINS={policy} leaves verl_cov out"
    else:
        cause = "verl could not import its verl.plugins entry point (see the warning above)"
    return f"verl-cov's plugin did not load ({cause}). Add verl_cov to that list, or set {EXTERNAL_LIB}."


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
