"""verl <= 0.7: our modes driven by the legacy FSDP actor, DataParallelPPOActor.update_policy, on CPU."""

import tempfile

import pytest
import torch
from tiny_policy import VOCAB, tiny_qwen2
from verl_support import HAS_LEGACY_ACTOR

from verl_cov.config import CovPolicyLossConfig

pytestmark = pytest.mark.skipif(not HAS_LEGACY_ACTOR, reason="verl >= 0.8 has no legacy dp_actor")


@pytest.fixture(scope="module", autouse=True)
def single_process_group():
    """dp_actor asks torch.distributed for its rank: a one-process gloo group, as on one GPU."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", init_method=f"file://{tempfile.mktemp()}", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def rollout_batch(batch=8, prompt_len=5, response_len=6):
    from verl import DataProto

    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(1, VOCAB, (batch, prompt_len), generator=g)
    responses = torch.randint(1, VOCAB, (batch, response_len), generator=g)
    input_ids = torch.cat([prompts, responses], dim=1)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, prompt_len + 3 :] = 0  # one response ends early
    tensors = {
        "responses": responses,
        "response_mask": attention_mask[:, prompt_len:],
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
        "old_log_probs": -torch.rand(batch, response_len, generator=g) * 3,
        "advantages": torch.randn(batch, 1, generator=g).expand(batch, response_len).contiguous(),
    }
    return DataProto.from_dict(tensors=tensors, meta_info={"temperature": 1.0})


@pytest.mark.parametrize("mode", ["verl_cov.clip_cov", "verl_cov.kl_cov", "verl_cov.vanilla"])
def test_update_policy_trains_with_our_mode(mode):
    from verl.workers.actor.dp_actor import DataParallelPPOActor
    from verl.workers.config import FSDPActorConfig

    policy_loss = CovPolicyLossConfig(loss_mode=mode, kl_cov_ratio=0.2, clip_cov_ratio=0.2, clip_cov_lb=0.01)
    config = FSDPActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_mini_batch_size=4,  # two mini-batches: the second is off-policy, where KL-Cov acts
        ppo_micro_batch_size_per_gpu=2,
        use_torch_compile=False,
        clip_ratio_low=1.0 if mode == "verl_cov.clip_cov" else 0.2,
        clip_ratio_high=1.0 if mode == "verl_cov.clip_cov" else 0.2,
        policy_loss=policy_loss,
    )
    model = tiny_qwen2()
    before = [p.detach().clone() for p in model.parameters()]
    actor = DataParallelPPOActor(config, model, torch.optim.AdamW(model.parameters(), lr=1e-2))
    metrics = actor.update_policy(rollout_batch())

    assert len(metrics["actor/cov/mean"]) == 4  # one entry per micro-batch
    assert all(torch.isfinite(torch.tensor(metrics[k])).all() for k in metrics if k.startswith("actor/cov/"))
    if mode != "verl_cov.vanilla":
        assert max(metrics["actor/cov/selected_frac"]) > 0
    assert len(metrics["actor/grad_norm"]) == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
