"""Which tokens Clip-Cov cuts and KL-Cov penalises: pure torch, no verl import, no host sync, no state.

Both methods select a share ``ratio`` of the N valid tokens. The count is drawn by stochastic rounding,
floor(ratio·N + u) with u uniform in [0, 1), so its expectation is exactly ratio·N even when ratio·N < 1
(verl's built-ins use max(1, floor(ratio·N)), which inflates small micro-batches).

The randomness is a keyed hash, not a random stream: each token's key mixes the seed with the token's
own data (its float32 log π_old and A and its position in the response), and u comes from the keys of
the batch. A selection is therefore a function of (seed, tokens): the same after a checkpoint resume,
in any process, on any rank. Everything stays on the tensors' device: the count is a device tensor and
the selection is a ``topk`` over a bound computed from the shape alone.
"""

from __future__ import annotations

import math

import torch

PRIME = (1 << 31) - 1  # keys live modulo this prime, so no int64 product overflows


def _mix(h: torch.Tensor) -> torch.Tensor:
    # Two multiply-mod-prime rounds with xor-shifts; every value stays below 2**31, products below 2**62.
    h = (h ^ 0x2545F491) * 0x5BD1E995 % PRIME
    h = h ^ (h >> 15)
    h = h * 0x1B873593 % PRIME
    return h ^ (h >> 13)


def salt_of(seed: int) -> int:
    """The hash key of a configured seed, in [1, PRIME)."""
    return int(_mix(torch.tensor(seed % PRIME, dtype=torch.long))) % (PRIME - 1) + 1


def token_keys(old_log_prob: torch.Tensor, advantages: torch.Tensor, salt: int) -> torch.Tensor:
    """A pseudo-random int64 key in [0, 2**31) per token of a (batch, response_len) batch, from ``salt`` and
    the token's float32 log π_old and A and its position, so a token gets the same key wherever it sits."""
    low16 = 0xFFFF
    log_prob_bits = old_log_prob.detach().float().view(torch.int32).long() & 0xFFFFFFFF
    advantage_bits = advantages.detach().float().view(torch.int32).long() & 0xFFFFFFFF
    position = torch.arange(old_log_prob.shape[-1], device=old_log_prob.device).expand_as(log_prob_bits)
    h = torch.full_like(log_prob_bits, salt)
    for word in (log_prob_bits & low16, log_prob_bits >> 16, advantage_bits & low16, advantage_bits >> 16, position):
        h = _mix(h ^ word)
    return h


def batch_uniform(keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """u in [0, 1) as a 0-d float64 device tensor: a hash of the valid tokens' keys (the batch's own draw)."""
    total = torch.where(mask, keys, 0).sum() % PRIME
    return _mix(_mix(total) ^ mask.sum()).double() / float(1 << 31)


def selection_bound(ratio: float, numel: int) -> int:
    """Largest count that ``stochastic_count`` can return for a tensor of ``numel`` elements."""
    return min(numel, math.floor(ratio * numel) + 1)


def stochastic_count(ratio: float, mask: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """floor(ratio·N + u) for N valid tokens and u uniform in [0, 1): expectation ratio·N, as a 0-d long tensor."""
    count = torch.floor(mask.sum().double() * ratio + u).long()
    return count.clamp(max=selection_bound(ratio, mask.numel()))


def _keep_first(scores: torch.Tensor, eligible: torch.Tensor, count: torch.Tensor, bound: int) -> torch.Tensor:
    """Bool mask of the ``count`` highest-scoring eligible elements (fewer if fewer are eligible)."""
    if scores.numel() == 0:
        return eligible.clone()
    flat_scores = torch.where(eligible, scores.double(), -torch.inf).flatten()
    _, index = flat_scores.topk(bound)
    keep = torch.arange(bound, device=scores.device) < count
    keep &= eligible.flatten()[index]
    selected = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    return selected.scatter(0, index, keep).view_as(eligible)


def top_k_tokens(scores: torch.Tensor, mask: torch.Tensor, count: torch.Tensor, ratio: float) -> torch.Tensor:
    """The ``count`` valid tokens of largest ``scores`` (KL-Cov's I_KL); ties are broken by ``topk``.

    Args:
        scores: (batch, response_len) float scores, e.g. ``token_covariance``.
        mask: (batch, response_len) bool valid-token mask.
        count: 0-d long tensor from ``stochastic_count(ratio, mask, ...)``.
        ratio: the share that produced ``count``; bounds the ``topk`` size from the shape.
    """
    return _keep_first(scores, mask, count, selection_bound(ratio, mask.numel()))


def random_tokens(candidates: torch.Tensor, count: torch.Tensor, ratio: float, keys: torch.Tensor) -> torch.Tensor:
    """``min(count, #candidates)`` candidates drawn uniformly without replacement (Clip-Cov's I_clip): the
    candidates of largest pseudo-random ``keys`` (``token_keys``)."""
    return _keep_first(keys, candidates, count, selection_bound(ratio, candidates.numel()))
