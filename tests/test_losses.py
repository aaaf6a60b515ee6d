"""verl_cov.losses against the plain reference of the paper's equations: value, gradient, selection."""

import math

import pytest
import torch
from conftest import actor_config, random_batch
from paper_reference import (
    aggregate,
    clip_cov_terms,
    covariance,
    grad_of,
    infer_cut,
    kl_cov_terms,
    ratio_clipped,
    top_k,
)
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl_support import AGG_MODES, HAS_GLOBAL_BATCH_INFO

clip_cov = get_policy_loss_fn("verl_cov.clip_cov")
kl_cov = get_policy_loss_fn("verl_cov.kl_cov")


def hand_made():
    # log π = [-1,-2,-3,-4] -> centred [1.5, .5, -.5, -1.5]; A = [2,0,1,-3] (mean 0)
    # Cov = [3, 0, -0.5, 4.5]; log π − log π_old = d = [0.1, 0.2, -0.1, 0.3]
    log_prob = torch.tensor([[-1.0, -2.0, -3.0, -4.0]], requires_grad=True)
    d = torch.tensor([[0.1, 0.2, -0.1, 0.3]])
    advantages = torch.tensor([[2.0, 0.0, 1.0, -3.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    return log_prob.detach() - d, log_prob, advantages, mask


def test_kl_cov_hand_made():
    old, log_prob, adv, mask = hand_made()
    config = actor_config("verl_cov.kl_cov", kl_cov_ratio=0.25, ppo_kl_coef=1.0)  # k·N = 1 -> token 3
    loss, metrics = kl_cov(old, log_prob, adv, mask, "token-mean", config)
    expected = (-2 * math.exp(0.1) - 1 * math.exp(-0.1) + 3 * math.exp(0.3) + 0.3) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    grad = grad_of(loss, log_prob)[0]
    expected_grad = [-2 * math.exp(0.1) / 4, 0.0, -math.exp(-0.1) / 4, (3 * math.exp(0.3) + 1) / 4]
    torch.testing.assert_close(grad, torch.tensor(expected_grad))
    assert metrics["actor/cov/selected_frac"] == pytest.approx(0.25)
    assert metrics["actor/cov/mean"] == pytest.approx((3 + 0 - 0.5 + 4.5) / 4)
    assert metrics["actor/cov/max"] == pytest.approx(4.5)
    assert metrics["actor/cov/selected_adv_mean"] == pytest.approx(-3.0)
    assert metrics["actor/cov/selected_logp_mean"] == pytest.approx(-4.0)
    assert metrics["actor/cov/selected_kl_mean"] == pytest.approx(0.3, rel=1e-5)


def test_clip_cov_hand_made_cuts_both_candidates():
    old, log_prob, adv, mask = hand_made()
    config = actor_config("verl_cov.clip_cov", clip_cov_ratio=0.5)  # r·N = 2; candidates Cov in [1,5]: 0, 3
    loss, metrics = clip_cov(old, log_prob, adv, mask, "token-mean", config)
    assert loss.item() == pytest.approx(-math.exp(-0.1) / 4, rel=1e-6)
    torch.testing.assert_close(grad_of(loss, log_prob)[0], torch.tensor([0.0, 0.0, -math.exp(-0.1) / 4, 0.0]))
    assert metrics["actor/cov/candidate_frac"] == pytest.approx(0.5)
    assert metrics["actor/cov/selected_frac"] == pytest.approx(0.5)
    assert metrics["actor/pg_clipfrac"] == 0.0


def test_clip_cov_hand_made_cuts_one_random_candidate():
    old, log_prob, adv, mask = hand_made()
    seen = set()
    for seed in range(40):
        config = actor_config("verl_cov.clip_cov", clip_cov_ratio=0.25, seed=seed)  # r·N = 1
        loss, _ = clip_cov(old, log_prob, adv, mask, "token-mean", config)
        cut = {j for j, g in enumerate(grad_of(loss, log_prob)[0].tolist()) if g == 0 and adv[0, j] != 0}
        assert len(cut) == 1 and cut <= {0, 3}
        seen |= cut
    assert seen == {0, 3}, "the single cut token is drawn at random among the candidates"


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("seed", range(4))
def test_clip_cov_matches_reference_on_random_batches(agg, seed):
    old, log_prob, adv, mask = random_batch(seed=seed, length=24)
    # Wide candidate band and r·N well above 1 so several tokens are cut.
    config = actor_config("verl_cov.clip_cov", clip_ratio=0.2, clip_cov_ratio=0.1, clip_cov_lb=0.2, clip_cov_ub=3.0)
    loss, metrics = clip_cov(old, log_prob, adv, mask, agg, config)
    grad = grad_of(loss, log_prob)

    ref_log_prob = log_prob.detach().clone().requires_grad_()
    uncut = aggregate(clip_cov_terms(old, ref_log_prob, adv, mask, set(), 0.2, 0.2), mask, agg, HAS_GLOBAL_BATCH_INFO)
    cut = infer_cut(grad, grad_of(uncut, ref_log_prob), mask)

    cov = covariance(log_prob.detach(), adv, mask)
    candidates = {
        p for p, c in cov.items() if 0.2 <= c <= 3.0 and not ratio_clipped(old, log_prob.detach(), adv, p, 0.2, 0.2)
    }
    assert cut <= candidates
    n_valid = len(cov)
    assert len(cut) in {
        min(math.floor(0.1 * n_valid), len(candidates)),
        min(math.floor(0.1 * n_valid) + 1, len(candidates)),
    }
    assert len(cut) > 0

    ref_log_prob = log_prob.detach().clone().requires_grad_()
    reference = aggregate(clip_cov_terms(old, ref_log_prob, adv, mask, cut, 0.2, 0.2), mask, agg, HAS_GLOBAL_BATCH_INFO)
    torch.testing.assert_close(loss, reference.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_of(reference, ref_log_prob), rtol=1e-5, atol=1e-7)
    assert metrics["actor/cov/selected_frac"] == pytest.approx(len(cut) / n_valid)
    assert metrics["actor/cov/candidate_frac"] == pytest.approx(len(candidates) / n_valid)
    assert metrics["actor/cov/mean"] == pytest.approx(sum(cov.values()) / n_valid, abs=1e-5)


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("seed", range(4))
def test_kl_cov_matches_reference_on_random_batches(agg, seed):
    old, log_prob, adv, mask = random_batch(seed=seed, length=25)
    n_valid = int(mask.sum())
    ratio = 5 / n_valid  # k·N = 5 exactly, so the count is not rounded at random
    config = actor_config("verl_cov.kl_cov", kl_cov_ratio=ratio, ppo_kl_coef=0.7)
    loss, metrics = kl_cov(old, log_prob, adv, mask, agg, config)

    cov = covariance(log_prob.detach(), adv, mask)
    penalised = top_k(cov, 5)
    ref_log_prob = log_prob.detach().clone().requires_grad_()
    reference = aggregate(kl_cov_terms(old, ref_log_prob, adv, mask, penalised, 0.7), mask, agg, HAS_GLOBAL_BATCH_INFO)
    torch.testing.assert_close(loss, reference.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_of(loss, log_prob), grad_of(reference, ref_log_prob), rtol=1e-5, atol=1e-7)
    assert metrics["actor/cov/selected_frac"] == pytest.approx(5 / n_valid)
    assert metrics["actor/cov/max"] == pytest.approx(max(cov.values()), rel=1e-5)


def test_kl_cov_selected_tokens_get_beta_sign_gradient():
    old, log_prob, adv, mask = random_batch(seed=7, length=32, masked_share=0.0)
    n_valid = int(mask.sum())
    beta = 1.0
    config_on = actor_config("verl_cov.kl_cov", kl_cov_ratio=8 / n_valid, ppo_kl_coef=beta)
    config_off = actor_config("verl_cov.kl_cov", kl_cov_ratio=8 / n_valid, ppo_kl_coef=0.0)
    extra = grad_of(kl_cov(old, log_prob, adv, mask, "seq-mean-token-sum", config_on)[0], log_prob) - grad_of(
        kl_cov(old, log_prob, adv, mask, "seq-mean-token-sum", config_off)[0], log_prob
    )
    penalised = top_k(covariance(log_prob.detach(), adv, mask), 8)
    expected = torch.zeros_like(extra)
    for p in penalised:
        # seq-mean-token-sum: each sequence's token sum, averaged over the (all non-empty) sequences
        expected[p] = beta * torch.sign(log_prob.detach()[p] - old[p]) / mask.shape[0]
    torch.testing.assert_close(extra, expected)


def test_kl_cov_is_inert_on_policy():
    _, log_prob, adv, mask = random_batch(seed=3)
    config = actor_config("verl_cov.kl_cov", kl_cov_ratio=0.5)
    on_policy = log_prob.detach()
    loss, metrics = kl_cov(on_policy, log_prob, adv, mask, "token-mean", config)
    expected = -(adv * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, expected)
    assert metrics["actor/cov/selected_kl_mean"] == 0.0


def test_rollout_is_weights_multiply_each_token():
    old, log_prob, adv, mask = random_batch(seed=5)
    weights = torch.rand(mask.shape, generator=torch.Generator().manual_seed(1)) + 0.5
    for mode in ("verl_cov.clip_cov", "verl_cov.kl_cov"):
        fn = get_policy_loss_fn(mode)
        config = actor_config(mode, kl_cov_ratio=0.05, clip_cov_ratio=0.05, clip_cov_lb=0.1)
        loss_w, _ = fn(old, log_prob, adv, mask, "seq-mean-token-sum", config, rollout_is_weights=weights)
        grad_w = grad_of(loss_w, log_prob)
        loss, _ = fn(old, log_prob, adv, mask, "seq-mean-token-sum", config)
        torch.testing.assert_close(grad_w, grad_of(loss, log_prob) * weights)


DEGENERATE = {
    "all_masked": lambda b: (b[0], b[1], b[2], torch.zeros_like(b[3])),
    "zero_advantages": lambda b: (b[0], b[1], torch.zeros_like(b[2]), b[3]),
    "equal_advantages": lambda b: (b[0], b[1], torch.full_like(b[2], 1.0), b[3]),
    "one_token": lambda b: (
        b[0],
        b[1],
        b[2],
        torch.nn.functional.one_hot(torch.tensor(3), b[3].numel()).view_as(b[3]).bool(),
    ),
    "huge_log_ratio": lambda b: (b[0] - 500.0, b[1], b[2], b[3]),
    "huge_negative_log_ratio": lambda b: (b[0] + 500.0, b[1], b[2], b[3]),
}


@pytest.mark.parametrize("mode", ["verl_cov.clip_cov", "verl_cov.kl_cov", "verl_cov.vanilla"])
@pytest.mark.parametrize("case", sorted(DEGENERATE))
@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("global_info", [False, True])
def test_degenerate_batches_stay_finite(mode, case, agg, dtype, global_info):
    old, log_prob, adv, mask = DEGENERATE[case](random_batch(seed=11, dtype=dtype))
    config = actor_config(mode, kl_cov_ratio=0.3, clip_cov_ratio=0.3)
    if global_info and not HAS_GLOBAL_BATCH_INFO:
        pytest.skip("verl < 0.7 has no global-batch info")
    if global_info:  # what verl's ppo_loss sets: this micro-batch is one of several in the mini-batch
        config.global_batch_info.update(dp_size=1, batch_num_tokens=100, global_batch_size=8, loss_scale_factor=None)
    loss, metrics = get_policy_loss_fn(mode)(old, log_prob, adv, mask, agg, config)
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    if mode == "verl_cov.vanilla" and case == "all_masked" and not global_info:
        return  # bit-identical to verl's vanilla, which divides 0 by 0 without global-batch info
    assert torch.isfinite(loss)
    grad = grad_of(loss, log_prob)
    assert grad.dtype == dtype and torch.isfinite(grad).all()
    if case == "all_masked" and mode != "verl_cov.vanilla":
        assert loss.item() == 0 and metrics["actor/cov/selected_frac"] == 0


@pytest.mark.parametrize("mode", ["verl_cov.clip_cov", "verl_cov.kl_cov", "verl_cov.vanilla"])
def test_same_keys_on_every_call(mode):
    fn = get_policy_loss_fn(mode)
    config = actor_config(mode)
    keys = {tuple(sorted(fn(*DEGENERATE[c](random_batch(seed=2)), "token-mean", config)[1])) for c in DEGENERATE}
    assert len(keys) == 1
    assert {"actor/cov/mean", "actor/cov/max", "actor/cov/entropy_estimate"} <= set(next(iter(keys)))


@pytest.mark.parametrize("mode", ["verl_cov.clip_cov", "verl_cov.kl_cov", "verl_cov.vanilla"])
@pytest.mark.parametrize("where", ["log_prob", "old_log_prob"])
def test_a_minus_infinite_log_prob_leaves_loss_and_metrics_finite_where_vanilla_is(mode, where):
    """A token sampled with log π = −inf (a rollout engine's rounding) used to make KL-Cov's loss +inf and
    every actor/cov/* metric non-finite; verl's vanilla bounds its log-ratio and stays finite."""
    old, log_prob, adv, mask = random_batch(seed=13)
    if where == "log_prob":
        log_prob = log_prob.detach().clone()
        log_prob[0, 0] = -torch.inf
        log_prob.requires_grad_()
    else:
        old = old.clone()
        old[0, 0] = -torch.inf
    config = actor_config(mode, kl_cov_ratio=0.5, clip_cov_ratio=0.5, clip_cov_lb=-100.0, clip_cov_ub=100.0)
    vanilla_loss, _ = get_policy_loss_fn("vanilla")(old, log_prob, adv, mask, "token-mean", config)
    loss, metrics = get_policy_loss_fn(mode)(old, log_prob, adv, mask, "token-mean", config)
    assert torch.isfinite(vanilla_loss)
    assert torch.isfinite(loss), loss
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert torch.isfinite(grad_of(loss, log_prob)).all()


@pytest.mark.parametrize("mode", ["verl_cov.clip_cov", "verl_cov.kl_cov", "verl_cov.vanilla"])
def test_a_nan_advantage_at_a_masked_position_does_not_reach_the_metrics(mode):
    """actor/cov/pg_mean used to be NaN when a masked (padding) position held a NaN advantage."""
    old, log_prob, adv, mask = random_batch(seed=14)
    adv = adv.clone()
    masked = (~mask).nonzero()[0]
    adv[tuple(masked)] = torch.nan
    _, metrics = get_policy_loss_fn(mode)(old, log_prob, adv, mask, "token-mean", actor_config(mode))
    assert all(math.isfinite(metrics[key]) for key in metrics if key.startswith("actor/cov/")), metrics
