"""Our modes driven through verl's real config and loss code, with a tiny HF causal LM."""

import pytest
import torch
from tiny_policy import VOCAB, micro_batch, response_log_probs, sequence_log_probs, tiny_qwen2
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl_hydra import build_actor
from verl_support import HAS_ENGINE_LOSS

pytestmark = pytest.mark.skipif(not HAS_ENGINE_LOSS, reason="verl < 0.7 has no workers/utils/losses.py::ppo_loss")
PREFIX = "actor_rollout_ref.actor.policy_loss"


def make_batch(seed=0, batch=4, prompt_len=5, response_len=12):
    g = torch.Generator().manual_seed(seed)
    prompts = [
        torch.randint(1, VOCAB, (int(n),), generator=g) for n in torch.randint(2, prompt_len + 1, (batch,), generator=g)
    ]
    responses = [
        torch.randint(1, VOCAB, (int(n),), generator=g)
        for n in torch.randint(1, response_len + 1, (batch,), generator=g)
    ]
    advantages = torch.randn(batch, response_len, generator=g)
    return prompts, responses, advantages, prompt_len, response_len


@pytest.mark.parametrize(
    "mode, extra",
    [("verl_cov.kl_cov", f"{PREFIX}.kl_cov_ratio=0.2"), ("verl_cov.clip_cov", f"{PREFIX}.clip_cov_ratio=0.2")],
)
def test_ppo_loss_runs_our_mode_and_trains_a_tiny_model(mode, extra):
    actor = build_actor([f"{PREFIX}.loss_mode={mode}", extra, f"{PREFIX}.clip_cov_lb=0.05"], overlay=True)
    model = tiny_qwen2()
    prompts, responses, advantages, prompt_len, response_len = make_batch()
    with torch.no_grad():
        old = response_log_probs(model, prompts, responses, response_len) - 0.05  # a slightly moved policy
    data = micro_batch(prompts, responses, old, advantages, prompt_len, response_len)

    from verl.workers.utils.losses import ppo_loss

    loss, metrics = ppo_loss(actor, {"log_probs": sequence_log_probs(model, prompts, responses)}, data)
    assert torch.isfinite(loss)
    for key in ("actor/cov/mean", "actor/cov/max", "actor/cov/selected_frac", "actor/pg_loss"):
        assert key in metrics
    assert metrics["actor/cov/selected_frac"].aggregate() > 0

    # The same loss and gradient as calling our loss directly on padded (batch, response_len) tensors.
    loss.backward()
    via_verl = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    mask = data["response_mask"].bool()
    direct, _ = get_policy_loss_fn(mode)(
        old, response_log_probs(model, prompts, responses, response_len), advantages, mask, actor.loss_agg_mode, actor
    )
    torch.testing.assert_close(direct, loss, rtol=1e-5, atol=1e-6)
    direct.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, via_verl[name], rtol=1e-4, atol=1e-6)

    before = [p.detach().clone() for p in model.parameters()]
    torch.optim.AdamW(model.parameters(), lr=1e-2).step()
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))
    with torch.no_grad():
        after = response_log_probs(model, prompts, responses, response_len)
    assert torch.isfinite(after).all()
