"""Exact order statistics of values spread over data-parallel ranks, with collectives of fixed size.

No rank ever sends its tokens: the k-th largest of integer keys held by all ranks is found by a radix
select, four rounds of one 256-bin histogram ``all_reduce`` each. Pure torch; no verl import.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

KEY_BITS = 32
DIGIT_BITS = 8
DIGITS = 1 << DIGIT_BITS
NO_KEY = 1 << KEY_BITS  # above every key: ``key >= NO_KEY`` selects nothing


def is_distributed(group: dist.ProcessGroup | None) -> bool:
    """Whether collectives over ``group`` (None: the default group) have other ranks to reach."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def collective_device(group: dist.ProcessGroup | None) -> torch.device:
    """The device a collective over ``group`` takes its tensors on: the current GPU for NCCL, else the CPU."""
    if is_distributed(group) and "nccl" in str(dist.get_backend(group)):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """``tensor`` summed over the ranks of ``group``, in place (unchanged on a single process)."""
    if is_distributed(group):
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


def ordered_keys(values: torch.Tensor) -> torch.Tensor:
    """int64 keys in [0, 2**32) with the order of the float32 ``values`` (ties stay ties, -0.0 < +0.0)."""
    bits = values.float().view(torch.int32).long()
    # A negative float's bits order backwards: flip its 31 magnitude bits, then shift all to unsigned.
    flipped = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return flipped + (1 << 31)


def kth_largest_key(keys: torch.Tensor, where: torch.Tensor, k: int, group: dist.ProcessGroup | None) -> int:
    """The k-th largest of ``keys[where]`` over all ranks of ``group``, exactly.

    Every rank must call it with the same ``k``, 1 <= k <= the number of ``where`` elements on all ranks;
    ``keys`` are int64 in [0, 2**32), on the device of ``group``'s collectives.
    """
    remaining = keys[where]
    prefix, rank_left = 0, k
    for shift in range(KEY_BITS - DIGIT_BITS, -1, -DIGIT_BITS):
        digits = (remaining >> shift) & (DIGITS - 1)
        histogram = all_reduce_sum(torch.bincount(digits, minlength=DIGITS), group)
        at_or_above = histogram.flip(0).cumsum(0)  # [j]: keys whose digit is >= DIGITS - 1 - j
        j = int(torch.searchsorted(at_or_above, torch.tensor(rank_left, device=at_or_above.device)))
        digit = DIGITS - 1 - j
        rank_left -= int(at_or_above[j] - histogram[digit])
        prefix |= digit << shift
        remaining = remaining[digits == digit]
    return prefix
