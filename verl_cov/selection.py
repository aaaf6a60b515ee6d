"""Which tokens Clip-Cov cuts and KL-Cov penalises: pure torch, no verl import, no host sync, no state.

Both methods select a share ``ratio`` of the N valid tokens. The count is drawn by stochastic rounding,
floor(ratio·N + u) with u uniform in [0, 1), so its expectation is exactly ratio·N even when ratio·N < 1
(verl's built-ins use max(1, floor(ratio·N)), which inflates small micro-batches).

The randomness is a keyed hash, not a random stream: each token's key mixes the seed with the token's
own data (its float32 log π_old and A and its position in the response), and u hashes the seed with exact
integer sums of the batch's valid tokens (``batch_draw``), so no token needs a key just for u. A
selection is therefore a function of (seed, tokens): the same after a checkpoint resume, in any process,
on any rank, whatever the order of the rows. The count is a device tensor and the selection a ``topk``
over a bound computed from the shape alone; only on the CPU, where a host sync costs nothing, Clip-Cov
hashes its candidates alone (``random_candidates``), with the same keys and so the same draw.
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
    position = torch.arange(old_log_prob.shape[-1], device=old_log_prob.device).expand(old_log_prob.shape)
    return _keys_of(old_log_prob, advantages, position, salt)


def _keys_of(old_log_prob: torch.Tensor, advantages: torch.Tensor, position: torch.Tensor, salt: int) -> torch.Tensor:
    """``token_keys`` of tokens given with their positions in the response, any shape."""
    low16 = 0xFFFF
    log_prob_bits = old_log_prob.detach().float().view(torch.int32).long() & 0xFFFFFFFF
    advantage_bits = advantages.detach().float().view(torch.int32).long() & 0xFFFFFFFF
    h = torch.full_like(log_prob_bits, salt)
    for word in (log_prob_bits & low16, log_prob_bits >> 16, advantage_bits & low16, advantage_bits >> 16, position):
        h = _mix(h ^ word)
    return h


def _bit_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # The sum over ``mask`` of the float32 bit patterns as int32, in int64: exact, so independent of the
    # order of the tokens and of the device's reduction order.
    bits = values.detach().float().view(torch.int32)
    return torch.where(mask, bits, 0).sum(dtype=torch.int64) % PRIME


def batch_draw(old_log_prob: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, salt: int) -> torch.Tensor:
    """u in [0, 1) as a 0-d float64 device tensor, the batch's own stochastic-rounding draw: the salt mixed
    with the exact integer sums of the valid tokens' float32 log π_old and A bits and their count. A function
    of (seed, tokens) alone, like the keys, at the cost of two masked sums instead of a hash per token."""
    h = torch.full((), salt, dtype=torch.long, device=mask.device)
    for word in (_bit_sum(old_log_prob, mask), _bit_sum(advantages, mask), torch.count_nonzero(mask)):
        h = _mix(h ^ word)
    return _mix(h).double() / float(1 << 31)


def selection_bound(ratio: float, numel: int) -> int:
    """Largest count that ``stochastic_count`` can return for a tensor of ``numel`` elements."""
    return min(numel, math.floor(ratio * numel) + 1)


def stochastic_count(ratio: float, mask: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """floor(ratio·N + u) for N valid tokens and u uniform in [0, 1): expectation ratio·N, as a 0-d long tensor."""
    count = torch.floor(torch.count_nonzero(mask).double() * ratio + u).long()
    return count.clamp(max=selection_bound(ratio, mask.numel()))


def _keep_first(scores: torch.Tensor, eligible: torch.Tensor, count: torch.Tensor, bound: int) -> torch.Tensor:
    """Bool mask of the ``count`` highest-scoring eligible elements (fewer if fewer are eligible)."""
    if scores.numel() == 0:
        return eligible.clone()
    values = scores if scores.is_floating_point() else scores.double()  # integer keys < 2**31: exact in float64
    flat_scores = torch.where(eligible, values, -torch.inf).flatten()
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


def random_candidates(
    candidates: torch.Tensor,
    count: torch.Tensor,
    ratio: float,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    salt: int,
) -> torch.Tensor:
    """``random_tokens(candidates, count, ratio, token_keys(old_log_prob, advantages, salt))``, the same
    draw. On the CPU, where a host sync is free, only the candidates are hashed (a few per thousand tokens
    in a Clip-Cov band); elsewhere every token is, so that nothing waits for the device."""
    if candidates.device.type != "cpu" or candidates.dim() != 2:
        return random_tokens(candidates, count, ratio, token_keys(old_log_prob, advantages, salt))
    index = candidates.flatten().nonzero().squeeze(1)
    keys = _keys_of(
        old_log_prob.detach().flatten()[index], advantages.detach().flatten()[index], index % candidates.shape[1], salt
    )
    bound = min(index.numel(), selection_bound(ratio, candidates.numel()))
    picked = _keep_first(keys, torch.ones_like(keys, dtype=torch.bool), count, bound)
    selected = torch.zeros(candidates.numel(), dtype=torch.bool)
    return selected.index_fill_(0, index[picked], True).view_as(candidates)
