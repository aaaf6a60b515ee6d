"""What the end-to-end tests read besides verl's own metrics, written only when ``VERL_CPU_HARNESS_TRACE``
names a folder (every verl process appends to its files there):

- ``weights.jsonl``: each time a rollout server loads the actor's weights, a fingerprint of them, so a
  test sees that training changed the weights the rollout samples from;
- ``selection.jsonl``: each time verl-cov selects tokens over a whole mini-batch (``selection_scope=global``),
  the rank, the mini-batch's key and threshold, and every valid token's score and whether it was selected,
  so a test can check that all data-parallel ranks made one selection;
- ``forking.jsonl``: each time a micro-batch's loss takes the 80/20 rule's forking tokens over the whole
  mini-batch (``selection_scope=global``), the rank, the mini-batch's number on that rank, its threshold and
  the rank's count of valid tokens in it, and every valid token's H_t and whether it is a forking token.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

FOLDER = os.environ.get("VERL_CPU_HARNESS_TRACE")


def _append(name: str, record: dict) -> None:
    with (Path(FOLDER) / name).open("a") as handle:  # one short line per write: appends do not interleave
        handle.write(json.dumps(record) + "\n")


def weights_loaded(server: str, version: int, state: dict[str, torch.Tensor]) -> None:
    if FOLDER:
        fingerprint = [round(float(tensor.double().abs().sum()), 12) for _, tensor in sorted(state.items())]
        _append("weights.jsonl", {"server": server, "version": version, "fingerprint": fingerprint})


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def record_global_selection() -> None:
    """Wrap ``verl_cov.scope.selected_tokens`` (what each micro-batch's loss asks in global scope)."""
    if not FOLDER:
        return
    from verl_cov import scope

    original = scope.selected_tokens

    def selected_tokens(mode, old_log_prob, advantages, mask, stats):
        selected, eligible = original(mode, old_log_prob, advantages, mask, stats)
        score = scope.old_covariance(old_log_prob, advantages, mask, stats)
        _append(
            "selection.jsonl",
            {
                "rank": _rank(),
                "mode": mode,
                "salt": stats.salt,
                "threshold": stats.threshold,
                "n_valid": stats.n_valid,
                "share": stats.control.share,
                "score": score[eligible].tolist(),
                "selected": selected[eligible].tolist(),
            },
        )
        return selected, eligible

    scope.selected_tokens = selected_tokens


def record_global_forking() -> None:
    """Wrap ``verl_cov.token_entropy.forking_tokens`` where it reads a mini-batch's threshold (global scope)."""
    if not FOLDER:
        return
    from verl_cov import token_entropy
    from verl_cov.covariance import finite_tokens

    original, original_threshold = token_entropy.forking_tokens, token_entropy.mini_batch_threshold
    valid_tokens = []  # per mini-batch this rank trained (ranks train the same mini-batches in order): its N

    def mini_batch_threshold(entropy, mask, share, group=None):
        valid_tokens.append(int(finite_tokens(mask.bool(), entropy).sum()))
        return original_threshold(entropy, mask, share, group)

    def forking_tokens(config, mask):
        forking = original(config, mask)
        threshold = token_entropy._THRESHOLD.get()
        if forking is not None and threshold is not None:
            entropy = token_entropy.current(config)
            _append(
                "forking.jsonl",
                {
                    "rank": _rank(),
                    "mini_batch": len(valid_tokens),
                    "rank_valid_tokens": valid_tokens[-1],
                    "threshold": threshold,
                    "share": config.forking,
                    "entropy": entropy[mask.bool()].tolist(),
                    "forking": forking[mask.bool()].tolist(),
                },
            )
        return forking

    token_entropy.forking_tokens = forking_tokens
    token_entropy.mini_batch_threshold = mini_batch_threshold
