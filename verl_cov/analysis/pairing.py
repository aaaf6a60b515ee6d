"""Which entropy goes with which validation score.

verl logs ``actor/entropy`` at step N from the log-prob pass *before* update N, and the validation it
logs at step N runs *after* update N. The policy validated at step N is therefore the one whose entropy
is logged at the next step: a validation at step N pairs with the entropy logged at the first step
after N that has one. The final validation has none and is left out. Validations logged before the
first entropy (verl's ``val_before_train``: the untouched base policy, whose first updates mostly learn
the answer format, a jump the law does not describe) are left out unless ``keep_base``.

Values no run can log are left out with the reason: a score or entropy that is NaN or infinite, a
negative entropy, and values beyond any plausible range (an entropy above ``MAX_ENTROPY`` nats per
token, a score beyond ±``MAX_SCORE``), which are another kind of key or a logging bug, and would
otherwise dominate the least squares.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

# nats per token: an entropy is at most ln(vocabulary), ~12 nats for today's 150k-256k vocabularies;
# 30 nats is ln of ~1e13 tokens, room for any vocabulary, yet it refuses a key of another kind (a length)
MAX_ENTROPY = 30.0
MAX_SCORE = 1e6  # an accuracy, a reward or a pass rate; far beyond any of them


@dataclass(frozen=True)
class Point:
    """One (H, R) pair: the validation at ``step``, the entropy logged at ``entropy_step``."""

    step: int
    entropy_step: int
    H: float
    R: float


@dataclass(frozen=True)
class LeftOut:
    step: int
    reason: str


def entropy_problem(H: float) -> str | None:
    """Why ``H`` cannot be a policy's entropy in nats per token, or None."""
    if not math.isfinite(H):
        return f"is {H}, not a number"
    if H < 0:
        return f"is {H:.6g} < 0, impossible for an entropy"
    if H > MAX_ENTROPY:
        return f"is {H:.6g}, beyond any vocabulary's entropy (> {MAX_ENTROPY:g} nats)"
    return None


def score_problem(R: float) -> str | None:
    """Why ``R`` cannot be a validation score, or None."""
    if not math.isfinite(R):
        return f"is {R}, not a number"
    if abs(R) > MAX_SCORE:
        return f"is {R:.6g}, beyond any plausible score (|R| > {MAX_SCORE:g})"
    return None


def pair(
    entropy: dict[int, float], score: dict[int, float], keep_base: bool = False
) -> tuple[list[Point], list[LeftOut]]:
    """(points, left out) for the entropy and score series ``{step: value}`` of one run."""
    entropy_steps = sorted(entropy)
    points, left_out = [], []
    for step in sorted(score):
        index = bisect.bisect_right(entropy_steps, step)
        if index == len(entropy_steps):
            left_out.append(LeftOut(step, "no entropy logged after it (the final validation)"))
        elif index == 0 and not keep_base:
            left_out.append(
                LeftOut(step, "before the first update (val_before_train, the base policy); --keep-base keeps it")
            )
        elif score_problem(score[step]):
            left_out.append(LeftOut(step, f"the score {score_problem(score[step])}"))
        elif entropy_problem(entropy[entropy_steps[index]]):
            after = entropy_steps[index]
            left_out.append(LeftOut(step, f"the entropy logged at step {after} {entropy_problem(entropy[after])}"))
        else:
            after = entropy_steps[index]
            points.append(Point(step, after, entropy[after], score[step]))
    return points, left_out
