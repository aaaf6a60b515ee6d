"""On a CUDA device: the selection never waits for the device, and CUDA gives the CPU's answers.

Skipped without a GPU (CI has none); run on a lent GPU machine with ``pytest -m gpu``.
"""

import pytest
import torch
from conftest import actor_config, random_batch
from verl.trainer.ppo.core_algos import get_policy_loss_fn

from verl_cov.covariance import token_covariance
from verl_cov.metrics import mechanism_metrics, selection_metrics
from verl_cov.selection import batch_draw, random_tokens, salt_of, stochastic_count, token_keys, top_k_tokens

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_selection_and_metrics_make_no_host_sync():
    old, log_prob, adv, mask = (t.cuda() for t in random_batch(batch=32, length=2048))
    salt = salt_of(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        covariance = token_covariance(log_prob, adv, mask)
        keys = token_keys(old, adv, salt)
        count = stochastic_count(2e-3, mask, batch_draw(old, adv, mask, salt))
        top = top_k_tokens(covariance.cov, mask, count, 2e-3)
        drawn = random_tokens(mask & (covariance.cov > 0), count, 2e-3, keys)
        mechanism_metrics(old, mask, covariance)
        selection_metrics(covariance, top | drawn)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("mode", ["verl_cov.kl_cov", "verl_cov.clip_cov", "verl_cov.vanilla"])
def test_cuda_matches_cpu(mode):
    """The selection's hash is integer arithmetic: the same tokens on either device, whatever the mode."""
    cpu = random_batch(batch=8, length=512, seed=3)
    config = actor_config(mode, kl_cov_ratio=0.01, clip_cov_ratio=0.01, clip_cov_lb=0.1)
    cpu_loss, cpu_metrics = get_policy_loss_fn(mode)(*cpu, "token-mean", config)
    (cpu_grad,) = torch.autograd.grad(cpu_loss, cpu[1])
    cuda = [t.detach().cuda() for t in cpu]
    cuda[1].requires_grad_()
    cuda_loss, cuda_metrics = get_policy_loss_fn(mode)(*cuda, "token-mean", config)
    (cuda_grad,) = torch.autograd.grad(cuda_loss, cuda[1])
    torch.testing.assert_close(cuda_loss.cpu(), cpu_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cuda_grad.cpu(), cpu_grad, rtol=1e-5, atol=1e-6)
    assert cuda_metrics.keys() == cpu_metrics.keys()
    for key, value in cpu_metrics.items():
        assert cuda_metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


@pytest.mark.parametrize("mode", ["verl_cov.kl_cov", "verl_cov.clip_cov"])
def test_global_scope_selects_on_cuda_what_it_selects_on_cpu(mode):
    """The mini-batch statistics and the per-micro-batch selection, on CUDA tensors (as under NCCL)."""
    from verl_cov import scope
    from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH

    if not HAS_ENGINE_TRAIN_BATCH:
        pytest.skip("global scope needs verl >= 0.8")
    old, _, adv, mask = random_batch(batch=16, length=1024, seed=4)
    config = actor_config(mode, selection_scope="global", kl_cov_ratio=0.01, clip_cov_ratio=0.01, clip_cov_lb=0.1)
    stats = scope.mini_batch_statistics(config.policy_loss, old, adv, mask)
    cpu, _ = scope.selected_tokens(mode, old, adv, mask, stats)
    cuda, _ = scope.selected_tokens(mode, old.cuda(), adv.cuda(), mask.cuda(), stats)
    assert cpu.any() and torch.equal(cuda.cpu(), cpu)
