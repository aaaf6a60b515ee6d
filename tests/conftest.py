import sys

import pytest
import torch
from verl.workers.config import FSDPActorConfig

from verl_cov import plugin  # noqa: F401  registers the modes, as verl's entry point does in every process
from verl_cov.config import CovPolicyLossConfig

# Tests train tiny models: intra-op threads only make the test processes wait for each other.
torch.set_num_threads(1)


def actor_config(
    loss_mode: str = "verl_cov.kl_cov", clip_ratio: float = 0.2, config_class=CovPolicyLossConfig, **policy_loss
) -> FSDPActorConfig:
    """A real verl actor config holding a policy-loss config (ours, or verl's ``PolicyLossConfig`` for its
    built-ins), as verl's workers build it."""
    return FSDPActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=clip_ratio,
        clip_ratio_low=clip_ratio,
        clip_ratio_high=clip_ratio,
        policy_loss=config_class(loss_mode=loss_mode, **policy_loss),
    )


def random_batch(batch=4, length=16, seed=0, masked_share=0.25, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    log_prob = -torch.rand(batch, length, generator=g) * 4
    old_log_prob = log_prob + 0.3 * torch.randn(batch, length, generator=g)
    advantages = torch.randn(batch, length, generator=g) * 2
    mask = torch.rand(batch, length, generator=g) >= masked_share
    mask[0, 0] = True
    return old_log_prob.to(dtype), log_prob.to(dtype).requires_grad_(), advantages.to(dtype), mask


def pytest_collection_modifyitems(items):
    """Every test under tests/e2e runs verl's own trainer: marker ``e2e``."""
    for item in items:
        if "/tests/e2e/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)


def pytest_terminal_summary(terminalreporter):
    """Wall time and peak memory of each trainer run of the e2e suite."""
    runs = sys.modules.get("trainer_runs")
    if runs is not None and runs.STATS:
        terminalreporter.section("verl trainer runs: wall time and peak memory of the process tree")
        for stat in runs.STATS:
            terminalreporter.write_line(f"{stat['run']:<44} {stat['seconds']:>7.1f} s {stat['peak_gib']:>6.2f} GiB")
