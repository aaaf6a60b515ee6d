"""The study's verifiable tasks: answer "x + y =" with two digits a, b such that a + b ≡ x + y (mod 10) and
a ∉ {x, y}. Every prompt has 8 correct answers (9 when x = y) among the 100 digit pairs, so a policy can
keep several answers alive or collapse onto one; copying the prompt is never correct.

- ``forking`` (the default): the answer is an 8-token sentence, "a b sum to it mod ten .": 2 real
  decisions, then 6 tokens the format fixes. The policy is a "base model that knows the format": the
  random-init LM's logits plus a fixed bonus ``format_bonus`` on the template's token at each format
  position (``study.policy.TemplatePolicy``), so those tokens start nearly forced (p ≈ 0.995) yet stay
  trainable, and the decisions start near-uniform. That is the token statistics the paper measures on
  reasoning LLMs: most tokens near-deterministic, a few "forking" tokens carrying the covariance.
- ``pair``: the response is just "a b" from a random-init policy (the first version of the study).

Held-out prompts are 15 pairs (x, y), x < y, whose mirror (y, x) is trained on; the split is part of
the task, the same for every seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit

DIGITS = [str(d) for d in range(10)]
SPECIAL = ["[PAD]", "[BOS]", "+", "="]
HELD_OUT = 15
SPLIT_SEED = 0
A, B = "{a}", "{b}"


@dataclass(frozen=True)
class Task:
    """A response ``template`` of words with the two decisions at ``A`` and ``B``; the policy's logits get
    ``format_bonus`` on the template's word at every other position."""

    name: str
    template: tuple[str, ...]
    format_bonus: float

    @property
    def response_len(self) -> int:
        return len(self.template)

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """A word-level tokenizer over the task's symbols, built locally (no download)."""
        words = sorted({word for word in self.template if word not in (A, B)} - set(DIGITS) - set(SPECIAL))
        tokenizer = Tokenizer(WordLevel({t: i for i, t in enumerate(SPECIAL + DIGITS + words)}, unk_token="[PAD]"))
        tokenizer.pre_tokenizer = WhitespaceSplit()
        return tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @cached_property
    def split(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(train, held_out) prompt pairs; every held-out (x, y) has its mirror (y, x) in train."""
        ordered = [(x, y) for x in range(10) for y in range(10) if x < y]
        held_out = sorted(random.Random(SPLIT_SEED).sample(ordered, HELD_OUT))
        train = [(x, y) for x in range(10) for y in range(10) if (x, y) not in held_out]
        return train, held_out

    def encode_prompts(self, pairs: list[tuple[int, int]]) -> torch.Tensor:
        return torch.tensor([self.tokenizer.encode(f"[BOS] {x} + {y} =").ids for x, y in pairs])

    def responses(self, answers: list[tuple[int, int]]) -> torch.Tensor:
        """(len(answers), response_len) token ids of the template with each answer's digits."""
        words = [[{A: str(a), B: str(b)}.get(word, word) for word in self.template] for a, b in answers]
        return torch.tensor([[self.tokenizer.token_to_id(word) for word in response] for response in words])

    @cached_property
    def _decisions(self) -> tuple[int, int]:
        return self.template.index(A), self.template.index(B)

    @cached_property
    def format_positions(self) -> list[int]:
        """Response positions the template fixes (all but the two decisions)."""
        return [i for i, word in enumerate(self.template) if word not in (A, B)]

    def rewards(self, pairs: list[tuple[int, int]], responses: torch.Tensor) -> torch.Tensor:
        """The verifier: 1 for the template with digits a, b where a + b ≡ x + y (mod 10) and a ∉ {x, y}."""
        a_at, b_at = self._decisions
        format_ok = (responses == self.responses([(0, 0)] * len(pairs))).index_fill(1, torch.tensor([a_at, b_at]), True)
        digit = {self.tokenizer.token_to_id(d): int(d) for d in DIGITS}
        scores = []
        for (x, y), ok, response in zip(pairs, format_ok.all(dim=1).tolist(), responses.tolist(), strict=True):
            a, b = digit.get(response[a_at]), digit.get(response[b_at])
            correct = ok and a is not None and b is not None and (a + b) % 10 == (x + y) % 10 and a not in (x, y)
            scores.append(float(correct))
        return torch.tensor(scores)

    def correct_answers(self, x: int, y: int) -> list[tuple[int, int]]:
        return [(a, (x + y - a) % 10) for a in range(10) if a not in (x, y)]

    def format_prior(self) -> torch.Tensor:
        """(response_len, vocab) logit bonus: ``format_bonus`` on the template's word at each format position."""
        prior = torch.zeros(self.response_len, self.vocab_size)
        for position in self.format_positions:
            prior[position, self.tokenizer.token_to_id(self.template[position])] = self.format_bonus
        return prior


SENTENCE = (A, B, "sum", "to", "it", "mod", "ten", ".")
TASKS = {
    "forking": Task("forking", SENTENCE, format_bonus=8.0),
    "pair": Task("pair", (A, B), format_bonus=0.0),
}
