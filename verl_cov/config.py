"""Config schema of the verl-cov policy-loss modes, validated when verl builds its actor config.

Users select it with ``actor_rollout_ref.actor.policy_loss._target_=verl_cov.config.CovPolicyLossConfig``
(or the overlay in ``recipes/config``); verl instantiates it with Hydra in the driver's config check,
so a bad value stops the launch before Ray starts or a model loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH, PolicyLossConfig

KEY_PREFIX = "actor_rollout_ref.actor.policy_loss"
CLIP_COV = "verl_cov.clip_cov"
KL_COV = "verl_cov.kl_cov"
VANILLA = "verl_cov.vanilla"
MODES = (CLIP_COV, KL_COV, VANILLA)
MICRO_BATCH, GLOBAL = "micro_batch", "global"
SCOPES = (MICRO_BATCH, GLOBAL)
MAX_TARGET_GAIN = 50.0  # the share may grow by at most e^κ
DEFAULT_TARGET_GAIN = 20.0


class CovSettings(NamedTuple):
    """The validated knobs, with the paper's symbols: r (clip_cov_ratio), ω_low/ω_high, k, β; then the
    selection scope and the entropy target H* with its gain κ (``verl_cov.controller``)."""

    clip_cov_ratio: float
    clip_cov_lb: float
    clip_cov_ub: float
    kl_cov_ratio: float
    ppo_kl_coef: float
    seed: int
    selection_scope: str
    target_entropy: float | None
    target_gain: float
    target_adapts_beta: bool

    @property
    def needs_mini_batch_statistics(self) -> bool:
        """Whether the loss needs ``verl_cov.scope`` statistics of the whole mini-batch."""
        return self.selection_scope == GLOBAL or self.target_entropy is not None

    @property
    def statistics_key(self) -> tuple[str, Any]:
        """The key (and its value) that asks for mini-batch statistics, for error messages."""
        if self.selection_scope == GLOBAL:
            return "selection_scope", GLOBAL
        return "target_entropy", self.target_entropy


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
        selection_scope=policy_loss.get("selection_scope", MICRO_BATCH),
        target_entropy=policy_loss.get("target_entropy", None),
        target_gain=_number("target_gain", policy_loss.get("target_gain", DEFAULT_TARGET_GAIN)),
        target_adapts_beta=policy_loss.get("target_adapts_beta", False),
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
    _validate_extensions(settings, mode)
    return settings


def _validate_extensions(settings: CovSettings, mode: Any) -> None:
    """The beyond-the-paper keys: selection scope and entropy target."""
    if settings.selection_scope not in SCOPES:
        _fail("selection_scope", settings.selection_scope, f"must be one of {', '.join(SCOPES)}")
    if settings.target_entropy is not None:
        target = _number("target_entropy", settings.target_entropy)
        if target <= 0:
            _fail("target_entropy", target, "must be > 0 nats per token, or null to switch the target off")
    if not 0 < settings.target_gain <= MAX_TARGET_GAIN:
        _fail("target_gain", settings.target_gain, f"must be in (0, {MAX_TARGET_GAIN:g}]")
    if not isinstance(settings.target_adapts_beta, bool):
        _fail("target_adapts_beta", settings.target_adapts_beta, "must be true or false")
    if settings.target_adapts_beta and settings.target_entropy is None:
        _fail("target_adapts_beta", True, "needs target_entropy to be set")
    if not settings.needs_mini_batch_statistics:
        return
    key, value = settings.statistics_key
    if mode == VANILLA:
        _fail(key, value, f"applies to {CLIP_COV} and {KL_COV} only; {VANILLA} selects no tokens")
    if not HAS_ENGINE_TRAIN_BATCH:
        _fail(key, value, "needs verl >= 0.8 (the engine workers, whose train_batch verl-cov wraps)")


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
        selection_scope (str): ``micro_batch`` (the paper's code: Cov and the selection per micro-batch
            and rank) or ``global`` (over the whole PPO mini-batch on all data-parallel ranks, the same
            tokens whatever the split; see ``verl_cov.scope``).
        target_entropy (float | None): H*, entropy in nats per token to hold; the share (and with
            ``target_adapts_beta`` β) adapts each mini-batch (``verl_cov.controller``). None: off.
        target_gain (float): κ, the controller's gain, in (0, 50]: the share is r·exp(κ·(H* − Ĥ)/H*).
        target_adapts_beta (bool): KL-Cov: scale β by the same factor as the share.
    """

    clip_cov_ratio: float = 2e-4
    clip_cov_lb: float = 1.0
    clip_cov_ub: float = 5.0
    kl_cov_ratio: float = 2e-4
    ppo_kl_coef: float = 1.0
    seed: int = 0
    selection_scope: str = MICRO_BATCH
    target_entropy: float | None = None
    target_gain: float = DEFAULT_TARGET_GAIN
    target_adapts_beta: bool = False

    def __post_init__(self) -> None:
        getattr(super(), "__post_init__", lambda: None)()  # keep any check verl adds upstream
        if validate(self).needs_mini_batch_statistics:
            # Every verl process that builds this config (driver, each actor worker) trains its
            # mini-batches inside verl_cov.scope from then on.
            from verl_cov import engine_hook

            engine_hook.install()
