"""verl_cov.collective: order-preserving keys and the exact k-th largest by radix select."""

import pytest
import torch

from verl_cov.collective import kth_largest_key, ordered_keys


def test_ordered_keys_sort_like_the_floats():
    values = torch.tensor([-float("inf"), -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, 2.0000002, float("inf")])
    keys = ordered_keys(values)
    assert (keys >= 0).all() and (keys < 2**32).all()
    assert torch.all(keys[1:] > keys[:-1])
    shuffled = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 100
    assert torch.equal(ordered_keys(shuffled).argsort(), shuffled.argsort())


@pytest.mark.parametrize("seed", range(5))
def test_kth_largest_key_matches_a_sort(seed):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(300, generator=g).round(decimals=1)  # many ties
    where = torch.rand(300, generator=g) < 0.7
    keys = ordered_keys(values)
    ranked = keys[where].sort(descending=True).values
    for k in (1, 2, 17, int(where.sum()) // 2, int(where.sum())):
        assert kth_largest_key(keys, where, k, group=None) == int(ranked[k - 1])


def test_kth_largest_key_of_full_range_keys():
    keys = torch.tensor([0, 2**32 - 1, 2**31, 255, 256, 2**24])
    where = torch.ones(6, dtype=torch.bool)
    assert [kth_largest_key(keys, where, k, None) for k in range(1, 7)] == [2**32 - 1, 2**31, 2**24, 256, 255, 0]
