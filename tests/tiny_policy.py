"""A tiny random-init Qwen2 causal LM and a micro-batch in the layout verl's FSDP engine hands to ``ppo_loss``."""

import torch
from tensordict import TensorDict

from verl_cov.study.policy import build_policy

VOCAB = 64


def tiny_qwen2(seed: int = 0):
    """The CPU study's random-init Qwen2 policy, over this file's vocabulary."""
    return build_policy(VOCAB, seed)


def sequence_log_probs(model, prompts: list[torch.Tensor], responses: list[torch.Tensor]) -> torch.Tensor:
    """Flat (total_tokens,) log-probs, no padding: position t holds log p(token t+1 | tokens <= t)."""
    flat = []
    for prompt, response in zip(prompts, responses, strict=True):
        ids = torch.cat([prompt, response]).unsqueeze(0)
        logits = model(input_ids=ids).logits[0].float()
        next_ids = torch.roll(ids[0], shifts=-1)
        flat.append(torch.log_softmax(logits, dim=-1).gather(-1, next_ids.unsqueeze(-1)).squeeze(-1))
    return torch.cat(flat)


def response_log_probs(model, prompts, responses, response_len: int) -> torch.Tensor:
    """(batch, response_len) log π of each response token, right-padded with 0."""
    rows = []
    for prompt, response in zip(prompts, responses, strict=True):
        ids = torch.cat([prompt, response]).unsqueeze(0)
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        picked = log_probs[len(prompt) - 1 : -1].gather(-1, response.unsqueeze(-1)).squeeze(-1)
        rows.append(torch.nn.functional.pad(picked, (0, response_len - len(response))))
    return torch.stack(rows)


def micro_batch(prompts, responses, old_log_probs, advantages, prompt_len: int, response_len: int) -> TensorDict:
    """Left-padded prompts, right-padded responses, as verl's rollout produces them."""
    from verl.utils import tensordict_utils as tu  # verl >= 0.7

    batch = len(prompts)
    prompt_ids = torch.zeros(batch, prompt_len, dtype=torch.long)
    response_ids = torch.zeros(batch, response_len, dtype=torch.long)
    attention_mask = torch.zeros(batch, prompt_len + response_len, dtype=torch.long)
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        prompt_ids[i, prompt_len - len(prompt) :] = prompt
        response_ids[i, : len(response)] = response
        attention_mask[i, prompt_len - len(prompt) : prompt_len + len(response)] = 1
    response_mask = attention_mask[:, prompt_len:].clone()
    data = TensorDict(
        {
            "prompts": prompt_ids,
            "responses": response_ids,
            "attention_mask": attention_mask,
            "response_mask": response_mask,
            "old_log_probs": old_log_probs,
            "advantages": advantages,
        },
        batch_size=[batch],
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(response_mask.sum()), global_batch_size=batch)
    return data
