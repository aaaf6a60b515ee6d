"""One RL run of the study: rollout at temperature 1, rule-based reward, verl's GRPO advantages, and
several mini-batch updates per rollout batch through verl's ``ppo_loss``."""

from __future__ import annotations

import json
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

from verl_cov import scope
from verl_cov.study import task
from verl_cov.study.modes import actor_config
from verl_cov.study.policy import build_policy, next_token_log_probs, sample

PERF_KEY = "val-core/sum/acc/mean@1"


@dataclass
class RunConfig:
    steps: int = 300
    prompts_per_step: int = 32
    samples_per_prompt: int = 8  # GRPO group size, as in the paper
    mini_batches: int = 4  # updates per rollout batch (the paper: 256 prompts, mini-batch 32 -> 8)
    lr: float = 5e-4
    grad_clip: float = 1.0
    eval_every: int = 10
    pass_k: int = 8
    seed: int = 0


class Study:
    """The task's prompts as token tensors, and the verifier applied to sampled responses."""

    def __init__(self) -> None:
        self.tokenizer = task.build_tokenizer()
        self.train, self.held_out = task.split_prompts()
        self.vocab_size = self.tokenizer.get_vocab_size()

    def encode(self, pairs: list[tuple[int, int]]) -> torch.Tensor:
        return torch.tensor([self.tokenizer.encode(task.prompt_text(x, y)).ids for x, y in pairs])

    def token_id(self, token: str) -> int:
        return self.tokenizer.token_to_id(token)

    def rewards(self, pairs: list[tuple[int, int]], responses: torch.Tensor) -> torch.Tensor:
        texts = self.tokenizer.decode_batch(responses.tolist(), skip_special_tokens=False)
        return torch.tensor([float(task.is_correct(x, y, t)) for (x, y), t in zip(pairs, texts, strict=True)])


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


def response_statistics(model, sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat per-position log-probs (verl's no-padding layout), response log π and response entropy."""
    log_probs = next_token_log_probs(model, sequences)
    picked = log_probs[:, :-1].gather(-1, sequences[:, 1:, None]).squeeze(-1)
    flat = torch.cat([picked, torch.zeros_like(picked[:, :1])], dim=1).flatten()  # last position: no next token
    response = slice(task.PROMPT_LEN - 1, None)
    entropy = -(log_probs[:, :-1][:, response].exp() * log_probs[:, :-1][:, response]).sum(-1)
    return flat, picked[:, response], entropy


@torch.no_grad()
def evaluate(model, study: Study, config: RunConfig) -> dict[str, float]:
    """Exact held-out pass@1 and pass@k at temperature 1, with no sampling noise.

    A response is two tokens, so the probability p that one sample is correct is a finite sum,
    p = Σ_a π(a | prompt)·π(b*(a) | prompt, a) over the correct answers (a, b*(a)); then
    pass@1 = p and pass@k = 1 − (1 − p)^k for k independent samples.
    """
    prompts = study.encode(study.held_out)
    first = next_token_log_probs(model, prompts)[:, -1].exp()  # (prompts, vocab)
    vocab = first.shape[1]
    extended = torch.cat([prompts.repeat_interleave(vocab, 0), torch.arange(vocab).repeat(len(prompts))[:, None]], 1)
    second = next_token_log_probs(model, extended)[:, -1].exp().view(len(prompts), vocab, vocab)
    p = torch.zeros(len(prompts))
    for i, (x, y) in enumerate(study.held_out):
        for a, b in task.correct_answers(x, y):
            a_id, b_id = study.token_id(str(a)), study.token_id(str(b))
            p[i] += first[i, a_id] * second[i, a_id, b_id]
    return {
        PERF_KEY: p.mean().item(),
        f"val-aux/sum/acc/pass@{config.pass_k}": (1 - (1 - p) ** config.pass_k).mean().item(),
    }


def train(mode: str, config: RunConfig, log_path: Path, on_step: Callable[[], None] = lambda: None) -> Path:
    """Train one mode and write its metrics, one verl file-logger line per step, to ``log_path``."""
    study = Study()
    model = build_policy(study.vocab_size, config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    responses_per_step = config.prompts_per_step * config.samples_per_prompt
    mini_batch = responses_per_step // config.mini_batches
    actor = actor_config(mode, config.seed, mini_batch, config.samples_per_prompt, task.RESPONSE_LEN)
    grpo = get_adv_estimator_fn("grpo")
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:

        def write(step: int, data: dict) -> None:
            log.write(json.dumps({"step": step, "data": data}) + "\n")

        write(0, evaluate(model, study, config))
        for step in range(1, config.steps + 1):
            chosen = rng.choice(len(study.train), config.prompts_per_step, replace=False)
            pairs = [study.train[i] for i in chosen for _ in range(config.samples_per_prompt)]
            prompts = study.encode(pairs)
            responses = sample(model, prompts, task.RESPONSE_LEN, generator)
            scores = study.rewards(pairs, responses)
            rewards = torch.zeros(responses.shape)
            rewards[:, -1] = scores
            advantages, _ = grpo(rewards, torch.ones_like(rewards), np.repeat(chosen, config.samples_per_prompt))
            sequences = torch.cat([prompts, responses], dim=1)
            with torch.no_grad():
                _, old_log_probs, entropy = response_statistics(model, sequences)

            metrics: dict[str, list[float]] = {}
            for rows in torch.randperm(responses_per_step, generator=generator).split(mini_batch):
                flat, _, _ = response_statistics(model, sequences[rows])
                data = verl_micro_batch(prompts[rows], responses[rows], old_log_probs[rows], advantages[rows])
                # As verl's engine train_batch does (verl_cov.engine_hook): mini-batch statistics first.
                with scope.mini_batch(actor.policy_loss, old_log_probs[rows], advantages[rows], data["response_mask"]):
                    loss, loss_metrics = ppo_loss(actor, {"log_probs": flat}, data)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                for key, value in loss_metrics.items():
                    metrics.setdefault(key, []).append(value.aggregate() if hasattr(value, "aggregate") else value)

            record = reduce_metrics(metrics)
            record.update({"actor/entropy": entropy.mean().item(), "critic/score/mean": scores.mean().item()})
            if step % config.eval_every == 0 or step == config.steps:
                record.update(evaluate(model, study, config))
            write(step, {key: float(value) for key, value in record.items()})
            on_step()
    return log_path
