"""Config schema of the verl-cov policy-loss modes, validated when verl builds its actor config.

Users select it with ``actor_rollout_ref.actor.policy_loss._target_=verl_cov.config.CovPolicyLossConfig``
(or the overlay in ``recipes/config``); verl instantiates it with Hydra in the driver's config check,
so a bad value stops the launch before Ray starts or a model loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from verl_cov.compat import PolicyLossConfig

KEY_PREFIX = "actor_rollout_ref.actor.policy_loss"
CLIP_COV = "verl_cov.clip_cov"
KL_COV = "verl_cov.kl_cov"
VANILLA = "verl_cov.vanilla"
MODES = (CLIP_COV, KL_COV, VANILLA)


class CovSettings(NamedTuple):
    """The validated knobs, with the paper's symbols: r (clip_cov_ratio), ω_low/ω_high, k, β."""

    clip_cov_ratio: float
    clip_cov_lb: float
    clip_cov_ub: float
    kl_cov_ratio: float
    ppo_kl_coef: float
    seed: int


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{KEY_PREFIX}.{key}={value!r} is out of range: {allowed}")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _fail(key, value, "must be a finite number")
    return float(value)


def validate(policy_loss: Any) -> CovSettings:
    """Check the verl-cov keys of a policy-loss config (ours, verl's, or a DictConfig).

    A plain verl ``PolicyLossConfig`` has no ``seed``; it defaults to 0. Raises ``ValueError``
    naming the full key, the value and the allowed range.
    """
    settings = CovSettings(
        clip_cov_ratio=_number("clip_cov_ratio", policy_loss.get("clip_cov_ratio")),
        clip_cov_lb=_number("clip_cov_lb", policy_loss.get("clip_cov_lb")),
        clip_cov_ub=_number("clip_cov_ub", policy_loss.get("clip_cov_ub")),
        kl_cov_ratio=_number("kl_cov_ratio", policy_loss.get("kl_cov_ratio")),
        ppo_kl_coef=_number("ppo_kl_coef", policy_loss.get("ppo_kl_coef")),
        seed=policy_loss.get("seed", 0),
    )
    for key in ("clip_cov_ratio", "kl_cov_ratio"):
        if not 0 < getattr(settings, key) <= 1:
            _fail(key, getattr(settings, key), "must be in (0, 1]")
    if not settings.clip_cov_lb < settings.clip_cov_ub:
        _fail("clip_cov_lb", settings.clip_cov_lb, f"must be < clip_cov_ub={settings.clip_cov_ub!r}")
    if settings.ppo_kl_coef < 0:
        _fail("ppo_kl_coef", settings.ppo_kl_coef, "must be >= 0")
    if isinstance(settings.seed, bool) or not isinstance(settings.seed, int) or not 0 <= settings.seed < 2**63:
        _fail("seed", settings.seed, "must be an integer in [0, 2**63)")
    mode = policy_loss.get("loss_mode")
    if isinstance(mode, str) and mode.startswith("verl_cov.") and mode not in MODES:
        _fail("loss_mode", mode, f"verl-cov modes are {', '.join(MODES)}")
    return settings


@dataclass
class CovPolicyLossConfig(PolicyLossConfig):
    """verl's ``PolicyLossConfig`` with the paper's defaults and a seed for the Clip-Cov draw.

    Args:
        clip_cov_ratio (float): r, share of valid tokens Clip-Cov cuts, in (0, 1]. Paper: 2e-4.
        clip_cov_lb (float): ω_low, lower covariance bound of Clip-Cov candidates. Paper: 1.
        clip_cov_ub (float): ω_high, upper covariance bound, > clip_cov_lb. Paper: 5.
        kl_cov_ratio (float): k, share of valid tokens KL-Cov penalises, in (0, 1]. Paper: 2e-4 (32B),
            2e-3 (7B).
        ppo_kl_coef (float): β, KL-Cov penalty coefficient, >= 0. Paper: 1 (verl's default is 0.1).
        seed (int): seed of the token-selection random stream, in [0, 2**63).
    """

    clip_cov_ratio: float = 2e-4
    clip_cov_lb: float = 1.0
    clip_cov_ub: float = 5.0
    kl_cov_ratio: float = 2e-4
    ppo_kl_coef: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        getattr(super(), "__post_init__", lambda: None)()  # keep any check verl adds upstream
        validate(self)
