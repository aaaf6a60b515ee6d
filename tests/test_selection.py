"""verl_cov.selection: unbiased counts, uniform draws, reproducibility from (seed, tokens) alone, exact top-k."""

import math

import pytest
import torch
from conftest import actor_config
from verl.trainer.ppo.core_algos import get_policy_loss_fn

from verl_cov.selection import (
    batch_draw,
    random_candidates,
    random_tokens,
    salt_of,
    selection_bound,
    stochastic_count,
    token_keys,
    top_k_tokens,
)


def random_tokens_of(seed: int, shape=(4, 16)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return -torch.rand(shape, generator=g) * 4, torch.randn(shape, generator=g)


def test_keys_depend_on_seed_and_token_not_on_where_the_token_sits():
    old_log_prob, advantages = random_tokens_of(0)
    keys = token_keys(old_log_prob, advantages, salt_of(3))
    assert torch.equal(token_keys(old_log_prob[2:], advantages[2:], salt_of(3)), keys[2:])  # another split
    assert not torch.equal(token_keys(old_log_prob, advantages, salt_of(4)), keys)
    assert ((keys >= 0) & (keys < 2**31)).all() and keys.unique().numel() == keys.numel()


@pytest.mark.parametrize("n_valid, ratio", [(2000, 2e-4), (37, 0.01), (50_000, 2e-4), (1000, 0.0123), (10, 1.0)])
def test_stochastic_count_is_unbiased(n_valid, ratio):
    mask = torch.zeros(n_valid + 5, dtype=torch.bool)
    mask[:n_valid] = True
    uniform = torch.rand(4000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    counts = torch.stack([stochastic_count(ratio, mask, u) for u in uniform]).double()
    target = ratio * n_valid
    assert set(counts.unique().tolist()) <= {math.floor(target), math.floor(target) + 1}
    spread = math.sqrt((target % 1) * (1 - target % 1) / 4000) + 1e-9
    assert abs(counts.mean().item() - target) < 5 * spread + 1e-9


def test_bound_covers_every_count():
    for numel in (1, 7, 1000, 262_144):
        for ratio in (2e-4, 0.3, 1.0):
            assert selection_bound(ratio, numel) >= math.floor(ratio * numel + 0.999999)
            assert selection_bound(ratio, numel) <= numel


def test_random_tokens_draws_uniformly_among_candidates():
    candidates = torch.zeros(4, 10, dtype=torch.bool)
    candidates[1, 2:7] = True
    candidates[3, 0] = True  # 6 candidates, 2 drawn per call
    hits = torch.zeros(4, 10)
    old_log_prob, advantages = random_tokens_of(1, shape=(4, 10))
    for seed in range(3000):
        chosen = random_tokens(candidates, torch.tensor(2), 0.05, token_keys(old_log_prob, advantages, salt_of(seed)))
        assert chosen.sum() == 2 and not (chosen & ~candidates).any()
        hits += chosen
    share = hits[candidates] / 3000
    assert torch.allclose(share, torch.full_like(share, 2 / 6), atol=0.04)


def test_random_tokens_takes_all_when_fewer_candidates_than_count():
    candidates = torch.zeros(3, 5, dtype=torch.bool)
    candidates[0, 1] = candidates[2, 4] = True
    chosen = random_tokens(candidates, torch.tensor(4), 0.3, token_keys(*random_tokens_of(0, (3, 5)), salt_of(0)))
    assert torch.equal(chosen, candidates)


def test_top_k_tokens_matches_sorting():
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        scores = torch.randn(6, 50, generator=generator)
        mask = torch.rand(6, 50, generator=generator) > 0.3
        count = int(torch.randint(0, 15, (), generator=generator))
        chosen = top_k_tokens(scores, mask, torch.tensor(count), 0.05)
        valid_scores = scores[mask]
        expected = set(valid_scores.argsort(descending=True)[:count].tolist())
        assert set(torch.nonzero(chosen[mask]).flatten().tolist()) == expected


def test_empty_inputs():
    empty = torch.zeros(0, 0, dtype=torch.bool)
    keys = token_keys(torch.zeros(0, 0), torch.zeros(0, 0), salt_of(0))
    assert stochastic_count(0.5, empty, batch_draw(torch.zeros(0, 0), torch.zeros(0, 0), empty, salt_of(0))) == 0
    assert top_k_tokens(torch.zeros(0, 0), empty, torch.tensor(0), 0.5).shape == (0, 0)
    assert random_tokens(empty, torch.tensor(0), 0.5, keys).shape == (0, 0)


def _clip_cov_cut(seed: int, ratio: float = 0.02, length: int = 512) -> torch.Tensor:
    """Cut mask of one Clip-Cov call where every token is a candidate (Cov = 2 everywhere)."""
    log_prob = torch.where(torch.arange(length) % 2 == 0, -1.0, -3.0).view(1, -1).requires_grad_()
    advantages = torch.where(torch.arange(length) % 2 == 0, 2.0, -2.0).view(1, -1)
    mask = torch.ones(1, length, dtype=torch.bool)
    config = actor_config("verl_cov.clip_cov", clip_cov_ratio=ratio, seed=seed, clip_ratio=1.0)
    loss, metrics = get_policy_loss_fn("verl_cov.clip_cov")(
        log_prob.detach(), log_prob, advantages, mask, "seq-mean-token-sum", config
    )
    (grad,) = torch.autograd.grad(loss, log_prob)
    assert metrics["actor/cov/candidate_frac"] == 1.0
    return grad == 0


def test_same_seed_same_tokens_other_seed_other_tokens():
    """The selection is a function of (seed, tokens): repeated calls in one process agree (no stream
    advances between them, so a run resumed from a checkpoint selects what the uninterrupted run did)."""
    first = _clip_cov_cut(seed=5)
    again = _clip_cov_cut(seed=5)
    other = _clip_cov_cut(seed=6)
    assert first.sum() > 0
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("length, ratio", [(2000, 2e-4), (400, 2e-3), (20_000, 2e-4)])
def test_mean_selected_share_matches_ratio_over_seeds(length, ratio):
    """Over many seeds the share cut by Clip-Cov and penalised by KL-Cov averages to the ratio."""
    g = torch.Generator().manual_seed(0)
    log_prob = -torch.rand(1, length, generator=g) * 4
    advantages = torch.randn(1, length, generator=g)
    mask = torch.ones(1, length, dtype=torch.bool)
    shares = {"verl_cov.kl_cov": [], "verl_cov.clip_cov": []}
    for seed in range(300):
        for mode, share in shares.items():
            # lb below every Cov so every token is a Clip-Cov candidate.
            config = actor_config(
                mode, clip_cov_ratio=ratio, kl_cov_ratio=ratio, clip_cov_lb=-1e9, clip_cov_ub=1e9, seed=seed
            )
            _, metrics = get_policy_loss_fn(mode)(log_prob, log_prob, advantages, mask, "token-mean", config)
            share.append(metrics["actor/cov/selected_frac"])
    target = ratio * length
    spread = math.sqrt((target % 1) * (1 - target % 1) / 300) / length
    for mode, share in shares.items():
        mean_share = sum(share) / len(share)
        assert abs(mean_share - ratio) <= 5 * spread + 1e-6 * ratio, (mode, mean_share, ratio)  # float32 metric


def test_batch_draw_is_uniform_and_a_function_of_seed_and_tokens():
    """u, the stochastic-rounding draw, hashes the seed with exact sums of the batch: uniform on [0, 1) over
    batches, the same whatever the row order, another for another seed."""
    draws = []
    for seed in range(2000):
        old_log_prob, advantages = random_tokens_of(seed)
        mask = torch.ones_like(old_log_prob, dtype=torch.bool)
        draws.append(float(batch_draw(old_log_prob, advantages, mask, salt_of(seed % 7))))
    draws = torch.tensor(draws)
    assert 0 <= draws.min() and draws.max() < 1
    histogram = torch.histc(draws, bins=10, min=0, max=1)
    assert (histogram - 200).abs().max() < 5 * math.sqrt(200 * 0.9)
    old_log_prob, advantages = random_tokens_of(0)
    mask = torch.rand(old_log_prob.shape, generator=torch.Generator().manual_seed(1)) > 0.3
    u = batch_draw(old_log_prob, advantages, mask, salt_of(3))
    rows = torch.randperm(old_log_prob.shape[0], generator=torch.Generator().manual_seed(2))
    assert torch.equal(batch_draw(old_log_prob[rows], advantages[rows], mask[rows], salt_of(3)), u)  # row order
    assert not torch.equal(batch_draw(old_log_prob, advantages, mask, salt_of(4)), u)


def test_random_candidates_is_random_tokens_over_all_keys():
    for seed in range(20):
        old_log_prob, advantages = random_tokens_of(seed, shape=(6, 50))
        candidates = torch.rand(6, 50, generator=torch.Generator().manual_seed(seed)) > 0.7
        for count in (0, 1, 5, 40):
            expected = random_tokens(
                candidates, torch.tensor(count), 0.2, token_keys(old_log_prob, advantages, salt_of(seed))
            )
            chosen = random_candidates(candidates, torch.tensor(count), 0.2, old_log_prob, advantages, salt_of(seed))
            assert torch.equal(chosen, expected)
