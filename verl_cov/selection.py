"""Which tokens Clip-Cov cuts and KL-Cov penalises: pure torch, no verl import, no host sync.

Both methods select a share ``ratio`` of the N valid tokens of a micro-batch. The count is drawn by
stochastic rounding, floor(ratio·N + u) with u ~ U[0, 1), so its expectation is exactly ratio·N even
when ratio·N < 1 (verl's built-ins use max(1, floor(ratio·N)), which inflates small micro-batches).
Every step stays on the tensors' device: the count is a device tensor and the selection is a
``topk`` over a bound computed from the shape alone, so nothing waits for the device.
"""

from __future__ import annotations

import functools
import math

import torch


@functools.cache
def generator_for(seed: int, device: torch.device) -> torch.Generator:
    """The process's random stream for ``(seed, device)``, created once and advanced by every draw.

    Same seed and same sequence of calls give the same selections; a fresh process starts the
    stream again. ``generator_for.cache_clear()`` restarts every stream.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def selection_bound(ratio: float, numel: int) -> int:
    """Largest count that ``stochastic_count`` can return for a tensor of ``numel`` elements."""
    return min(numel, math.floor(ratio * numel) + 1)


def stochastic_count(ratio: float, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """floor(ratio·N + u), u ~ U[0, 1): an integer count with expectation ratio·N, as a 0-d long tensor."""
    n_valid = mask.sum().double()
    u = torch.rand((), generator=generator, device=mask.device, dtype=torch.float32).double()
    count = torch.floor(n_valid * ratio + u).long()
    return count.clamp(max=selection_bound(ratio, mask.numel()))


def _keep_first(scores: torch.Tensor, eligible: torch.Tensor, count: torch.Tensor, bound: int) -> torch.Tensor:
    """Bool mask of the ``count`` highest-scoring eligible elements (fewer if fewer are eligible)."""
    flat_scores = torch.where(eligible, scores, -torch.inf).flatten()
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
    if mask.numel() == 0:
        return mask.clone()
    return _keep_first(scores, mask, count, selection_bound(ratio, mask.numel()))


def random_tokens(
    candidates: torch.Tensor, count: torch.Tensor, ratio: float, generator: torch.Generator
) -> torch.Tensor:
    """``min(count, #candidates)`` tokens drawn uniformly without replacement (Clip-Cov's I_clip)."""
    if candidates.numel() == 0:
        return candidates.clone()
    keys = torch.rand(candidates.shape, generator=generator, device=candidates.device)
    return _keep_first(keys, candidates, count, selection_bound(ratio, candidates.numel()))
