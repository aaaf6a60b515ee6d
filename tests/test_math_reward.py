"""The recipes' math reward on real answer forms (boxed, DAPO 'Answer:' lines, fractions, intervals, LaTeX)."""

import pytest

from verl_cov.dapo_math.math_reward import compute_score, final_answer

CASES = [
    # (ground truth, response, correct)
    ("\\frac{1}{2}", "... so the probability is \\boxed{\\frac{1}{2}}.", True),
    ("\\frac{1}{2}", "Hence \\boxed{\\dfrac12}", True),
    ("\\frac{1}{2}", "We get \\boxed{0.5}", True),
    ("\\frac{3}{4}", "Step 1 ...\nAnswer: \\frac{3}{4}", True),
    ("\\frac{3}{4}", "Step 1 ...\nAnswer: $\\frac{3}{4}$", True),
    ("204", "The first guess was 200.\nAnswer: 204", True),
    ("204", "Answer: 200\nWait, recheck.\nAnswer: 204.", True),
    ("204", "Answer: 205", False),
    ("(1,2]", "The solution set is \\boxed{(1, 2]}", True),
    ("(1,2]", "The solution set is \\boxed{[1, 2]}", False),
    ("3\\sqrt{2}", "\\boxed{\\sqrt{18}}", True),
    ("x^2+1", "\\boxed{1 + x^2}", True),
    ("\\{1,2\\}", "\\boxed{\\{2, 1\\}}", True),
    ("\\left(2, -1\\right)", "\\boxed{(2,-1)}", True),
    ("10", "\\boxed{11}", False),
    ("10", "I could not solve it.", False),
    ("10", "", False),
]


@pytest.mark.parametrize("truth, response, correct", CASES)
def test_answer_forms(truth, response, correct):
    result = compute_score("math_dapo", response, truth)
    assert result == {"score": 1.0 if correct else 0.0, "acc": correct}


def test_final_answer_reads_the_last_answer_line():
    assert final_answer("Answer: 1\nAnswer: $\\frac{2}{3}$.") == "$\\frac{2}{3}$"
    assert final_answer("x \\boxed{4} Answer: 5") == "x \\boxed{4} Answer: 5"
    assert final_answer("Answer:") == ""
