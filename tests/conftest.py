import pytest
import torch
from verl.workers.config import FSDPActorConfig

import verl_cov  # noqa: F401  (registers the modes)
from verl_cov.config import CovPolicyLossConfig
from verl_cov.selection import generator_for


def actor_config(loss_mode: str = "verl_cov.kl_cov", clip_ratio: float = 0.2, **policy_loss) -> FSDPActorConfig:
    """A real verl actor config holding our policy-loss config, as verl's workers build it."""
    return FSDPActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=clip_ratio,
        clip_ratio_low=clip_ratio,
        clip_ratio_high=clip_ratio,
        policy_loss=CovPolicyLossConfig(loss_mode=loss_mode, **policy_loss),
    )


@pytest.fixture(autouse=True)
def fresh_streams():
    """Every test starts each (seed, device) random stream from its seed."""
    generator_for.cache_clear()
    yield
    generator_for.cache_clear()


def random_batch(batch=4, length=16, seed=0, masked_share=0.25, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    log_prob = -torch.rand(batch, length, generator=g) * 4
    old_log_prob = log_prob + 0.3 * torch.randn(batch, length, generator=g)
    advantages = torch.randn(batch, length, generator=g) * 2
    mask = torch.rand(batch, length, generator=g) >= masked_share
    mask[0, 0] = True
    return old_log_prob.to(dtype), log_prob.to(dtype).requires_grad_(), advantages.to(dtype), mask
