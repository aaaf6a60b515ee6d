"""The policy: a random-init Qwen2 causal LM small enough for two CPU cores, sampled at temperature 1, with
an optional fixed logit bonus on the response's format tokens (``TemplatePolicy``)."""

from __future__ import annotations

from types import SimpleNamespace

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
        max_position_embeddings=32,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config)


class TemplatePolicy(torch.nn.Module):
    """``model``'s logits plus ``prior[j]`` at the position that predicts response token j (the prompt is
    ``prompt_len`` tokens long): a language model that knows the response's format. The prior is a
    buffer, not a parameter; training moves only the model."""

    def __init__(self, model: torch.nn.Module, prompt_len: int, prior: torch.Tensor) -> None:
        super().__init__()
        self.model, self.prompt_len = model, prompt_len
        self.register_buffer("prior", prior)

    def forward(self, input_ids: torch.Tensor, past_key_values=None, use_cache: bool = False) -> SimpleNamespace:
        start = past_key_values.get_seq_length() if past_key_values is not None else 0  # before the model extends it
        output = self.model(input_ids=input_ids, past_key_values=past_key_values, use_cache=use_cache)
        response = torch.arange(start, start + input_ids.shape[1]) - (self.prompt_len - 1)
        inside = (response >= 0) & (response < self.prior.shape[0])
        bonus = self.prior[response.clamp(0, self.prior.shape[0] - 1)] * inside[:, None]
        return SimpleNamespace(logits=output.logits + bonus, past_key_values=output.past_key_values)


def next_token_log_probs(model, input_ids: torch.Tensor) -> torch.Tensor:
    """(batch, length, vocab) log p(· | tokens <= t) at every position t, in float32."""
    return torch.log_softmax(model(input_ids=input_ids).logits.float(), dim=-1)


@torch.no_grad()
def sample(model, prompts: torch.Tensor, response_len: int, generator: torch.Generator):
    """(tokens, log π of each, entropy of π at each position), all (batch, response_len): responses sampled
    at temperature 1, top-p 1 (the paper's rollout settings), with the policy's cache of past keys."""
    tokens, log_probs, entropies, past, inputs = [], [], [], None, prompts
    for _ in range(response_len):
        output = model(input_ids=inputs, past_key_values=past, use_cache=True)
        past = output.past_key_values
        distribution = torch.log_softmax(output.logits[:, -1].float(), dim=-1)
        inputs = torch.multinomial(distribution.exp(), 1, generator=generator)
        tokens.append(inputs)
        log_probs.append(distribution.gather(-1, inputs))
        entropies.append(-(distribution.exp() * distribution).sum(-1, keepdim=True))
    return torch.cat(tokens, dim=1), torch.cat(log_probs, dim=1), torch.cat(entropies, dim=1)


def response_log_probs(model, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """(batch, response_len) log π(response token | prompt, earlier response tokens)."""
    sequences = torch.cat([prompts, responses], dim=1)
    log_probs = next_token_log_probs(model, sequences)[:, prompts.shape[1] - 1 : -1]
    return log_probs.gather(-1, responses[..., None]).squeeze(-1)
