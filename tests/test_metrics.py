"""The actor/cov/ mechanism metrics against plain references, and verl_cov.vanilla against verl's vanilla."""

import math

import numpy as np
import pytest
import torch
from conftest import actor_config, random_batch
from paper_reference import covariance, valid_positions
from verl.trainer.ppo.core_algos import get_policy_loss_fn

from verl_cov.metrics import upper_tail

MODES = ["verl_cov.vanilla", "verl_cov.clip_cov", "verl_cov.kl_cov"]


def reference_mechanism(old, log_prob, adv, mask):
    positions = valid_positions(mask)
    n = len(positions)
    cov = covariance(log_prob, adv, mask)
    pi_a = {p: math.exp(float(log_prob[p])) * float(adv[p]) for p in positions}
    mean_logp = sum(float(log_prob[p]) for p in positions) / n
    mean_pi_a = sum(pi_a.values()) / n
    values = np.array([cov[p] for p in positions])
    return {
        "actor/cov/mean": float(values.mean()),
        "actor/cov/pg_mean": sum((float(log_prob[p]) - mean_logp) * (pi_a[p] - mean_pi_a) for p in positions) / n,
        "actor/cov/p999": float(np.percentile(values, 99.9, method="inverted_cdf")),
        "actor/cov/max": float(values.max()),
        "actor/cov/entropy_estimate": -sum(float(old[p]) for p in positions) / n,
    }


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(3))
def test_mechanism_metrics_match_reference(mode, seed):
    old, log_prob, adv, mask = random_batch(seed=seed, batch=6, length=40)
    _, metrics = get_policy_loss_fn(mode)(old, log_prob, adv, mask, "token-mean", actor_config(mode))
    for key, expected in reference_mechanism(old, log_prob.detach(), adv, mask).items():
        assert metrics[key] == pytest.approx(expected, rel=1e-4, abs=1e-5), key


# q·n never an integer here: at those ties numpy and torch round q·n differently.
@pytest.mark.parametrize("n", [1, 2, 7, 99, 101, 257, 1001, 4321])
def test_upper_tail_is_nearest_rank_quantile_and_max(n):
    g = torch.Generator().manual_seed(n)
    values = torch.randn(3, 2000, generator=g)
    mask = torch.zeros(3, 2000, dtype=torch.bool)
    mask.view(-1)[torch.randperm(6000, generator=g)[:n]] = True
    for q in (0.9, 0.99, 0.999):
        quantile, maximum = upper_tail(values, mask, mask.sum(), q)
        expected = np.percentile(values[mask].numpy(), 100 * q, method="inverted_cdf")
        assert quantile.item() == pytest.approx(float(expected))
        assert maximum.item() == values[mask].max().item()


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_vanilla_with_metrics_is_bit_identical_to_verl_vanilla(agg):
    old, log_prob, adv, mask = random_batch(seed=4, batch=5, length=30)
    weights = torch.rand(mask.shape, generator=torch.Generator().manual_seed(0)) + 0.5
    config = actor_config("verl_cov.vanilla")
    ours, our_metrics = get_policy_loss_fn("verl_cov.vanilla")(old, log_prob, adv, mask, agg, config, weights)
    (our_grad,) = torch.autograd.grad(ours, log_prob)
    verl, verl_metrics = get_policy_loss_fn("vanilla")(old, log_prob, adv, mask, agg, config, weights)
    (verl_grad,) = torch.autograd.grad(verl, log_prob)
    assert torch.equal(ours, verl) and torch.equal(our_grad, verl_grad)
    assert {k: v for k, v in our_metrics.items() if not k.startswith("actor/cov/")} == verl_metrics
    assert {"actor/cov/mean", "actor/cov/pg_mean", "actor/cov/entropy_estimate"} <= set(our_metrics)
