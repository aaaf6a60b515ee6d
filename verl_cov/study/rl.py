"""One RL run of the study: rollout at temperature 1, rule-based reward, verl's GRPO advantages, and
several mini-batch updates per rollout batch through verl's ``ppo_loss``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import get_adv_estimator_fn
from verl.utils import tensordict_utils as tu
from verl.utils.metric import reduce_metrics
from verl.workers.utils.losses import ppo_loss

from verl_cov import controller, scope, token_entropy
from verl_cov.covariance import token_covariance
from verl_cov.study.modes import actor_config
from verl_cov.study.policy import TemplatePolicy, build_policy, next_token_log_probs, response_log_probs, sample
from verl_cov.study.tasks import TASKS, Task

PERF_KEY = "val-core/sum/acc/mean@1"
TOP_SHARE = 2e-3  # the concentration statistic: mean Cov of the top 0.2 % of a step's tokens (the paper's 7B k)


@dataclass
class RunConfig:
    task: str = "forking"
    steps: int = 300
    prompts_per_step: int = 64
    samples_per_prompt: int = 8  # GRPO group size, as in the paper
    mini_batches: int = 8  # updates per rollout batch, as in the paper (256 prompts, mini-batch 32)
    lr: float = 5e-4
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    eval_every: int = 10
    pass_k: int = 8
    seed: int = 0


def verl_micro_batch(prompts, responses, old_log_probs, advantages) -> TensorDict:
    """A micro-batch in the layout verl's FSDP engine hands to ``ppo_loss`` (no padding in this task)."""
    batch = prompts.shape[0]
    data = TensorDict(
        {
            "prompts": prompts,
            "responses": responses,
            "attention_mask": torch.ones(batch, prompts.shape[1] + responses.shape[1], dtype=torch.long),
            "response_mask": torch.ones_like(responses),
            "old_log_probs": old_log_probs,
            "advantages": advantages,
        },
        batch_size=[batch],
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=responses.numel(), global_batch_size=batch)
    return data


def update_forward(model, prompts, responses) -> tuple[torch.Tensor, torch.Tensor]:
    """The update's forward pass, as verl's engine returns it: per-position log-probs of whole sequences in
    verl's no-padding layout (position t holds log π(token t+1 | tokens <= t), each sequence's last position
    0), and the detached entropy H_t of π at each response token, (batch, response_len)."""
    sequences = torch.cat([prompts, responses], dim=1)
    log_probs = next_token_log_probs(model, sequences)[:, :-1]
    picked = log_probs.gather(-1, sequences[:, 1:, None]).squeeze(-1)
    at_response = log_probs[:, prompts.shape[1] - 1 :].detach()
    entropy = -(at_response.exp() * at_response).sum(-1)
    return torch.cat([picked, torch.zeros_like(picked[:, :1])], dim=1).flatten(), entropy


@torch.no_grad()
def evaluate(model, task: Task, pass_k: int) -> dict[str, float]:
    """Exact held-out pass@1 and pass@k at temperature 1, with no sampling noise.

    The correct responses of a prompt are few (8 or 9), so the probability p that one sample is correct
    is a finite sum of their sequence probabilities; then pass@1 = p and pass@k = 1 − (1 − p)^k.
    """
    held_out = task.split[1]
    answers = [task.correct_answers(x, y) for x, y in held_out]
    prompts = task.encode_prompts([pair for pair, correct in zip(held_out, answers, strict=True) for _ in correct])
    responses = task.responses([answer for correct in answers for answer in correct])
    probability = response_log_probs(model, prompts, responses).sum(-1).exp()
    p = torch.stack([part.sum() for part in probability.split([len(correct) for correct in answers])])
    return {PERF_KEY: p.mean().item(), f"val-aux/sum/acc/pass@{pass_k}": (1 - (1 - p) ** pass_k).mean().item()}


