"""The methods table: each covariance method is one entry (Cui et al. 2025, Sec. 4).

An entry says which share it selects (its config key), how the tokens are ranked and which are eligible,
its objective, what it does to the selected tokens, and which metrics it adds. ``verl_cov.losses`` runs
every entry through the same steps (covariance, count, selection, the 80/20 mask, aggregation, the
mechanism metrics) and ``verl_cov.scope`` ranks a whole mini-batch by the entry's ranking. Adding a
method is one entry here, its registration in ``verl_cov.plugin`` and its keys in ``config.READS``.

Per-token terms are losses (to minimise) of (batch, response_len) tensors; the aggregation masks them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from verl_cov.config import CLIP_COV, KL_COV
from verl_cov.controller import Control

RANDOM, COVARIANCE = "random", "covariance"


class Terms(NamedTuple):
    """What an entry's functions read, for one micro-batch.

    Attributes:
        A: advantages, float32.
        ratio: r_t = exp(log π − log π_old), the log-ratio bounded to ±``LOG_RATIO_BOUND``.
        log_ratio: log π − log π_old, bounded the same way.
        mask: bool valid tokens.
        config: verl's actor config (clip ratios).
        control: the share, β and Clip-Cov's band in force (configured, or from the entropy target).
    """

    A: torch.Tensor
    ratio: torch.Tensor
    log_ratio: torch.Tensor
    mask: torch.Tensor
    config: Any
    control: Control


class Objective(NamedTuple):
    """An entry's per-token loss before selection, the tokens it makes ineligible, and its own metrics."""

    loss: torch.Tensor
    ineligible: torch.Tensor | None
    metrics: dict[str, torch.Tensor]


class Method(NamedTuple):
    name: str
    ratio_key: str  # the config key of the selected share: r or k
    ranking: str  # RANDOM: uniform among the eligible (keyed hash); COVARIANCE: the largest Cov
    banded: bool  # eligible only with Cov in [ω_low, ω_high]
    objective: Callable[[Terms], Objective]
    act: Callable[[Terms, torch.Tensor, torch.Tensor], torch.Tensor]  # (terms, loss, selected) -> loss
    selected_metrics: Callable[[Terms, torch.Tensor], dict[str, torch.Tensor]]
    has_beta: bool  # β is part of the method (logged as actor/cov/beta with mini-batch statistics)


def _share_of(values: torch.Tensor, where: torch.Tensor, of: torch.Tensor) -> torch.Tensor:
    return torch.count_nonzero(values & where) / torch.count_nonzero(of).clamp(min=1)


def clipped_ppo(t: Terms) -> Objective:
    """max(−r_t A_t, −clip(r_t, 1−ε_low, 1+ε_high) A_t): Clip-Cov's objective for t ∉ I_clip (Eq. 11).
    Tokens the ratio clip already cut are not candidates (the authors' code): no gradient flows there."""
    config = t.config
    eps_low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    eps_high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    minus_A = -t.A
    unclipped = minus_A * t.ratio
    clipped = minus_A * t.ratio.clamp(1 - eps_low, 1 + eps_high)
    ratio_clipped = (clipped > unclipped) & t.mask
    metrics = {"actor/pg_clipfrac": _share_of(ratio_clipped, t.mask, t.mask)}
    return Objective(torch.maximum(unclipped, clipped), ratio_clipped, metrics)


def cut(t: Terms, loss: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Clip-Cov: the selected tokens' term is 0, so their gradient is cut."""
    return torch.where(selected, 0.0, loss)


def unclipped_pg(t: Terms) -> Objective:
    """−r_t A_t: KL-Cov's objective, with no ratio clip (Eq. 12)."""
    return Objective(-t.A * t.ratio, None, {})


def kl_penalty(t: Terms, loss: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """KL-Cov: + β·D_KL(π_old(y_t) ‖ π(y_t)) on the selected tokens, D_KL = |log π − log π_old|."""
    return loss + torch.where(selected, t.control.beta * t.log_ratio.abs(), 0.0)


def no_metrics(t: Terms, selected: torch.Tensor) -> dict[str, torch.Tensor]:
    return {}


def selected_kl(t: Terms, selected: torch.Tensor) -> dict[str, torch.Tensor]:
    D_KL_sum = torch.where(selected, t.log_ratio.detach().abs(), 0).sum()
    return {"actor/cov/selected_kl_mean": D_KL_sum / torch.count_nonzero(selected).clamp(min=1)}


METHODS = {
    CLIP_COV: Method(CLIP_COV, "clip_cov_ratio", RANDOM, True, clipped_ppo, cut, no_metrics, False),
    KL_COV: Method(KL_COV, "kl_cov_ratio", COVARIANCE, False, unclipped_pg, kl_penalty, selected_kl, True),
}
