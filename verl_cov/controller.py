"""Entropy target (beyond the paper): the covariance methods act harder as the entropy falls below H*.

Each mini-batch, with Ĥ the measured entropy (``verl_cov.scope``: −mean log π_old over the mini-batch's
valid tokens on all ranks, an unbiased estimate of the sampling policy's per-token entropy),

    φ = exp(κ·clip((H* − Ĥ)/H*, −1, 1)),   share = min(1, ratio·φ),   β' = β·φ (KL-Cov, ``target_adapts_beta``),
    Clip-Cov's candidate band [ω_low, ω_high] -> [ω_low/φ, ω_high·φ].

At Ĥ = H* the configured ratio and band apply; below the target the method acts on up to e^κ times
more tokens (the band widens too, since a share alone cannot reach the positive-covariance tokens
outside [ω_low, ω_high] that keep lowering the entropy); above it fades, down to e^-κ times. φ stays
within [e^-κ, e^κ] (κ <= 50), so no value of Ĥ makes it 0 or infinite. A non-finite Ĥ (no valid token)
leaves the configured values in place and is reported (``skipped``).
The controller is stateless — φ is a function of the current mini-batch only — so a resumed run
continues exactly, and every rank computes the same φ from the same all-reduced Ĥ. A large β·φ makes
KL-Cov's gradient large (β·sign(log π − log π_old) per token): keep verl's ``grad_clip`` on with it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from verl_cov.config import CovPolicyLossConfig


class Control(NamedTuple):
    """What the controller sets for one mini-batch: the selected share, KL-Cov's β, Clip-Cov's band, and
    whether the target was skipped (Ĥ not finite)."""

    share: float
    beta: float
    clip_cov_lb: float
    clip_cov_ub: float
    skipped: bool = False


def gain_factor(entropy: float, target: float, gain: float) -> float:
    """φ = exp(κ·clip((H* − Ĥ)/H*, −1, 1)), in [e^-κ, e^κ]."""
    return math.exp(gain * max(-1.0, min(1.0, (target - entropy) / target)))


def configured(ratio: float, settings: CovPolicyLossConfig, skipped: bool = False) -> Control:
    """The configured values, unchanged (no target, or a mini-batch the target cannot measure)."""
    return Control(ratio, settings.ppo_kl_coef, settings.clip_cov_lb, settings.clip_cov_ub, skipped)


def control(ratio: float, settings: CovPolicyLossConfig, entropy: float) -> Control:
    """The share and β for a mini-batch of measured entropy ``entropy``; ``ratio`` is r or k from config."""
    if settings.target_entropy is None:
        return configured(ratio, settings)
    if not math.isfinite(entropy):
        return configured(ratio, settings, skipped=True)
    phi = gain_factor(entropy, settings.target_entropy, settings.target_gain)
    beta = settings.ppo_kl_coef * phi if settings.target_adapts_beta else settings.ppo_kl_coef
    return Control(min(1.0, ratio * phi), beta, *_widened(settings.clip_cov_lb, settings.clip_cov_ub, phi))


def _widened(low: float, high: float, phi: float) -> tuple[float, float]:
    """[ω_low, ω_high] scaled away from 0 on each side by φ (a bound's sign never changes)."""
    return (low / phi if low > 0 else low * phi), (high * phi if high > 0 else high / phi)