def concentration(old_log_probs: torch.Tensor, advantages: torch.Tensor) -> dict[str, float]:
    """The paper's measure of where the covariance sits: mean Cov over a step's top ``TOP_SHARE`` of
    tokens, and over all tokens (Cov centred over the whole step)."""
    cov = token_covariance(old_log_probs, advantages, torch.ones_like(old_log_probs, dtype=torch.bool)).cov.flatten()
    top = cov.topk(max(1, math.ceil(TOP_SHARE * cov.numel()))).values
    return {"study/cov_top_mean": top.mean().item(), "study/cov_all_mean": cov.mean().item()}


def train(mode: str, config: RunConfig, log_path: Path, on_step: Callable[[], None] = lambda: None) -> Path:
    """Train one mode and write its metrics, one verl file-logger line per step, to ``log_path``."""
    task = TASKS[config.task]
    model = TemplatePolicy(build_policy(task.vocab_size, config.seed), task)
    responses_per_step = config.prompts_per_step * config.samples_per_prompt
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0, eps=config.adam_eps)
    mini_batch = responses_per_step // config.mini_batches
    actor = actor_config(
        mode, config.seed, mini_batch, config.samples_per_prompt, task.response_len, task.name, config.steps
    )
    grpo = get_adv_estimator_fn("grpo")
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    train_pairs = task.split[0]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # The entropy target's state (schedule step, integral, Ĥ_0) is this run's alone, as in a verl worker.
    with log_path.open("w") as log, controller.run_state() as target_state:

        def write(step: int, data: dict) -> None:
            log.write(json.dumps({"step": step, "data": data}) + "\n")
            log.flush()  # a whole line at a time, for whoever follows the run (the demo's progress bar)

        write(0, evaluate(model, task, config.pass_k))
        for step in range(1, config.steps + 1):
            target_state.begin_step()  # as verl's train_mini_batch does (verl_cov.engine_adapter)
            chosen = rng.choice(len(train_pairs), config.prompts_per_step, replace=False)
            pairs = [train_pairs[i] for i in chosen for _ in range(config.samples_per_prompt)]
            prompts = task.encode_prompts(pairs)
            # π_old's log-probs from the sampling pass itself: the same policy, its cached keys (within 1e-6
            # of a full forward pass), so no second pass over the rollout.
            responses, old_log_probs, entropy = sample(model, prompts, task.response_len, generator)
            scores = task.verify(pairs, responses, generator)
            rewards = torch.zeros(responses.shape)
            rewards[:, -1] = scores
            advantages, _ = grpo(rewards, torch.ones_like(rewards), np.repeat(chosen, config.samples_per_prompt))

            metrics: dict[str, list[float]] = {}
            for rows in torch.randperm(responses_per_step, generator=generator).split(mini_batch):
                flat, update_entropy = update_forward(model, prompts[rows], responses[rows])
                data = verl_micro_batch(prompts[rows], responses[rows], old_log_probs[rows], advantages[rows])
                # As verl's engine train_batch does (verl_cov.engine_adapter): the mini-batch's statistics first,
                # and the 80/20 rule's H_t of the update forward (verl_cov.token_entropy)
                with (
                    scope.mini_batch(actor.policy_loss, old_log_probs[rows], advantages[rows], data["response_mask"]),
                    token_entropy.active(update_entropy),
                ):
                    loss, loss_metrics = ppo_loss(actor, {"log_probs": flat}, data)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                for key, value in loss_metrics.items():
                    metrics.setdefault(key, []).append(value.aggregate() if hasattr(value, "aggregate") else value)

            record = reduce_metrics(metrics)
            record.update({"actor/entropy": entropy.mean().item(), "critic/score/mean": scores.mean().item()})
            record.update(concentration(old_log_probs, advantages))
            if step % config.eval_every == 0 or step == config.steps:
                record.update(evaluate(model, task, config.pass_k))
            write(step, {key: float(value) for key, value in record.items()})
            on_step()
    return log_path
