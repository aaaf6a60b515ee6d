"""The per-token entropy H_t of the policy being trained, and the 80/20 rule's forking tokens
(Wang et al. 2025, arXiv 2506.01939): the top ρ share of a micro-batch's valid tokens by H_t.

verl's policy-loss signature carries no entropy, but verl's update forward computes it (the engine's
``calculate_entropy``). ``verl_cov.engine_adapter`` asks the engine for it when the policy loss needs it
and makes each micro-batch's H_t the ``active`` one while verl's ``ppo_loss`` runs; the study does the
same around its own forward. Which policy: π_θ of the update forward, as TRL's ``top_entropy_quantile``
uses — the entropy of the policy the gradient moves, known for exactly the tokens
of the micro-batch (equal to π_old's on the first mini-batch of a rollout batch). verl's old-log-prob pass
computes π_old's entropy too, but the trainer drops it before the update.

Where the quantile is taken (``selection_scope``): over each micro-batch, or (``global``) over the whole
mini-batch on all data-parallel ranks. verl steps the optimizer once per mini-batch, so every micro-batch's
update forward sees the same parameters, and π_θ's H_t at all the mini-batch's tokens is known before its
first micro-batch from one forward without gradient, in eval mode (the engine adapter runs it).
``mini_batch_threshold`` then finds the ⌈ρ·N⌉-th largest H_t of the N valid tokens on all ranks with the
histogram collectives of ``verl_cov.collective``, no token gathered; each micro-batch keeps its tokens at or
above it, reading the H_t of that same forward, so the forking set is exact and the same however the
mini-batch is split.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch
import torch.distributed as dist

from verl_cov.collective import NO_KEY, all_reduce_sum, collective_device, kth_largest_key, ordered_keys
from verl_cov.config import FORKING, GLOBAL, KEY_PREFIX, CovPolicyLossConfig, readers, settings_for
from verl_cov.covariance import finite_tokens

FORKING_READERS = readers("forking_share")
_ACTIVE: ContextVar[torch.Tensor | None] = ContextVar("verl_cov_token_entropy", default=None)
_THRESHOLD: ContextVar[int | None] = ContextVar("verl_cov_forking_threshold", default=None)


@contextlib.contextmanager
def active(entropy: torch.Tensor) -> Iterator[torch.Tensor]:
    """Make ``entropy`` ((batch, response_len) H_t of the micro-batch, nats) the one the policy loss reads."""
    token = _ACTIVE.set(entropy.detach())
    try:
        yield entropy
    finally:
        _ACTIVE.reset(token)


def current(config: CovPolicyLossConfig) -> torch.Tensor:
    """The active micro-batch's H_t; a clear error when none is active."""
    entropy = _ACTIVE.get()
    if entropy is None:
        key = "loss_mode" if config.loss_mode == FORKING else "forking_share"
        raise RuntimeError(
            f"{KEY_PREFIX}.{key}={getattr(config, key)!r} needs the per-token entropy of π_θ, which verl-cov "
            "passes through verl's engine train_batch (verl >= 0.8) or verl_cov.token_entropy.active(...); "
            "none is active"
        )
    return entropy


def wanted(policy_loss: Any) -> bool:
    """Whether a policy-loss config (None: no policy loss) is a verl-cov mode that applies the 80/20 rule."""
    config = settings_for(policy_loss, FORKING_READERS)
    return config is not None and config.forking is not None


def wanted_over_mini_batch(policy_loss: Any) -> bool:
    """Whether the config applies the 80/20 rule with the quantile over the whole mini-batch (global scope)."""
    return wanted(policy_loss) and settings_for(policy_loss, FORKING_READERS).selection_scope == GLOBAL


def mini_batch_threshold(
    entropy: torch.Tensor, mask: torch.Tensor, share: float, group: dist.ProcessGroup | None = None
) -> int:
    """The ``ordered_keys`` key of the ⌈share·N⌉-th largest H_t among the N valid tokens of the mini-batch on
    all ranks of ``group`` (``NO_KEY``, which no token reaches, when N = 0). Every rank of ``group`` calls it
    once per mini-batch with its own (batch, response_len) ``entropy`` and ``mask``."""
    device = collective_device(group)
    entropy = entropy.to(device)
    valid = finite_tokens(mask.to(device).bool(), entropy)
    n = int(all_reduce_sum(torch.count_nonzero(valid).view(1), group))
    if n == 0:
        return NO_KEY
    k = max(1, math.ceil(share * n * (1 - CEIL_TOLERANCE)))
    return kth_largest_key(ordered_keys(entropy), valid, k, group)


