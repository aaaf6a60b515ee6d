"""Plain, loop-based reference of the paper's equations, independent of verl_cov and verl.

Written from paper-notes ("Token-level covariance", "Clip-Cov", "KL-Cov"): one Python loop over the
valid tokens, scalar torch ops only so autograd gives the reference gradient.
"""

from __future__ import annotations

import math

import torch


def valid_positions(mask: torch.Tensor) -> list[tuple[int, int]]:
    return [(i, j) for i in range(mask.shape[0]) for j in range(mask.shape[1]) if bool(mask[i, j])]


def covariance(log_prob: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> dict[tuple[int, int], float]:
    """Cov(y_i) = (log π(y_i) − mean log π)(A(y_i) − mean A) over valid tokens."""
    positions = valid_positions(mask)
    n = len(positions)
    mean_logp = sum(float(log_prob[p]) for p in positions) / n
    mean_adv = sum(float(advantages[p]) for p in positions) / n
    return {p: (float(log_prob[p]) - mean_logp) * (float(advantages[p]) - mean_adv) for p in positions}


def aggregate(
    terms: dict[tuple[int, int], torch.Tensor], mask: torch.Tensor, mode: str, sum_norm_over_sequences: bool = True
) -> torch.Tensor:
    """verl's loss_agg_mode semantics, written out for a single process.

    ``seq-mean-token-sum-norm`` divides the summed tokens by the horizon and, from verl 0.7 on, by the
    number of sequences (``sum_norm_over_sequences``); verl 0.6 divides the total by the horizon only.
    """
    positions = valid_positions(mask)
    if not positions:
        return torch.zeros(())
    if mode == "token-mean":
        return sum(terms[p] for p in positions) / len(positions)
    if mode == "token-sum":
        return sum(terms[p] for p in positions)
    if mode == "seq-mean-token-sum-norm" and not sum_norm_over_sequences:
        return sum(terms[p] for p in positions) / mask.shape[1]
    rows = sorted({i for i, _ in positions})
    per_seq = []
    for i in rows:
        row = [terms[p] for p in positions if p[0] == i]
        per_seq.append(sum(row) / len(row) if mode == "seq-mean-token-mean" else sum(row))
    loss = sum(per_seq) / len(rows)
    if mode == "seq-mean-token-sum-norm":
        loss = loss / mask.shape[1]
    return loss


def clip_cov_terms(old_log_prob, log_prob, advantages, mask, cut, eps_low, eps_high):
    """Clip-Cov per-token loss −min(r A, clip(r) A), and 0 for cut tokens (paper Eq. 11)."""
    terms = {}
    for p in valid_positions(mask):
        ratio = torch.exp(log_prob[p] - old_log_prob[p])
        a = float(advantages[p])
        clipped_ratio = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
        term = torch.maximum(-a * ratio, -a * clipped_ratio)
        terms[p] = term * 0 if p in cut else term
    return terms


def kl_cov_terms(old_log_prob, log_prob, advantages, mask, penalised, beta):
    """KL-Cov per-token loss −r A, plus β|log π − log π_old| for penalised tokens (paper Eq. 12)."""
    terms = {}
    for p in valid_positions(mask):
        diff = log_prob[p] - old_log_prob[p]
        term = -float(advantages[p]) * torch.exp(diff)
        terms[p] = term + beta * torch.abs(diff) if p in penalised else term
    return terms


def top_k(cov: dict[tuple[int, int], float], count: int) -> set[tuple[int, int]]:
    return set(sorted(cov, key=lambda p: -cov[p])[:count])


def ratio_clipped(old_log_prob, log_prob, advantages, p, eps_low, eps_high) -> bool:
    ratio = math.exp(float(log_prob[p]) - float(old_log_prob[p]))
    a = float(advantages[p])
    return -a * min(max(ratio, 1 - eps_low), 1 + eps_high) > -a * ratio


def grad_of(loss: torch.Tensor, log_prob: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, log_prob)
    return grad


def infer_cut(grad: torch.Tensor, reference_grad: torch.Tensor, mask: torch.Tensor) -> set[tuple[int, int]]:
    """Tokens whose gradient the uncut reference keeps but the loss under test removed."""
    return {(i, j) for i, j in torch.nonzero(mask & (grad == 0) & (reference_grad != 0)).tolist()}
