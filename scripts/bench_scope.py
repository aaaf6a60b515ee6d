"""Extra cost of selection_scope=global: the same mini-batch trained with micro-batch and global scope,
side by side, on several CPU processes (gloo) or one.

Each rank holds ``rows x length`` tokens of a mini-batch, split into ``--micro`` micro-batches; a
mini-batch costs the policy loss (forward + backward) of every micro-batch, plus, in global scope, the
mini-batch statistics with their collectives (``verl_cov.scope``). Rank 0 prints one JSON line per
mode: milliseconds per mini-batch for each scope, the statistics alone, and the ratio global / micro-batch.

    python scripts/bench_scope.py [--world 2] [--rows 32] [--length 4096] [--micro 4] [--repeat 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config import FSDPActorConfig

from verl_cov import (
    plugin,  # noqa: F401  registers the modes on any verl (not only through 0.9's entry point)
    scope,
)
from verl_cov.config import CovPolicyLossConfig

SHARES = dict(clip_cov_ratio=2e-4, kl_cov_ratio=2e-3, ppo_kl_coef=1.0)


def actor(mode: str, selection_scope: str) -> FSDPActorConfig:
    policy_loss = CovPolicyLossConfig(loss_mode=mode, selection_scope=selection_scope, **SHARES)
    return FSDPActorConfig(strategy="fsdp", rollout_n=8, ppo_micro_batch_size_per_gpu=1, policy_loss=policy_loss)


def tensors(rows: int, length: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    log_prob = -torch.rand(rows, length, generator=g) * 3
    old_log_prob = log_prob + 0.05 * torch.randn(rows, length, generator=g)
    advantages = torch.randn(rows, 1, generator=g).expand(rows, length).contiguous()
    mask = torch.arange(length)[None] < torch.randint(length // 4, length + 1, (rows, 1), generator=g)
    return old_log_prob, log_prob, advantages, mask


def mini_batch_ms(config, data, micro: int, group, repeat: int) -> tuple[float, float]:
    """Median ms per mini-batch (statistics + every micro-batch's loss and backward), and of the statistics."""
    old_log_prob, log_prob, advantages, mask = data
    loss_fn = get_policy_loss_fn(config.policy_loss.loss_mode)
    totals, stats_only = [], []
    for _ in range(repeat + 1):  # the first is a warm-up
        if group is not None:
            dist.barrier(group)
        start = time.perf_counter()
        context = scope.mini_batch(config.policy_loss, old_log_prob, advantages, mask, group=group)
        stats_done = time.perf_counter()
        with context:
            for rows in torch.arange(mask.shape[0]).tensor_split(micro):
                leaf = log_prob[rows].clone().requires_grad_()
                loss, _ = loss_fn(old_log_prob[rows], leaf, advantages[rows], mask[rows], "token-mean", config)
                loss.backward()
        totals.append(time.perf_counter() - start)
        stats_only.append(stats_done - start)
    return 1e3 * statistics.median(totals[1:]), 1e3 * statistics.median(stats_only[1:])


def run(rank: int, world: int, init_file: str | None, args: argparse.Namespace) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    group = None
    if init_file is not None:
        dist.init_process_group(
            "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=300)
        )
        group = dist.group.WORLD
    data = tensors(args.rows, args.length, seed=rank)
    for mode in ("verl_cov.clip_cov", "verl_cov.kl_cov"):
        local, _ = mini_batch_ms(actor(mode, "micro_batch"), data, args.micro, group, args.repeat)
        global_, stats_ms = mini_batch_ms(actor(mode, "global"), data, args.micro, group, args.repeat)
        if rank == 0:
            row = {
                "mode": mode,
                "world": world,
                "tokens_per_rank": args.rows * args.length,
                "micro_batches": args.micro,
                "micro_batch_ms": round(local, 2),
                "global_ms": round(global_, 2),
                "global_statistics_ms": round(stats_ms, 2),
                "ratio_global_vs_micro_batch": round(global_ / local, 3),
            }
            print(json.dumps(row), flush=True)
    if group is not None:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=int, default=2, help="gloo processes (1: no process group)")
    parser.add_argument("--rows", type=int, default=32, help="responses per rank in one mini-batch")
    parser.add_argument("--length", type=int, default=4096, help="response length")
    parser.add_argument("--micro", type=int, default=4, help="micro-batches per rank")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    if args.world == 1:
        run(0, 1, None, args)
        return
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(run, args=(args.world, os.path.join(folder, "init"), args), nprocs=args.world, join=True)


if __name__ == "__main__":
    main()
