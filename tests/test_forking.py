"""The 80/20 rule (``verl_cov.forking`` and ``forking_share`` on Clip-Cov / KL-Cov) against a plain reference
written from Wang et al. 2025: the policy gradient only for the top ρ share of the valid tokens by entropy."""

import math
from fractions import Fraction

import pytest
import torch
from conftest import actor_config, random_batch
from paper_reference import aggregate, clip_cov_terms, covariance, grad_of, kl_cov_terms, top_k, valid_positions
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl_support import AGG_MODES

from verl_cov import token_entropy
from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH

needs_engine = pytest.mark.skipif(not HAS_ENGINE_TRAIN_BATCH, reason="the 80/20 rule needs verl >= 0.8")

forking = get_policy_loss_fn("verl_cov.forking") if HAS_ENGINE_TRAIN_BATCH else None
PREFIX = "actor_rollout_ref.actor.policy_loss"


def reference_forking_set(entropy, mask, share) -> set[tuple[int, int]]:
    """Sort the valid tokens' entropies; keep every token at or above the ⌈ρ·N⌉-th largest."""
    positions = [p for p in valid_positions(mask) if math.isfinite(float(entropy[p]))]
    if not positions:
        return set()
    ranked = sorted((float(entropy[p]) for p in positions), reverse=True)
    threshold = ranked[math.ceil(Fraction(str(share)) * len(positions)) - 1]  # exact: ρ as written
    return {p for p in positions if float(entropy[p]) >= threshold}


def reference_ppo_terms(old_log_prob, log_prob, advantages, mask, keep, eps, clip_ratio_c=3.0):
    """verl's vanilla PPO per-token loss (dual clip for A < 0) on the kept tokens, 0 elsewhere."""
    terms = {}
    for p in valid_positions(mask):
        ratio = torch.exp(log_prob[p] - old_log_prob[p])
        a = float(advantages[p])
        term = torch.maximum(-a * ratio, -a * torch.clamp(ratio, 1 - eps, 1 + eps))
        if a < 0:
            term = torch.minimum(term, torch.tensor(-a * clip_ratio_c))
        terms[p] = term if p in keep else term * 0
    return terms


def random_entropy(seed, shape, ties=True):
    g = torch.Generator().manual_seed(1000 + seed)
    entropy = torch.rand(shape, generator=g) * 3
    if ties:
        entropy[:, ::5] = 1.5  # a block of equal entropies, some of them at the threshold
    return entropy


@pytest.mark.parametrize("threshold", ["host", "device"])
def test_top_share_keeps_ties_and_matches_the_sorted_reference(threshold, monkeypatch):
    """Both ways to the threshold (the CPU's kthvalue, the sync-free topk used on accelerators) agree with
    sorting; the device path is forced on the CPU here."""
    if threshold == "device":
        device_path = token_entropy._kth_largest_on_device
        monkeypatch.setattr(token_entropy, "_kth_largest_on_host", lambda r, n, s: device_path(r, torch.tensor(n), s))
    for seed in range(30):
        g = torch.Generator().manual_seed(seed)
        shape = (int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(1, 12, (1,), generator=g)))
        scores = torch.randint(0, 6, shape, generator=g).float()  # many ties
        mask = torch.rand(shape, generator=g) > 0.3
        for share in (1e-3, 0.2, 0.5, 0.8, 1.0):
            got = token_entropy.top_share(scores, mask, share)
            want = reference_forking_set(scores, mask, share)
            assert {tuple(p) for p in got.nonzero().tolist()} == want, (seed, share)