def at_or_above(entropy: torch.Tensor, mask: torch.Tensor, threshold: int) -> torch.Tensor:
    """Bool mask of the valid tokens whose H_t's key is at least ``threshold`` (``mini_batch_threshold``)."""
    return finite_tokens(mask.bool(), entropy) & (ordered_keys(entropy) >= threshold)


@contextlib.contextmanager
def mini_batch_scope(threshold: int) -> Iterator[int]:
    """Make ``threshold`` the forking threshold of this mini-batch's micro-batches (global scope)."""
    token = _THRESHOLD.set(threshold)
    try:
        yield threshold
    finally:
        _THRESHOLD.reset(token)


def top_share(scores: torch.Tensor, mask: torch.Tensor, share: float) -> torch.Tensor:
    """Bool mask of the valid tokens whose score is at least the ⌈share·N⌉-th largest of the N valid ones
    (ties at that value all kept; none when N = 0). On the CPU, where a host sync is free, one ``kthvalue``
    (linear time); elsewhere a ``topk`` over a bound from the shape, so nothing waits for the device.

    Args:
        scores: (batch, response_len) float scores; a non-finite score is never selected.
        mask: (batch, response_len) bool valid tokens.
        share: ρ in (0, 1].
    """
    valid = finite_tokens(mask, scores)
    if scores.numel() == 0:
        return valid.clone()
    ranked = torch.where(valid, scores.float(), -torch.inf).flatten()  # invalid tokens rank last
    if scores.device.type == "cpu":
        threshold = _kth_largest_on_host(ranked, int(torch.count_nonzero(valid)), share)
    else:
        threshold = _kth_largest_on_device(ranked, torch.count_nonzero(valid), share)
    return valid & (scores.float() >= threshold)


# ρ·N is a float product: 0.07·100 = 7.000000000000001. Rounding it up must not count that noise as a token.
CEIL_TOLERANCE = 1e-9


def _kth_largest_on_host(ranked: torch.Tensor, n: int, share: float) -> torch.Tensor:
    """The ⌈share·n⌉-th largest of ``ranked`` (+inf when n = 0: nothing reaches it)."""
    if n == 0:
        return torch.tensor(torch.inf)
    k = max(1, math.ceil(share * n * (1 - CEIL_TOLERANCE)))
    return ranked.kthvalue(ranked.numel() - k + 1).values


def _kth_largest_on_device(ranked: torch.Tensor, n: torch.Tensor, share: float) -> torch.Tensor:
    """``_kth_largest_on_host`` with n a device tensor: a ``topk`` of ⌈share·numel⌉ >= ⌈share·n⌉ elements."""
    bound = min(ranked.numel(), math.ceil(share * ranked.numel()))
    largest = ranked.topk(bound).values
    rank = torch.ceil(n.double() * share * (1 - CEIL_TOLERANCE)).long().clamp(1, bound) - 1
    return torch.where(n > 0, largest.gather(0, rank.view(1)).squeeze(0), torch.inf)


def forking_tokens(config: CovPolicyLossConfig, mask: torch.Tensor) -> torch.Tensor | None:
    """The forking tokens of the micro-batch (top ρ by H_t among ``mask``), or None without the 80/20 rule."""
    share = config.forking
    if share is None:
        return None
    entropy = current(config)
    if entropy.shape != mask.shape:
        raise RuntimeError(f"the active token entropy has shape {tuple(entropy.shape)}, the batch {tuple(mask.shape)}")
    if config.selection_scope != GLOBAL:
        return top_share(entropy.to(mask.device), mask, share)
    threshold = _THRESHOLD.get()
    if threshold is None:
        raise RuntimeError(
            f"{KEY_PREFIX}.selection_scope={GLOBAL!r} with the 80/20 rule needs the mini-batch's forking threshold, "
            "which verl-cov computes around verl's engine train_batch (verl >= 0.8) or in "
            "verl_cov.token_entropy.mini_batch_scope(...); none is active"
        )
    return at_or_above(entropy.to(mask.device), mask, threshold)


def forking_metrics(forking: torch.Tensor | None, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """``actor/cov/forking_frac``: the share of the valid tokens (``mask``) that got the policy gradient under
    the 80/20 rule; above ρ where entropies tie at the threshold (up to 1 when all do)."""
    if forking is None:
        return {}
    return {"actor/cov/forking_frac": torch.count_nonzero(forking) / torch.count_nonzero(mask).clamp(min=1)}
