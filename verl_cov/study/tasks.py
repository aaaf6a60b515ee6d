"""The study's verifiable tasks: answer "x + y =" with two digits a, b such that a + b ≡ x + y (mod 10) and
a ∉ {x, y}. Every prompt has 8 correct answers (9 when x = y) among the 100 digit pairs, so a policy can
keep several answers alive or collapse onto one; copying the prompt is never correct.

- ``forking`` (the default): the answer is an 8-token sentence, "a b sum to it mod ten .": 2 real
  decisions, then 6 tokens the format fixes. The policy is a "base model that knows the format and answers
  with digits and partly knows the rule" (``study.policy.TemplatePolicy``): at each format position its
  logits are fixed, ``format_bonus`` on the template's word (p ≈ 0.9999, not trained); at the two
  decisions they are the random-init LM's plus ``digit_bonus`` on the ten digits, at a graded by
  ``preference`` (from + ``preference`` on 0 to − ``preference`` on 9: like any LM it prefers some answers
  to others, here a tie-break among the correct answers, which differ in a), and at b a further
  ``rule_bonus`` on the digit that completes a + b ≡ x + y (mod 10) (``Task.rule_hint``), so about 15 % of
  its answers are correct at the start. That is the token statistics the paper measures on reasoning LLMs:
  most tokens near-deterministic, a few "forking" tokens carrying the covariance. Its verifier accepts a
  correct answer with probability ``accept`` = 1/2 (``Task.verify``): failures persist all run long, as on
  the hard problems the paper trains on, so GRPO's advantages stay of order 1.
- ``pair``: the response is just "a b" from a random-init policy, an exact verifier (the first version's
  task).

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
X, Y = "{x}", "{y}"
PROMPT = ("[BOS]", X, "+", Y, "=")


@dataclass(frozen=True)
class Task:
    """A response ``template`` of words with the two decisions at ``A`` and ``B``. The policy's logits are
    fixed at every other position, ``format_bonus`` on the template's word; at the decisions they get
    ``digit_bonus`` on each digit, at a falling linearly from ``digit_bonus + preference`` on 0 to
    ``digit_bonus − preference`` on 9, and at b ``rule_bonus`` on the digit that completes the sum. The
    verifier accepts a correct answer with probability ``accept``."""

    name: str
    template: tuple[str, ...]
    format_bonus: float = 0.0
    digit_bonus: float = 0.0
    rule_bonus: float = 0.0
    preference: float = 0.0
    accept: float = 1.0

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

    @property
    def prompt_len(self) -> int:
        return len(PROMPT)

    def _fill(self, words: tuple[str, ...], digits: list[dict[str, int]]) -> torch.Tensor:
        """(len(digits), len(words)) token ids of ``words``, each placeholder replaced by its row's digit."""
        ids = self.tokenizer.token_to_id
        return torch.tensor([[ids(str(row.get(word, word))) for word in words] for row in digits])

    def encode_prompts(self, pairs: list[tuple[int, int]]) -> torch.Tensor:
        """(len(pairs), prompt_len) token ids of ``PROMPT`` with each pair's digits."""
        return self._fill(PROMPT, [{X: x, Y: y} for x, y in pairs])

    def responses(self, answers: list[tuple[int, int]]) -> torch.Tensor:
        """(len(answers), response_len) token ids of the template with each answer's digits."""
        return self._fill(self.template, [{A: a, B: b} for a, b in answers])

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

    def verify(self, pairs: list[tuple[int, int]], responses: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The rewards the policy is trained on: each correct response is accepted with probability ``accept``
        (a draw from ``generator``, the run's seeded sampler; none when ``accept`` is 1)."""
        if self.accept == 1:
            return self.rewards(pairs, responses)
        accepted = torch.rand(len(pairs), generator=generator) < self.accept
        return self.rewards(pairs, responses) * accepted

    @cached_property
    def _digit_ids(self) -> torch.Tensor:
        """(10,) the token id of each digit."""
        return torch.tensor([self.tokenizer.token_to_id(digit) for digit in DIGITS])

    @cached_property
    def _digit_values(self) -> torch.Tensor:
        """(vocab,) the digit each token id spells, -1 for the other tokens."""
        return torch.full((self.vocab_size,), -1).index_put_((self._digit_ids,), torch.arange(10))

    @cached_property
    def model_until(self) -> int:
        """The number of sequence positions whose logits the model sets: up to the one predicting the last
        response token that the prior does not fix."""
        free = (~self.prior()[1]).nonzero().flatten()
        return self.prompt_len - 1 + (int(free[-1]) + 1 if len(free) else 0)

    @property
    def hint_position(self) -> int:
        """The sequence position whose logits predict decision b (it holds decision a)."""
        return self.prompt_len - 1 + self._decisions[1]

    def rule_hint(self, sequences: torch.Tensor) -> torch.Tensor:
        """(batch, vocab) logit bonus at ``hint_position``, given the tokens up to it: ``rule_bonus`` on the
        digit b = (x + y − a) mod 10 that makes a + b ≡ x + y (mod 10); nothing where a is not a digit."""
        x, y = (self._digit_values[sequences[:, PROMPT.index(word)]] for word in (X, Y))
        a = self._digit_values[sequences[:, self.prompt_len + self._decisions[0]]]
        b = self._digit_ids[(x + y - a) % 10]
        hint = torch.zeros(len(sequences), self.vocab_size)
        return hint.scatter_(1, b[:, None], self.rule_bonus * (a >= 0)[:, None].float())

    def correct_answers(self, x: int, y: int) -> list[tuple[int, int]]:
        return [(a, (x + y - a) % 10) for a in range(10) if a not in (x, y)]

    def prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """((response_len, vocab) logits, (response_len,) fixed): at each format position the fixed logits,
        ``format_bonus`` on the template's word; at each decision a bonus on every digit, ``digit_bonus`` on
        the mean, at a graded by ``preference``, added to the model's logits. ``fixed`` marks the positions whose
        logits are the prior alone."""
        prior = torch.zeros(self.response_len, self.vocab_size)
        for position in self.format_positions:
            prior[position, self.tokenizer.token_to_id(self.template[position])] = self.format_bonus
        a, b = self._decisions
        prior[a, self._digit_ids] = self.digit_bonus + self.preference * (4.5 - torch.arange(10.0)) / 4.5
        prior[b, self._digit_ids] = self.digit_bonus
        fixed = torch.zeros(self.response_len, dtype=torch.bool)
        fixed[self.format_positions] = self.format_bonus > 0
        return prior, fixed


SENTENCE = (A, B, "sum", "to", "it", "mod", "ten", ".")
TASKS = {
    "forking": Task(
        "forking", SENTENCE, format_bonus=12.0, digit_bonus=3.0, rule_bonus=0.8, preference=2.0, accept=0.5
    ),
    "pair": Task("pair", (A, B)),
}
