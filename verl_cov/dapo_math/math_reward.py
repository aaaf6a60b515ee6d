"""Rule-based math reward for the paper-reproduction recipes: verl's ``math_verify`` scorer on the
response's final answer. The recipes point verl at it by package (``recipes/common.sh``):

    reward.custom_reward_function.path=pkg://verl_cov.dapo_math.math_reward
    reward.custom_reward_function.name=compute_score

Self-contained (imports only verl's scorer), so it loads the same way by file path.
"""

from __future__ import annotations

import math_verify  # noqa: F401  fail here, not with a silent 0 from verl's scorer, if it is missing
from verl.utils.reward_score.math_verify import compute_score as math_verify_score

ANSWER_MARK = "Answer:"


def final_answer(response: str) -> str:
    """The part of a response that math-verify should read.

    A response with ``\\boxed{...}`` is passed whole (math-verify takes the last box). Otherwise the
    text after the last ``Answer:`` (the DAPO prompt's answer line) is wrapped in ``$...$`` so that
    LaTeX such as ``\\frac{3}{4}`` is parsed; a response with neither is passed whole.
    """
    if "\\boxed" in response or ANSWER_MARK not in response:
        return response
    tail = response.rsplit(ANSWER_MARK, 1)[1].strip()
    answer = tail.splitlines()[0].strip().rstrip(".").strip("$ ") if tail else ""
    return f"${answer}$" if answer else ""


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None) -> dict:
    """verl's custom-reward signature. ``score`` is 1.0 for a correct final answer, else 0.0; ``acc``
    feeds verl's ``algorithm.filter_groups.metric=acc`` (DAPO dynamic sampling)."""
    score = float(math_verify_score(final_answer(solution_str), ground_truth))
    return {"score": score, "acc": score == 1.0}
