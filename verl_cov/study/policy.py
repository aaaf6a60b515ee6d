"""The policy: a random-init Qwen2 causal LM small enough for two CPU cores, sampled at temperature 1."""

from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def build_policy(vocab_size: int, seed: int) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config)


def next_token_log_probs(model, input_ids: torch.Tensor) -> torch.Tensor:
    """(batch, length, vocab) log p(· | tokens <= t) at every position t, in float32."""
    return torch.log_softmax(model(input_ids=input_ids).logits.float(), dim=-1)


@torch.no_grad()
def sample(model, prompts: torch.Tensor, response_len: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, response_len) tokens sampled at temperature 1, top-p 1 (the paper's rollout settings)."""
    sequence = prompts
    for _ in range(response_len):
        probs = torch.softmax(model(input_ids=sequence).logits[:, -1].float(), dim=-1)
        sequence = torch.cat([sequence, torch.multinomial(probs, 1, generator=generator)], dim=1)
    return sequence[:, prompts.shape[1] :]
