"""Which entropy goes with which validation score.

verl logs ``actor/entropy`` at step N from the log-prob pass *before* update N, and the validation it
logs at step N runs *after* update N. The policy validated at step N is therefore the one whose entropy
is logged at the next step: a validation at step N pairs with the entropy logged at the first step
after N that has one. The final validation has none and is left out. Validations logged before the
first entropy (verl's ``val_before_train``: the untouched base policy, whose first updates mostly learn
the answer format, a jump the law does not describe) are left out unless ``keep_base``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


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
        else:
            after = entropy_steps[index]
            points.append(Point(step, after, entropy[after], score[step]))
    return points, left_out
