"""Statistics of a whole PPO mini-batch on all data-parallel ranks: the global selection scope and the
entropy the target controller reads (both beyond the paper).

verl calls the policy loss once per micro-batch, so a selection made inside the loss depends on how the
mini-batch was split (micro-batch size, dynamic batching, GPU count). Before the mini-batch's first
forward, though, every rank already holds log π_old, A and the mask of all its tokens. From them
``mini_batch_statistics`` reduces, with collectives of fixed size (``verl_cov.collective``):

    N, mean log π_old, mean A                      one all_reduce of 3 numbers
    Ĥ = −mean log π_old, the controller's share    no communication
    the selection threshold (global scope)         4 histogram all_reduces (+1 count for Clip-Cov)

Each micro-batch's loss then scores its own tokens and keeps those at or above the threshold, so the
selected set is a function of the mini-batch alone and no collective runs per micro-batch: ranks may
hold different numbers of micro-batches without deadlock. In global scope a token's score is

    Cov_old(y_i) = (log π_old(y_i) − mean log π_old)·(A(y_i) − mean A)

— the paper's Cov with π_old, the policy every rank knows before the forward passes (equal to π on
the first mini-batch of a rollout batch). KL-Cov keeps the top k·N tokens by Cov_old; Clip-Cov draws
r·N of the tokens with Cov_old in [ω_low, ω_high] uniformly, by ranking a keyed hash of each token
(``verl_cov.selection.token_keys``) that does not depend on where the token sits in the split. Tokens
tied at the threshold are all kept (identical tokens of identical responses are selected together).
Tokens whose log π_old or A is not finite take no part in the statistics or the selection. With the
80/20 rule (``forking_share``) only the mini-batch's forking tokens are eligible (``verl_cov.token_entropy``).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import struct
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, NamedTuple

import torch
import torch.distributed as dist

from verl_cov.collective import NO_KEY, all_reduce_sum, collective_device, kth_largest_key, ordered_keys
from verl_cov.config import GLOBAL, KEY_PREFIX, SELECTING_MODES, CovPolicyLossConfig, settings, settings_for
from verl_cov.controller import Control, control
from verl_cov.covariance import finite_tokens
from verl_cov.methods import METHODS, RANDOM
from verl_cov.selection import PRIME, token_keys


class MiniBatchStatistics(NamedTuple):
    """One mini-batch, all ranks. ``threshold`` is None in micro-batch scope.

    Attributes:
        n_valid: N, valid tokens.
        mean_log_prob: mean log π_old, a float32 value.
        mean_advantage: mean A, a float32 value.
        entropy: Ĥ = −mean log π_old, nats per token.
        control: the share selected, β and Clip-Cov's band, set by the entropy target (or as configured).
        threshold: global scope: tokens whose priority is >= threshold are selected.
        salt: per-mini-batch key of Clip-Cov's draw, from the seed and the mini-batch's sums.
    """

    n_valid: int
    mean_log_prob: float
    mean_advantage: float
    entropy: float
    control: Control
    threshold: int | None
    salt: int


_ACTIVE: ContextVar[MiniBatchStatistics | None] = ContextVar("verl_cov_mini_batch", default=None)


def old_covariance(
    old_log_prob: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, stats: MiniBatchStatistics
) -> torch.Tensor:
    """Cov_old(y_i), float32, 0 outside ``mask``; the same bits wherever the token sits."""
    centred_log_prob = old_log_prob.detach().float() - stats.mean_log_prob
    centred_advantage = advantages.detach().float() - stats.mean_advantage
    return torch.where(mask, centred_log_prob * centred_advantage, 0.0)


def _salt_and_uniform(seed: int, sums: tuple[float, float, float]) -> tuple[int, float]:
    """A salt in [1, 2**31) and u in [0, 1) from the seed and the mini-batch's exact sums: the same on
    every rank, in every process, for the same mini-batch and seed."""
    digest = hashlib.blake2b(struct.pack("<Q3d", seed, *sums), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little") % (PRIME - 1) + 1, int.from_bytes(digest[8:], "little") / 2**64


def _scored_tokens(
    mode: str, old_log_prob, advantages, mask, stats: MiniBatchStatistics
) -> tuple[torch.Tensor, torch.Tensor]:
    """(priority, eligible) by the method's entry (``verl_cov.methods``): every valid token, or those with
    Cov_old in [ω_low, ω_high] for a banded method; ranked by Cov_old, or by the keyed hash for a random draw."""
    method = METHODS[mode]
    mask = finite_tokens(mask, old_log_prob, advantages)
    cov = old_covariance(old_log_prob, advantages, mask, stats)
    eligible = mask
    if method.banded:
        eligible = mask & (cov >= stats.control.clip_cov_lb) & (cov <= stats.control.clip_cov_ub)
    if method.ranking == RANDOM:
        return token_keys(old_log_prob, advantages, stats.salt), eligible
    return ordered_keys(cov), eligible


def selected_tokens(
    mode: str, old_log_prob, advantages, mask, stats: MiniBatchStatistics
) -> tuple[torch.Tensor, torch.Tensor]:
    """(selected, eligible) bool masks of a micro-batch in global scope: I_KL or I_clip, and the candidates."""
    priority, eligible = _scored_tokens(mode, old_log_prob, advantages, mask, stats)
    return eligible & (priority >= stats.threshold), eligible


def mini_batch_statistics(
    policy_loss: Any,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    group: dist.ProcessGroup | None = None,
    forking: torch.Tensor | None = None,
) -> MiniBatchStatistics:
    """Reduce this rank's part of a mini-batch ((batch, response_len) tensors) with the other ranks of
    ``group``. Every rank of ``group`` must call it once per mini-batch, before the micro-batch loop.
    With the 80/20 rule in global scope, ``forking`` (the mini-batch's forking tokens, ``verl_cov.token_entropy``)
    limits the selection to them; N, the means and the count stay those of all valid tokens."""
    config = settings(policy_loss)
    mode = config.loss_mode
    device = collective_device(group)
    old_log_prob, advantages = old_log_prob.to(device), advantages.to(device)
    mask = finite_tokens(response_mask.to(device).bool(), old_log_prob, advantages)
    totals = torch.stack(
        [
            torch.where(mask, old_log_prob.double(), 0).sum(),
            torch.where(mask, advantages.double(), 0).sum(),
            mask.sum().double(),
        ]
    )
    sum_log_prob, sum_advantage, n_valid = all_reduce_sum(totals, group).tolist()
    n = max(n_valid, 1.0)
    mean_log_prob = float(torch.tensor(sum_log_prob / n, dtype=torch.float32))
    mean_advantage = float(torch.tensor(sum_advantage / n, dtype=torch.float32))
    ratio = getattr(config, METHODS[mode].ratio_key)
    entropy = -sum_log_prob / n_valid if n_valid else math.nan
    salt, u = _salt_and_uniform(config.seed, (sum_log_prob, sum_advantage, n_valid))
    stats = MiniBatchStatistics(
        int(n_valid), mean_log_prob, mean_advantage, entropy, control(ratio, config, entropy), None, salt
    )
    if config.selection_scope != GLOBAL:
        return stats
    if forking is not None:
        mask = mask & forking.to(device)
    priority, eligible = _scored_tokens(mode, old_log_prob, advantages, mask, stats)
    n_eligible = int(all_reduce_sum(eligible.sum().view(1), group))
    count = min(math.floor(stats.control.share * n_valid + u), n_eligible)  # E[count] = share·N (stochastic rounding)
    threshold = NO_KEY if count == 0 else kth_largest_key(priority, eligible, count, group)
    return stats._replace(threshold=threshold)


@contextlib.contextmanager
def active(stats: MiniBatchStatistics) -> Iterator[MiniBatchStatistics]:
    """Make ``stats`` the statistics the policy losses of this mini-batch's micro-batches read."""
    token = _ACTIVE.set(stats)
    try:
        yield stats
    finally:
        _ACTIVE.reset(token)


def wanted(policy_loss: Any) -> bool:
    """Whether a policy-loss config (None: no policy loss) is a verl-cov Clip-Cov or KL-Cov config that
    asks for mini-batch statistics; verl's own modes and ``verl_cov.vanilla`` never do."""
    config = settings_for(policy_loss, SELECTING_MODES)
    return config is not None and config.needs_mini_batch_statistics


def mini_batch(
    policy_loss: Any, old_log_prob, advantages, response_mask, group=None
) -> contextlib.AbstractContextManager:
    """Context for training one mini-batch: computes and activates its statistics when the policy-loss
    config asks for them (global scope or an entropy target), and does nothing otherwise."""
    if not wanted(policy_loss):
        return contextlib.nullcontext()
    return active(mini_batch_statistics(policy_loss, old_log_prob, advantages, response_mask, group))


def current(config: CovPolicyLossConfig) -> MiniBatchStatistics | None:
    """The active mini-batch's statistics, None when ``config`` needs none; a clear error when they
    are needed and no mini-batch is active (e.g. the loss called outside verl's engine ``train_batch``)."""
    if not config.needs_mini_batch_statistics:
        return None
    stats = _ACTIVE.get()
    if stats is None:
        key, _ = config.statistics_key
        raise RuntimeError(
            f"{KEY_PREFIX}.{key} needs statistics of the whole mini-batch, which verl-cov computes around "
            "verl's engine train_batch (verl >= 0.8) or in verl_cov.scope.mini_batch(...); none is active"
        )
    return stats
