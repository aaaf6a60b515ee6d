"""The toy task: answer "x + y =" with two digits a b such that a + b ≡ x + y (mod 10) and a ∉ {x, y}.

Every prompt has 8 correct answers (9 when x = y) among 100 digit pairs, so a policy can solve it while
keeping several answers alive, or collapse onto one. Copying the prompt is never correct, and a
uniformly random policy succeeds on 8% of digit pairs, so early rewards come from exploration.
The held-out prompts are 15 pairs (x, y), x < y, whose mirror (y, x) is trained on.
"""

from __future__ import annotations

import random

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit

DIGITS = [str(d) for d in range(10)]
SPECIAL = ["[PAD]", "[BOS]", "+", "="]
PROMPT_LEN = 5  # [BOS] x + y =
RESPONSE_LEN = 2  # a b
HELD_OUT = 15
SPLIT_SEED = 0  # the split is part of the task, the same for every study seed


def build_tokenizer() -> Tokenizer:
    """A word-level tokenizer over the task's 14 symbols, built locally (no download)."""
    vocab = {token: index for index, token in enumerate(SPECIAL + DIGITS)}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[PAD]"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    return tokenizer


def prompt_text(x: int, y: int) -> str:
    return f"[BOS] {x} + {y} ="


def is_correct(x: int, y: int, response: str) -> bool:
    """The rule-based verifier: two digits a b with a + b ≡ x + y (mod 10) and a not in {x, y}."""
    parts = response.split()
    if len(parts) != RESPONSE_LEN or not all(p in DIGITS for p in parts):
        return False
    a, b = int(parts[0]), int(parts[1])
    return (a + b) % 10 == (x + y) % 10 and a not in (x, y)


def correct_answers(x: int, y: int) -> list[tuple[int, int]]:
    """Every correct (a, b) for the prompt x + y, as the verifier defines them."""
    return [(a, (x + y - a) % 10) for a in range(10) if a not in (x, y)]


def split_prompts() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(train, held_out) prompt pairs; every held-out (x, y) has its mirror (y, x) in train."""
    ordered = [(x, y) for x in range(10) for y in range(10) if x < y]
    held_out = sorted(random.Random(SPLIT_SEED).sample(ordered, HELD_OUT))
    train = [(x, y) for x in range(10) for y in range(10) if (x, y) not in held_out]
    return train, held_out
