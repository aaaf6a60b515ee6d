"""verl's built-in clip_cov and kl_cov, as contrib/verl's patch series leaves them, against this project's
plain reference of the paper's equations (paper_reference.py).

The series' new selection is opt-in: every config here applies contrib/verl/OPT_IN.txt (or the file that
VERL_COV_OPT_IN names, e.g. an empty one to run these checks on an earlier revision of the series).

Not collected on its own (no test_ prefix): test_contrib_verl.py runs it with pytest in a fresh process
whose PYTHONPATH puts the patched verl tree first and VERL_COV_PATCHED_VERL names that tree.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import verl
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
from verl.workers.config import PolicyLossConfig
from verl_patch_series import OPT_IN, opt_in_policy_loss
from verl_support import AGG_MODES, HAS_GLOBAL_BATCH_INFO

OPT_IN_KEYS = opt_in_policy_loss(Path(os.environ.get("VERL_COV_OPT_IN", OPT_IN)))

clip_cov = get_policy_loss_fn("clip_cov")
kl_cov = get_policy_loss_fn("kl_cov")


def builtin_config(loss_mode: str, clip_ratio: float = 0.2, **policy_loss):
    return actor_config(loss_mode, clip_ratio, config_class=PolicyLossConfig, **OPT_IN_KEYS, **policy_loss)


def test_the_patched_tree_is_under_test():
    assert Path(verl.__file__).is_relative_to(os.environ["VERL_COV_PATCHED_VERL"])
    assert "seed" in PolicyLossConfig.__dataclass_fields__
    assert PolicyLossConfig().cov_selection == "legacy"  # opt-in: the default is the old selection
    assert builtin_config("kl_cov").policy_loss.cov_selection == "hashed"


def test_kl_cov_hand_made():
    # log π = [-1,-2,-3,-4], A = [2,0,1,-3]: Cov = [3, 0, -0.5, 4.5]; k·N = 0.25·4 = 1 -> token 3 only.
    log_prob = torch.tensor([[-1.0, -2.0, -3.0, -4.0]], requires_grad=True)
    old = log_prob.detach() - torch.tensor([[0.1, 0.2, -0.1, 0.3]])
    adv = torch.tensor([[2.0, 0.0, 1.0, -3.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    loss, metrics = kl_cov(
        old, log_prob, adv, mask, "token-mean", builtin_config("kl_cov", kl_cov_ratio=0.25, ppo_kl_coef=1.0)
    )
    assert loss.item() == pytest.approx((-2 * math.exp(0.1) - math.exp(-0.1) + 3 * math.exp(0.3) + 0.3) / 4, rel=1e-6)
    expected_grad = [-2 * math.exp(0.1) / 4, 0.0, -math.exp(-0.1) / 4, (3 * math.exp(0.3) + 1) / 4]
    torch.testing.assert_close(grad_of(loss, log_prob)[0], torch.tensor(expected_grad))
    assert metrics["actor/cov/selected_frac"] == pytest.approx(0.25)
    assert metrics["actor/cov/mean"] == pytest.approx(7 / 4)
    assert metrics["actor/cov/micro_batch_peak"] == pytest.approx(4.5)


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("seed", range(4))
def test_kl_cov_matches_the_reference_loss_and_gradient(agg, seed):
    old, log_prob, adv, mask = random_batch(seed=seed, length=25)
    n_valid = int(mask.sum())
    config = builtin_config("kl_cov", kl_cov_ratio=5 / n_valid, ppo_kl_coef=0.7)  # k·N = 5: no random rounding
    loss, metrics = kl_cov(old, log_prob, adv, mask, agg, config)

    penalised = top_k(covariance(log_prob.detach(), adv, mask), 5)
    ref_log_prob = log_prob.detach().clone().requires_grad_()
    reference = aggregate(kl_cov_terms(old, ref_log_prob, adv, mask, penalised, 0.7), mask, agg, HAS_GLOBAL_BATCH_INFO)
    torch.testing.assert_close(loss, reference.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_of(loss, log_prob), grad_of(reference, ref_log_prob), rtol=1e-5, atol=1e-7)
    assert metrics["actor/cov/selected_frac"] == pytest.approx(5 / n_valid)


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("seed", range(4))
def test_clip_cov_cuts_candidates_only_and_is_the_reference_elsewhere(agg, seed):
    old, log_prob, adv, mask = random_batch(seed=seed, length=24)
    config = builtin_config("clip_cov", clip_cov_ratio=0.1, clip_cov_lb=0.2, clip_cov_ub=3.0, seed=seed)
    loss, metrics = clip_cov(old, log_prob, adv, mask, agg, config)
    grad = grad_of(loss, log_prob)

    ref_log_prob = log_prob.detach().clone().requires_grad_()
    uncut = aggregate(clip_cov_terms(old, ref_log_prob, adv, mask, set(), 0.2, 0.2), mask, agg, HAS_GLOBAL_BATCH_INFO)
    cut = infer_cut(grad, grad_of(uncut, ref_log_prob), mask)
    cov = covariance(log_prob.detach(), adv, mask)
    candidates = {
        p for p, c in cov.items() if 0.2 < c < 3.0 and not ratio_clipped(old, log_prob.detach(), adv, p, 0.2, 0.2)
    }
    n_valid = len(cov)
    assert cut <= candidates
    assert len(cut) in {min(math.floor(0.1 * n_valid) + extra, len(candidates)) for extra in (0, 1)}
    assert metrics["actor/cov/selected_frac"] == pytest.approx(len(cut) / n_valid)

    ref_log_prob = log_prob.detach().clone().requires_grad_()
    reference = aggregate(clip_cov_terms(old, ref_log_prob, adv, mask, cut, 0.2, 0.2), mask, agg, HAS_GLOBAL_BATCH_INFO)
    torch.testing.assert_close(loss, reference.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_of(reference, ref_log_prob), rtol=1e-5, atol=1e-7)


def all_candidates_batch(tokens: int):
    """One sequence of ``tokens`` valid tokens, every one a Clip-Cov candidate (band and ratio clip wide)."""
    g = torch.Generator().manual_seed(1)
    log_prob = (-torch.rand(1, tokens, generator=g) * 4).requires_grad_()
    return (
        log_prob.detach() + 0.01,
        log_prob,
        torch.randn(1, tokens, generator=g),
        torch.ones(1, tokens, dtype=torch.bool),
    )


def clip_cov_cut(seed: int, tokens: int, ratio: float) -> list[list[int]]:
    old, log_prob, adv, mask = all_candidates_batch(tokens)
    config = builtin_config(
        "clip_cov", clip_ratio=10.0, clip_cov_ratio=ratio, clip_cov_lb=-1e9, clip_cov_ub=1e9, seed=seed
    )
    loss, _ = clip_cov(old, log_prob, adv, mask, "token-sum", config)
    return torch.nonzero(grad_of(loss, log_prob) == 0).tolist()


def test_the_same_seed_cuts_the_same_tokens_in_two_fresh_processes():
    script = (
        "import sys, json; from builtin_reference_checks import clip_cov_cut; "
        "print(json.dumps(clip_cov_cut(int(sys.argv[1]), 2000, 0.01)))"
    )

    def cut_in_fresh_process(seed: int) -> list:
        result = subprocess.run([sys.executable, "-c", script, str(seed)], capture_output=True, text=True, check=True)
        return json.loads(result.stdout.splitlines()[-1])

    first, again, other = cut_in_fresh_process(3), cut_in_fresh_process(3), cut_in_fresh_process(4)
    assert len(first) == 20 and first == again  # floor(2000 x 0.01 + u)
    assert other != first


def test_the_expected_count_is_ratio_times_n_below_one_token():
    # 2000 tokens x 2e-4 = 0.4 tokens per micro-batch: max(1, floor(·)) would cut 1 every time.
    counts = [len(clip_cov_cut(seed, 2000, 2e-4)) for seed in range(400)]
    assert set(counts) == {0, 1}
    assert sum(counts) / len(counts) == pytest.approx(0.4, abs=4 * math.sqrt(0.4 * 0.6 / 400))


def test_the_same_tokens_get_the_same_cut_whatever_was_drawn_before():
    """Nothing carries over between calls: a resumed run repeats the cut when its tokens are reproduced bit for bit."""
    first = clip_cov_cut(3, 2000, 0.01)
    for seed in range(4):  # what the interrupted run drew before its checkpoint
        clip_cov_cut(seed, 1000 + seed, 0.01)
    assert clip_cov_cut(3, 2000, 0.01) == first


def _cut_on_rank(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(100 + rank)
        gathered = [None, None]
        dist.all_gather_object(gathered, clip_cov_cut(3, 2000, 0.01))
        if rank == 0:
            results.put(gathered)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_holding_one_micro_batch_cut_the_same_tokens(tmp_path):
    """Tensor-parallel and sequence-parallel ranks hold the same micro-batch; they must cut the same tokens."""
    results = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_cut_on_rank, args=(str(tmp_path / "store"), results), nprocs=2, start_method="spawn")
    rank_0, rank_1 = results.get()
    assert len(rank_0) == 20 and rank_1 == rank_0


def _degenerate():
    old, log_prob, adv, mask = random_batch(seed=9, length=12)
    one_token = torch.zeros_like(mask)
    one_token[2, 5] = True
    return {
        "all masked": (old, log_prob, adv, torch.zeros_like(mask)),
        "one token": (old, log_prob, adv, one_token),
        "equal advantages": (old, log_prob, torch.full_like(adv, -0.25), mask),
    }


@pytest.mark.parametrize("name", ["all masked", "one token", "equal advantages"])
@pytest.mark.parametrize("mode", ["clip_cov", "kl_cov"])
def test_the_cov_metrics_on_degenerate_micro_batches_are_finite_and_the_reference(mode, name):
    old, log_prob, adv, mask = _degenerate()[name]
    config = builtin_config(mode, clip_cov_ratio=0.3, kl_cov_ratio=0.3, clip_cov_lb=-1.0, clip_cov_ub=1.0)
    loss, metrics = get_policy_loss_fn(mode)(old, log_prob, adv, mask, "token-sum", config)
    assert torch.isfinite(loss)
    assert all(math.isfinite(v) and abs(v) < 1e30 for v in metrics.values()), metrics
    cov = covariance(log_prob.detach(), adv, mask) if mask.any() else {}
    assert metrics["actor/cov/mean"] == pytest.approx(sum(cov.values()) / max(len(cov), 1), abs=1e-6)
    assert metrics["actor/cov/micro_batch_peak"] == pytest.approx(max(cov.values(), default=0.0), abs=1e-6)
    selected = round(metrics["actor/cov/selected_frac"] * len(cov))
    most = math.floor(0.3 * len(cov)) + 1 if cov else 0  # clip_cov: fewer if fewer are candidates
    assert selected <= most and (mode == "clip_cov" or selected >= most - 1)


def test_no_cov_metric_name_asks_verl_for_a_max_or_min():
    """verl reduces a metric whose key holds "max" or "min" by that, the rest by mean; these are per micro-batch
    values to average, so none may carry either word."""
    _, metrics = kl_cov(*random_batch(seed=2), "token-mean", builtin_config("kl_cov"))
    keys = [key for key in metrics if key.startswith("actor/cov/")]
    assert len(keys) == 3 and not any("max" in key or "min" in key for key in keys)
