"""The ``hf_cpu`` rollout server: a Ray actor holding its own copy of the policy (see ``rollout``).

It imports no verl module at load time: Ray imports this module first in the server's process, and
``import verl`` there loads ``verl_cpu_harness.install`` and so ``rollout``, which subclasses verl's classes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from verl_cpu_harness import trace


def _seed(*key: object) -> int:
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _filtered_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """``logits`` (vocab,) with everything outside the top-k and the top-p nucleus set to -inf."""
    if top_k and 0 < top_k < logits.numel():
        kth = logits.topk(top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix reaching top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), -torch.inf)
    return logits


class HFServer:
    """One replica's generation server (a Ray actor)."""

    def __init__(self, name: str, model_path: str, response_length: int, max_model_len: int | None, seed: int) -> None:
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(1)
        self.server_name = name
        self.model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch.float32).eval()
        self.eos_token_id = self.model.config.eos_token_id
        self.response_length = response_length
        self.max_model_len = max_model_len or self.model.config.max_position_embeddings
        self.stream = torch.Generator().manual_seed(seed)
        self.version = 0  # global step of the weights last loaded
        self.seen: dict[tuple, int] = {}  # (request id, prompt, version) -> requests so far

    def load_weights(self, state: dict[str, torch.Tensor], global_steps: int | None) -> None:
        own = self.model.state_dict()
        unknown = sorted(set(state) - set(own))
        if unknown:
            raise KeyError(f"weights the rollout model does not have: {unknown[:5]}")
        with torch.no_grad():
            for name, tensor in state.items():
                own[name].copy_(tensor.to(own[name].dtype))
        self.version = global_steps if global_steps is not None else self.version + 1
        self.seen.clear()
        trace.weights_loaded(self.server_name, self.version, self.model.state_dict())

    @torch.no_grad()
    def _sample(self, prompt_ids: list[int], params: dict[str, Any], generator: torch.Generator):
        temperature = float(params.get("temperature", 1.0))
        top_k, top_p = int(params.get("top_k", -1) or -1), float(params.get("top_p", 1.0))
        budget = min(int(params.get("max_tokens") or self.response_length), self.max_model_len - len(prompt_ids))
        tokens, log_probs, past = [], [], None
        inputs = torch.tensor([prompt_ids])
        for _ in range(max(budget, 0)):
            output = self.model(input_ids=inputs, past_key_values=past, use_cache=True)
            past, logits = output.past_key_values, output.logits[0, -1].float()
            if temperature <= 0:
                token = int(logits.argmax())
            else:
                weights = _filtered_logits(logits / temperature, top_k, top_p).softmax(-1)
                token = int(torch.multinomial(weights, 1, generator=generator))
            tokens.append(token)
            log_probs.append(float(logits.log_softmax(-1)[token]))
            if token == self.eos_token_id:
                break
            inputs = torch.tensor([[token]])
        return tokens, log_probs

    async def generate(self, prompt_ids, sampling_params, request_id, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        generator = self.stream
        if str(request_id).startswith("det-"):
            key = (str(request_id), tuple(prompt_ids), self.version)
            self.seen[key] = occurrence = self.seen.get(key, -1) + 1
            generator = torch.Generator().manual_seed(_seed(*key, occurrence))
        tokens, log_probs = self._sample(list(prompt_ids), sampling_params, generator)
        return TokenOutput(
            token_ids=tokens,
            log_probs=log_probs if sampling_params.get("logprobs") else None,
            stop_reason="completed",
            num_preempted=0,
            extra_fields={"global_steps": self.version},
        )

    # The control calls verl's checkpoint engine and trainer make on every server; nothing to free on CPU.
    async def wake_up(self, *args, **kwargs):
        return None

    async def sleep(self, *args, **kwargs):
        return None

    async def clear_kv_cache(self, *args, **kwargs):
        return None

    async def release_kv_cache(self, *args, **kwargs):
        return None

    async def resume_kv_cache(self, *args, **kwargs):
        return None

    async def abort_all_requests(self, *args, **kwargs):
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self, *args, **kwargs):
        return None

    async def set_global_steps(self, global_steps: int):
        return None

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None
