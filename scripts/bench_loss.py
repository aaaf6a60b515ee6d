"""Time verl-cov's losses against verl's vanilla and built-in clip_cov / kl_cov on the same tensors.

Prints one JSON line per (device, mode, size): the fastest and the median milliseconds per forward+backward
of the loss over the rounds (the modes interleaved round by round), the ratio of the fastest
to verl's vanilla and to verl's built-in version of the same method, and on CUDA the peak memory the
call adds (bytes per token: O(tokens), never tokens x vocab).

    python scripts/bench_loss.py [--sizes 8x1024,32x8192] [--repeat 10] [--device cpu|cuda|all]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config import FSDPActorConfig, PolicyLossConfig

from verl_cov import (
    plugin,  # noqa: F401  registers the modes on any verl (not only through 0.9's entry point)
    token_entropy,
)
from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH
from verl_cov.config import CovPolicyLossConfig

# (mode, verl built-in counterpart)
MODES = [
    ("vanilla", None),
    ("verl_cov.vanilla", "vanilla"),
    ("clip_cov", None),
    ("kl_cov", None),
    ("verl_cov.clip_cov", "clip_cov"),
    ("verl_cov.kl_cov", "kl_cov"),
]
if HAS_ENGINE_TRAIN_BATCH:  # the 80/20 rule (verl >= 0.8): verl's vanilla with a mask, against verl's vanilla
    MODES.append(("verl_cov.forking", "vanilla"))
SETTINGS = dict(clip_cov_ratio=2e-4, clip_cov_lb=1.0, clip_cov_ub=5.0, kl_cov_ratio=2e-3, ppo_kl_coef=1.0)


def actor_config(mode: str) -> FSDPActorConfig:
    loss_config = CovPolicyLossConfig if mode.startswith("verl_cov.") else PolicyLossConfig
    return FSDPActorConfig(
        strategy="fsdp",
        rollout_n=8,
        ppo_micro_batch_size_per_gpu=1,
        policy_loss=loss_config(loss_mode=mode, **SETTINGS),
    )


def make_inputs(batch: int, length: int, device: torch.device):
    g = torch.Generator(device=device).manual_seed(0)
    log_prob = -torch.rand(batch, length, generator=g, device=device) * 3
    old_log_prob = log_prob + 0.05 * torch.randn(batch, length, generator=g, device=device)
    advantages = torch.randn(batch, 1, generator=g, device=device).expand(batch, length).contiguous()
    lengths = torch.randint(length // 4, length + 1, (batch, 1), generator=g, device=device)
    mask = torch.arange(length, device=device) < lengths
    return old_log_prob, log_prob, advantages, mask


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_of(mode: str, inputs):
    """One forward + backward of ``mode``'s loss on ``inputs``."""
    old_log_prob, log_prob, advantages, mask = inputs
    loss_fn, config = get_policy_loss_fn(mode), actor_config(mode)

    # the 80/20 rule's H_t of the update forward, as verl's engine hands it over (verl_cov.token_entropy)
    entropy = torch.rand(log_prob.shape, generator=torch.Generator().manual_seed(1)).to(log_prob.device) * 3

    def step():
        leaf = log_prob.detach().requires_grad_()
        with token_entropy.active(entropy):
            loss, _ = loss_fn(old_log_prob, leaf, advantages, mask, "token-mean", config)
        loss.backward()

    return step


def peak_bytes(step, device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    return torch.cuda.max_memory_allocated() - base


def time_modes(steps: dict, device: torch.device, repeat: int) -> dict[str, tuple[float, float]]:
    """(fastest, median) milliseconds per step of each mode, the modes interleaved round by round, so a change
    in the machine's load falls on all of them alike. The ratios use the fastest round: load and timer noise
    only ever add time (on a shared 2-core VM the median of the same loss moved by up to 50 % between runs)."""
    for step in steps.values():
        step(), step()  # warm-up
    times: dict[str, list[float]] = {mode: [] for mode in steps}
    for _ in range(repeat):
        for mode, step in steps.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            times[mode].append((time.perf_counter() - start) * 1e3)
    return {mode: (min(values), statistics.median(values)) for mode, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="8x1024,8x8192,32x2048,32x8192", help="comma-separated BATCHxLENGTH")
    parser.add_argument("--repeat", type=int, default=30, help="rounds; each mode runs once per round")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    args = parser.parse_args()
    devices = [torch.device("cpu")] if args.device != "cuda" else []
    if args.device != "cpu" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    for device in devices:
        for size in args.sizes.split(","):
            batch, length = (int(x) for x in size.lower().split("x"))
            inputs = make_inputs(batch, length, device)
            steps = {mode: step_of(mode, inputs) for mode, _ in MODES}
            peaks = {mode: peak_bytes(step, device) for mode, step in steps.items()}
            times = time_modes(steps, device, args.repeat)
            for mode, builtin in MODES:
                (ms, median), peak = times[mode], peaks[mode]
                record = {
                    "device": device.type,
                    "mode": mode,
                    "batch": batch,
                    "length": length,
                    "tokens": batch * length,
                    "ms": round(ms, 3),
                    "ms_median": round(median, 3),
                    "vs_vanilla": round(ms / times["vanilla"][0], 3),
                    "vs_verl_builtin": round(ms / times[builtin][0], 3) if builtin else None,
                    "peak_bytes_per_token": round(peak / (batch * length), 1) if peak is not None else None,
                }
                print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
