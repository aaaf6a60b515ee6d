"""One data-parallel rank training one mini-batch through ``engine_adapter``, for the selection-scope tests.

A stand-in engine does what verl's ``BaseEngine.train_batch`` does around the policy loss: it splits
its rank's rows of the mini-batch into micro-batches (as many as the test asks, so ranks may hold
different numbers) and calls the loss on each. Which tokens the loss selected is read off the
gradient: a Clip-Cov token is cut when its gradient is exactly 0 (the ratio clip is set wide enough
never to act), a KL-Cov token is penalised when its gradient departs from the plain −A·ratio term.
"""

from __future__ import annotations

import functools
import os
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from conftest import actor_config
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import get_policy_loss_fn

from verl_cov import plugin  # noqa: F401  registers the modes
from verl_cov.engine_adapter import with_mini_batch_statistics

BATCH, LENGTH = 12, 40
SHARES = {"verl_cov.kl_cov": {"kl_cov_ratio": 0.03}, "verl_cov.clip_cov": {"clip_cov_ratio": 0.03}}
BAND = {"clip_cov_lb": 0.5, "clip_cov_ub": 4.0}


def mini_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """The whole mini-batch, the same on every rank; each rank keeps its rows."""
    g = torch.Generator().manual_seed(seed)
    log_prob = -torch.rand(BATCH, LENGTH, generator=g) * 4
    lengths = torch.randint(5, LENGTH + 1, (BATCH,), generator=g)
    return {
        "log_prob": log_prob,
        "old_log_probs": log_prob + 0.2 * torch.randn(BATCH, LENGTH, generator=g),
        "advantages": torch.randn(BATCH, 1, generator=g).expand(BATCH, LENGTH) * 2,
        "response_mask": torch.arange(LENGTH)[None, :] < lengths[:, None],
    }


def config(mode: str, scope: str, **policy_loss):
    return actor_config(mode, clip_ratio=10.0, selection_scope=scope, **SHARES[mode], **BAND, **policy_loss)


class StandInEngine:
    """verl's engine as far as the hook sees it: a data-parallel group and a train_batch."""

    def __init__(self, micro_batch_rows: list[int], group):
        self.micro_batch_rows, self.group, self.selected = micro_batch_rows, group, []

    def get_data_parallel_group(self):
        return self.group

    @with_mini_batch_statistics
    def train_batch(self, data: TensorDict, loss_function):
        for micro in data.split(self.micro_batch_rows):
            self.selected.append(loss_function(micro))


def selected_by_loss(micro: TensorDict, config) -> torch.Tensor:
    """Run the policy loss on one micro-batch; return the tokens it acted on, from the gradient."""
    log_prob = micro["log_prob"].clone().requires_grad_()
    mask, advantages = micro["response_mask"], micro["advantages"]
    loss, _ = get_policy_loss_fn(config.policy_loss.loss_mode)(
        micro["old_log_probs"], log_prob, advantages, mask, "token-mean", config
    )
    (grad,) = torch.autograd.grad(loss, log_prob)
    grad = grad * mask.sum().clamp(min=1)  # token-mean over this micro-batch -> per-token terms
    if config.policy_loss.loss_mode == "verl_cov.clip_cov":
        return mask & (grad == 0)
    plain = -advantages * torch.exp(log_prob.detach() - micro["old_log_probs"])
    return mask & ((grad - plain).abs() > 1e-4)


def train_rank(rank: int, world: int, micro_batch_rows: list[int], mode: str, scope: str, group=None) -> torch.Tensor:
    """This rank's rows of the mini-batch trained through the hook; the (rows, LENGTH) tokens selected."""
    rows = torch.tensor_split(torch.arange(BATCH), world)[rank]
    data = TensorDict({key: value[rows] for key, value in mini_batch().items()}, batch_size=[len(rows)])
    actor = config(mode, scope)
    engine = StandInEngine(micro_batch_rows, group)
    engine.train_batch(data, functools.partial(selected_by_loss, config=actor))
    return torch.cat(engine.selected)


def spawned_rank(rank: int, world: int, init_file: str, splits: list[list[int]], out: str) -> None:
    """Entry point of a spawned process: gloo group, then every (mode, scope) with this rank's split."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    results = {}
    for mode in SHARES:
        for scope in ("global", "micro_batch"):
            results[mode, scope] = train_rank(rank, world, splits[rank], mode, scope, dist.group.WORLD)
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()