def test_top_share_never_selects_a_masked_or_non_finite_token():
    scores = torch.tensor([[5.0, float("nan"), float("inf"), 1.0, 9.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    assert token_entropy.top_share(scores, mask, 0.3).tolist() == [[True, False, False, False, False]]
    assert not token_entropy.top_share(scores, torch.zeros_like(mask), 1.0).any()


@needs_engine
def test_forking_hand_made():
    # entropies [0.1, 0.9, 0.5, 0.9, 0.2]: ρ = 0.2, ⌈ρ·5⌉ = 1, threshold 0.9, the tie keeps tokens 1 and 3.
    log_prob = torch.tensor([[-1.0, -2.0, -0.5, -0.3, -1.5]], requires_grad=True)
    old = log_prob.detach() + torch.tensor([[0.0, 0.05, 0.0, -0.02, 0.1]])
    adv = torch.tensor([[1.0, 2.0, -1.0, -0.5, 3.0]])
    mask = torch.ones(1, 5, dtype=torch.bool)
    with token_entropy.active(torch.tensor([[0.1, 0.9, 0.5, 0.9, 0.2]])):
        loss, metrics = forking(old, log_prob, adv, mask, "token-mean", actor_config("verl_cov.forking"))
    grad = grad_of(loss, log_prob)[0]
    assert grad.nonzero().flatten().tolist() == [1, 3]
    ratio = torch.exp(log_prob.detach() - old)[0]
    assert loss.item() == pytest.approx((-2.0 * ratio[1].item() + 0.5 * ratio[3].item()) / 5, rel=1e-6)
    assert metrics["actor/cov/forking_frac"] == pytest.approx(0.4)


@needs_engine
@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("share", [0.2, 0.5, 1.0])
def test_forking_matches_reference_on_random_batches(agg, seed, share):
    old, log_prob, adv, mask = random_batch(seed=seed, length=20)
    entropy = random_entropy(seed, mask.shape)
    config = actor_config("verl_cov.forking", clip_ratio=0.2, forking_share=share)
    with token_entropy.active(entropy):
        loss, metrics = forking(old, log_prob, adv, mask, agg, config)
    keep = reference_forking_set(entropy, mask, share)
    expected = aggregate(reference_ppo_terms(old, log_prob, adv, mask, keep, 0.2), mask, agg)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grad_of(loss, log_prob), grad_of(expected, log_prob), rtol=1e-5, atol=1e-6)
    assert metrics["actor/cov/forking_frac"] == pytest.approx(len(keep) / int(mask.sum()))


@needs_engine
def test_the_default_share_is_the_papers_0_2():
    old, log_prob, adv, mask = random_batch(seed=1, length=30, masked_share=0.0)
    entropy = random_entropy(1, mask.shape, ties=False)
    with token_entropy.active(entropy):
        _, metrics = forking(old, log_prob, adv, mask, "token-mean", actor_config("verl_cov.forking"))
    assert metrics["actor/cov/forking_frac"] == pytest.approx(math.ceil(0.2 * mask.numel()) / mask.numel())


@needs_engine
@pytest.mark.parametrize("mode", ["verl_cov.clip_cov", "verl_cov.kl_cov"])
def test_the_covariance_methods_with_the_80_20_mask_act_on_forking_tokens_only(mode):
    """With forking_share the method selects among the forking tokens and every other token gets no
    gradient; the count (its share of all N valid tokens) is the one it draws without the mask."""
    old, log_prob, adv, mask = random_batch(seed=3, length=24)
    entropy = random_entropy(3, mask.shape)
    keys = {"clip_cov_ratio": 0.1, "clip_cov_lb": 0.2} if mode.endswith("clip_cov") else {"kl_cov_ratio": 0.1}
    loss_fn = get_policy_loss_fn(mode)
    _, plain = loss_fn(old, log_prob, adv, mask, "token-sum", actor_config(mode, **keys))
    with token_entropy.active(entropy):
        masked, metrics = loss_fn(old, log_prob, adv, mask, "token-sum", actor_config(mode, forking_share=0.3, **keys))
    keep = torch.zeros_like(mask)
    for p in reference_forking_set(entropy, mask, 0.3):
        keep[p] = True
    grad = grad_of(masked, log_prob)
    assert not grad[~keep].any() and grad[keep].abs().sum() > 0
    assert metrics["actor/cov/forking_frac"] == pytest.approx(float(keep.sum()) / int(mask.sum()))
    assert (
        0
        < metrics["actor/cov/selected_frac"]
        <= min(plain["actor/cov/selected_frac"], metrics["actor/cov/forking_frac"])
    )


@needs_engine
def test_kl_cov_with_the_mask_against_the_reference():
    """KL-Cov + 80/20: the top ⌊k·N + u⌋ tokens by Cov among the forking tokens get β·|log π − log π_old|, the
    forking tokens keep −r·A, every other token adds nothing."""
    old, log_prob, adv, mask = random_batch(seed=4, length=24)
    entropy = random_entropy(4, mask.shape)
    kl_cov = get_policy_loss_fn("verl_cov.kl_cov")
    _, plain = kl_cov(old, log_prob, adv, mask, "token-sum", actor_config("verl_cov.kl_cov", kl_cov_ratio=0.1))
    config = actor_config("verl_cov.kl_cov", kl_cov_ratio=0.1, forking_share=0.4)
    with token_entropy.active(entropy):
        loss, _ = kl_cov(old, log_prob, adv, mask, "token-sum", config)
    keep = reference_forking_set(entropy, mask, 0.4)
    count = round(plain["actor/cov/selected_frac"] * int(mask.sum()))  # the batch's draw, without the mask
    cov = covariance(log_prob.detach(), adv, mask)
    penalised = top_k({p: c for p, c in cov.items() if p in keep}, count)
    terms = kl_cov_terms(old, log_prob, adv, mask, penalised, beta=1.0)
    expected = aggregate({p: t if p in keep else t * 0 for p, t in terms.items()}, mask, "token-sum")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(grad_of(loss, log_prob), grad_of(expected, log_prob), rtol=1e-5, atol=1e-6)


@needs_engine
def test_the_share_rounds_up_the_exact_product_not_its_float_noise():
    """ρ = 0.07 of 100 tokens is 7 (in floats 0.07·100 = 7.000000000000001, which a plain ceil makes 8)."""
    scores = torch.arange(100.0).view(4, 25)
    assert int(token_entropy.top_share(scores, torch.ones_like(scores, dtype=torch.bool), 0.07).sum()) == 7


@needs_engine
def test_clip_cov_with_the_mask_against_the_reference():
    old, log_prob, adv, mask = random_batch(seed=5, length=24)
    entropy = random_entropy(5, mask.shape)
    config = actor_config(
        "verl_cov.clip_cov", clip_cov_ratio=1.0, clip_cov_lb=-100.0, clip_cov_ub=100.0, forking_share=0.25
    )
    with token_entropy.active(entropy):
        loss, _ = get_policy_loss_fn("verl_cov.clip_cov")(old, log_prob, adv, mask, "token-mean", config)
    # r = 1 with the widest band cuts every candidate: the ratio-clipped tokens are all that remain, and of
    # those only the forking ones.
    keep = reference_forking_set(entropy, mask, 0.25)
    clipped = {p for p in valid_positions(mask) if p not in keep}
    terms = clip_cov_terms(old, log_prob, adv, mask, clipped, 0.2, 0.2)
    eps = 0.2
    for p in valid_positions(mask):
        ratio = math.exp(float(log_prob.detach()[p]) - float(old[p]))
        a = float(adv[p])
        if not -a * min(max(ratio, 1 - eps), 1 + eps) > -a * ratio:
            terms[p] = terms[p] * 0  # an unclipped token is a candidate, and r = 1 cuts it
    expected = aggregate(terms, mask, "token-mean")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)


@needs_engine
@pytest.mark.parametrize(
    "case",
    ["all_masked", "one_token", "zero_advantages", "nan_entropy"],
)
def test_degenerate_batches_give_a_finite_loss_and_metrics(case):
    old, log_prob, adv, mask = random_batch(seed=2, length=8)
    entropy = random_entropy(2, mask.shape)
    if case == "all_masked":
        mask = torch.zeros_like(mask)
    elif case == "one_token":
        mask = torch.zeros_like(mask)
        mask[1, 3] = True
    elif case == "zero_advantages":
        adv = torch.zeros_like(adv)
    else:
        entropy = torch.full_like(entropy, float("nan"))
    for mode in ("verl_cov.forking", "verl_cov.kl_cov", "verl_cov.clip_cov"):
        config = actor_config(mode, **({} if mode == "verl_cov.forking" else {"forking_share": 0.2}))
        # What verl's ppo_loss sets (verl_cov.forking is verl's vanilla, which without it divides 0 by 0
        # on an all-masked micro-batch, as verl_cov.vanilla does: tests/test_losses.py).
        config.global_batch_info.update(dp_size=1, batch_num_tokens=100, global_batch_size=8, loss_scale_factor=None)
        with token_entropy.active(entropy):
            loss, metrics = get_policy_loss_fn(mode)(old, log_prob, adv, mask, "token-mean", config)
        assert torch.isfinite(loss), (case, mode)
        assert all(math.isfinite(v) for v in metrics.values()), (case, mode, metrics)
        grad = grad_of(loss, log_prob)
        assert torch.isfinite(grad).all()
        if case == "one_token":
            assert metrics["actor/cov/forking_frac"] == 1.0
        if case in ("all_masked", "nan_entropy"):
            assert metrics["actor/cov/forking_frac"] == 0.0 and not grad.any()


@needs_engine
def test_without_the_entropy_of_the_update_forward_the_error_names_the_key():
    old, log_prob, adv, mask = random_batch(seed=0)
    with pytest.raises(RuntimeError, match=rf"{PREFIX}\.loss_mode='verl_cov.forking' needs the per-token entropy"):
        forking(old, log_prob, adv, mask, "token-mean", actor_config("verl_cov.forking"))
    config = actor_config("verl_cov.kl_cov", forking_share=0.2)
    with pytest.raises(RuntimeError, match=rf"{PREFIX}\.forking_share=0.2 needs the per-token entropy"):
        get_policy_loss_fn("verl_cov.kl_cov")(old, log_prob, adv, mask, "token-mean", config)


@needs_engine
@pytest.mark.parametrize(
    "keys, match",
    [
        ({"forking_share": 0.0}, r"forking_share=0\.0 is out of range: must be \(0, 1\], or null"),
        ({"forking_share": 1.5}, r"forking_share=1\.5 is out of range"),
        ({"forking_share": float("nan")}, r"forking_share=nan is out of range"),
        ({"seed": 3}, r"seed=3 is out of range: applies to verl_cov\.clip_cov and verl_cov\.kl_cov only"),
        (
            {"selection_scope": "everywhere"},
            r"selection_scope='everywhere' is out of range: must be one of micro_b",
        ),
        ({"target_entropy": 0.5}, r"target_entropy=0\.5 is out of range: applies to"),
    ],
)
def test_bad_forking_configs_fail_at_config_time_naming_the_key(keys, match):
    with pytest.raises(ValueError, match=rf"{PREFIX}\.{match}"):
        actor_config("verl_cov.forking", **keys)


@needs_engine
def test_forking_share_is_refused_where_nothing_reads_it():
    with pytest.raises(ValueError, match=rf"{PREFIX}\.forking_share=0\.2 .*verl_cov\.vanilla"):
        actor_config("verl_cov.vanilla", forking_share=0.2)


@needs_engine
@pytest.mark.parametrize("mode, keys", [("verl_cov.forking", {}), ("verl_cov.kl_cov", {"forking_share": 0.2})])
def test_global_scope_takes_the_80_20_quantile_over_the_mini_batch(mode, keys):
    """Accepted at config time: the engine adapter computes the mini-batch's H_t before its micro-batches."""
    assert token_entropy.wanted_over_mini_batch(actor_config(mode, selection_scope="global", **keys).policy_loss)
    assert not token_entropy.wanted_over_mini_batch(actor_config(mode, **keys).policy_loss)


@pytest.mark.skipif(HAS_ENGINE_TRAIN_BATCH, reason="verl >= 0.8 serves the 80/20 rule")
def test_verl_before_0_8_refuses_the_80_20_rule_at_config_time():
    with pytest.raises(ValueError, match=rf"{PREFIX}\.loss_mode='verl_cov.forking' needs verl >= 0\.8"):
        actor_config("verl_cov.forking")
    with pytest.raises(ValueError, match=rf"{PREFIX}\.forking_share=0\.2 .*needs verl >= 0\.8"):
        actor_config("verl_cov.kl_cov", forking_share=0.2)
