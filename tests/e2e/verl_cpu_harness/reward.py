"""The end-to-end task's verifier, in verl's custom-reward signature (loaded by file path)."""

DIGITS = set("0123456789")


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """1 for the right digit as the first character of the response, 0.2 for another digit, else 0."""
    answer = solution_str.strip()[:1]
    if answer == ground_truth:
        return 1.0
    return 0.2 if answer in DIGITS else 0.0
