"""The policy: a random-init Qwen2 causal LM small enough for two CPU cores, sampled at temperature 1, with
the task's fixed logits at the response's format tokens and its bonuses at the decisions
(``TemplatePolicy``)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from verl_cov.study.tasks import Task


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
    """A language model that knows ``task``'s response format. At the position that predicts response token
    j: the logits ``prior[j]`` alone where ``fixed[j]``, else ``model``'s logits plus ``prior[j]``, plus the
    task's rule hint at the position that predicts decision b (``Task.prior``, ``Task.rule_hint``). The prior
    is a buffer, not a parameter; training moves only the model, and only through the positions that are
    not fixed. The model runs only on the task's first ``model_until`` positions, up to the last whose logits
    it sets: with causal attention, later tokens cannot change those logits."""

    def __init__(self, model: torch.nn.Module, task: Task) -> None:
        super().__init__()
        self.model, self.task = model, task
        prior, fixed = task.prior()
        self.register_buffer("prior", prior)
        self.register_buffer("fixed", fixed)

    def forward(
        self, input_ids: torch.Tensor, past_key_values=None, use_cache: bool = False, prefix: torch.Tensor | None = None
    ) -> SimpleNamespace:
        """``prefix``: the tokens before ``input_ids``, None for a whole sequence; ``past_key_values`` holds the
        model's keys of the first min(len(prefix), ``task.model_until``) of them."""
        start = prefix.shape[1] if prefix is not None else 0
        batch, length = input_ids.shape
        response = torch.arange(start, start + length) - (self.task.prompt_len - 1)
        inside = (response >= 0) & (response < self.prior.shape[0])
        at = response.clamp(0, self.prior.shape[0] - 1)
        prior, fixed = self.prior[at] * inside[:, None], self.fixed[at] & inside
        logits = prior.expand(batch, length, -1).clone()
        ran = min(max(self.task.model_until - start, 0), length)
        if ran:
            output = self.model(input_ids=input_ids[:, :ran], past_key_values=past_key_values, use_cache=use_cache)
            past_key_values = output.past_key_values
            logits[:, :ran] = torch.where(fixed[:ran, None], prior[:ran], output.logits + prior[:ran])
        hint = self.task.hint_position - start
        if self.task.rule_bonus and 0 <= hint < length:
            sequences = input_ids if prefix is None else torch.cat([prefix, input_ids], dim=1)
            logits[:, hint] += self.task.rule_hint(sequences[:, : self.task.hint_position + 1])
        return SimpleNamespace(logits=logits, past_key_values=past_key_values)


def next_token_log_probs(model, input_ids: torch.Tensor) -> torch.Tensor:
    """(batch, length, vocab) log p(· | tokens <= t) at every position t, in float32."""
    return torch.log_softmax(model(input_ids=input_ids).logits.float(), dim=-1)


@torch.no_grad()
def sample(model, prompts: torch.Tensor, response_len: int, generator: torch.Generator):
    """(tokens, log π of each, entropy of π at each position), all (batch, response_len): responses sampled
    at temperature 1, top-p 1 (the paper's rollout settings), with the policy's cache of past keys."""
    tokens, log_probs, entropies, past, inputs, prefix = [], [], [], None, prompts, None
    for _ in range(response_len):
        output = model(input_ids=inputs, past_key_values=past, use_cache=True, prefix=prefix)
        past, prefix = output.past_key_values, inputs if prefix is None else torch.cat([prefix, inputs], dim=1)
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
