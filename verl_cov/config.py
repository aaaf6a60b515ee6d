"""Config schema of the verl-cov policy-loss modes: the one place each knob's default and range live.

Users select it with ``actor_rollout_ref.actor.policy_loss._target_=verl_cov.config.CovPolicyLossConfig``
(or the packaged overlay, ``verl-cov config-path``). verl builds it with Hydra in the driver's config
check, so a bad value, an unknown or unloaded loss mode, or a verl-cov key that the chosen mode would
ignore stops the launch before Ray starts or a model loads. A plain verl ``PolicyLossConfig`` works too:
``settings`` fills the keys it lacks with the defaults below and checks it on first use.

A leaf module: it imports nothing of verl-cov but the verl adapter and the modes' names, and installs nothing.
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH, PolicyLossConfig, plugin_loading_hint, registered_policy_losses
from verl_cov.names import CLIP_COV, FORKING, KL_COV, MODES, VANILLA

KEY_PREFIX = "actor_rollout_ref.actor.policy_loss"
SELECTING_MODES = (CLIP_COV, KL_COV)  # the covariance methods: a share of tokens selected by Cov
MICRO_BATCH, GLOBAL = "micro_batch", "global"
SCOPES = (MICRO_BATCH, GLOBAL)
CONSTANT, LINEAR, COSINE = "constant", "linear", "cosine"
SCHEDULES = (CONSTANT, LINEAR, COSINE)  # how H* moves from target_entropy to target_entropy_end
MAX_TARGET_GAIN = 50.0  # κ_max: log φ stays within [−κ_max, κ_max], so φ within [e^-50, e^50]
FORKING_DEFAULT_SHARE = 0.2  # Wang et al. 2025, the 80/20 rule
MAX_KL_COEF = 1e6  # with |log-ratio| <= 20 and φ <= e^50, β·φ·D_KL stays finite in float32


def knob(default: Any, symbol: str, allowed: str, meaning: str) -> Any:
    """A config field with its paper symbol, allowed range and meaning (read by the checks and the README test)."""
    return field(default=default, metadata={"symbol": symbol, "allowed": allowed, "meaning": meaning})


@dataclass
class CovPolicyLossConfig(PolicyLossConfig):
    """verl's ``PolicyLossConfig`` with the paper's defaults (Cui et al. 2025, Sec. 4) and verl-cov's keys.

    verl's own YAML sets ``ppo_kl_coef: 0.1``; with only ``_target_`` on the command line that value wins
    over the paper's β = 1 here (the overlay sets the paper's values). ``seed``, ``selection_scope`` and
    ``target_*`` are verl-cov's: they are not in verl's YAML, so set them with Hydra's ``+`` unless the
    overlay is used.
    """

    clip_cov_ratio: float = knob(2e-4, "r", "(0, 1]", "share of valid tokens whose gradient Clip-Cov cuts")
    clip_cov_lb: float = knob(1.0, "ω_low", "< clip_cov_ub", "lower covariance bound of Clip-Cov candidates")
    clip_cov_ub: float = knob(5.0, "ω_high", "> clip_cov_lb", "upper covariance bound of Clip-Cov candidates")
    kl_cov_ratio: float = knob(
        2e-4, "k", "(0, 1]", "share of valid tokens KL-Cov penalises (paper: 2e-3 for 7B, 2e-4 for 32B)"
    )
    ppo_kl_coef: float = knob(1.0, "β", f"[0, {MAX_KL_COEF:g}]", "KL-Cov penalty coefficient")
    seed: int = knob(0, "", "[0, 2**63)", "seed of the token-selection hash (same seed and tokens: same selection)")
    selection_scope: str = knob(
        MICRO_BATCH,
        "",
        "micro_batch, global",
        "`global`: select, and take the 80/20 quantile, over the whole mini-batch on all ranks (verl >= 0.8)",
    )
    target_entropy: float | None = knob(
        None, "H*", "> 0 nats, or null", "hold the entropy near H* nats per token (verl >= 0.8); null: off"
    )
    target_gain: float = knob(20.0, "κ", f"(0, {MAX_TARGET_GAIN:g}]", "the entropy controller's gain")
    target_adapts_beta: bool = knob(False, "", "true or false", "KL-Cov with a target: scale β with the share")
    target_schedule: str = knob(
        CONSTANT,
        "",
        "constant, linear, cosine",
        "how H* moves from target_entropy at step 1 to target_entropy_end at step target_schedule_steps",
    )
    target_entropy_end: float | None = knob(
        None, "H*_end", "> 0, or null", "H* from step target_schedule_steps on (linear or cosine schedule)"
    )
    target_schedule_steps: int | None = knob(
        None, "S", "an integer >= 2, or null", "the training step at which H* reaches target_entropy_end"
    )
    target_relative: bool = knob(
        False, "", "true or false", "target_entropy and target_entropy_end are fractions of Ĥ_0, the first Ĥ measured"
    )
    target_integral_gain: float = knob(
        0.0, "κ_I", f"[0, {MAX_TARGET_GAIN:g}]", "the controller's integral gain: the entropy settles at H*, not below"
    )
    forking_share: float | None = knob(
        None,
        "ρ",
        "(0, 1], or null",
        "policy gradient only for the top ρ share of tokens by entropy (80/20 rule; verl >= 0.8); "
        f"null: every token, except {FORKING}: ρ = {FORKING_DEFAULT_SHARE}",
    )

    def __post_init__(self) -> None:
        getattr(super(), "__post_init__", lambda: None)()  # keep any check verl adds upstream
        check(self)

    @property
    def needs_mini_batch_statistics(self) -> bool:
        """Whether the loss needs ``verl_cov.scope`` statistics of the whole mini-batch."""
        return self.loss_mode in SELECTING_MODES and (self.selection_scope == GLOBAL or self.target_entropy is not None)

    @property
    def forking(self) -> float | None:
        """ρ, the share of highest-entropy tokens that get the policy gradient; None: every token."""
        return FORKING_DEFAULT_SHARE if self.loss_mode == FORKING and self.forking_share is None else self.forking_share

    @property
    def statistics_key(self) -> tuple[str, Any]:
        """The key (and its value) that asks for mini-batch statistics, for error messages."""
        if self.selection_scope == GLOBAL:
            return "selection_scope", GLOBAL
        return "target_entropy", self.target_entropy


KNOBS = {f.name: f for f in fields(CovPolicyLossConfig) if "allowed" in f.metadata}
# verl-cov's own keys (not in verl's PolicyLossConfig), which only Clip-Cov and KL-Cov read.
OWN_KEYS = tuple(name for name in KNOBS if name not in {f.name for f in fields(PolicyLossConfig)})


def default(name: str) -> Any:
    return KNOBS[name].default if KNOBS[name].default is not MISSING else None


def _fail(key: str, value: Any, reason: str) -> None:
    raise ValueError(f"{KEY_PREFIX}.{key}={value!r} is out of range: {reason}")


def _allowed(key: str) -> str:
    return f"must be {KNOBS[key].metadata['allowed']}" if key in KNOBS else ""


def _number(config: Any, key: str) -> float:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _fail(key, value, f"must be a finite number, {KNOBS[key].metadata['allowed']}")
    return float(value)


def _check_values(config: Any) -> None:
    for key in ("clip_cov_ratio", "kl_cov_ratio"):
        if not 0 < _number(config, key) <= 1:
            _fail(key, config.get(key), _allowed(key))
    if not _number(config, "clip_cov_lb") < _number(config, "clip_cov_ub"):
        _fail("clip_cov_lb", config.get("clip_cov_lb"), f"must be < clip_cov_ub={config.get('clip_cov_ub')!r}")
    if not 0 <= _number(config, "ppo_kl_coef") <= MAX_KL_COEF:
        _fail("ppo_kl_coef", config.get("ppo_kl_coef"), _allowed("ppo_kl_coef"))
    seed = config.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        _fail("seed", seed, "must be an integer in [0, 2**63)")
    if config.get("selection_scope") not in SCOPES:
        _fail("selection_scope", config.get("selection_scope"), f"must be one of {', '.join(SCOPES)}")
    if config.get("target_entropy") is not None and not _number(config, "target_entropy") > 0:
        reason = "must be > 0 nats per token (a share of Ĥ_0 with target_relative), or null to switch it off"
        _fail("target_entropy", config.get("target_entropy"), reason)
    if not 0 < _number(config, "target_gain") <= MAX_TARGET_GAIN:
        _fail("target_gain", config.get("target_gain"), _allowed("target_gain"))
    for key in ("target_adapts_beta", "target_relative"):
        if not isinstance(config.get(key), bool):
            _fail(key, config.get(key), "must be true or false")
    _check_schedule(config)
    if not 0 <= _number(config, "target_integral_gain") <= MAX_TARGET_GAIN:
        _fail("target_integral_gain", config.get("target_integral_gain"), _allowed("target_integral_gain"))
    share = config.get("forking_share")
    if share is not None and not 0 < _number(config, "forking_share") <= 1:
        _fail("forking_share", share, _allowed("forking_share"))


def _check_schedule(config: Any) -> None:
    """H*(s): a schedule name, and an end value and step exactly when the schedule moves H*."""
    schedule = config.get("target_schedule")
    if schedule not in SCHEDULES:
        _fail("target_schedule", schedule, f"must be one of {', '.join(SCHEDULES)}")
    end, steps = config.get("target_entropy_end"), config.get("target_schedule_steps")
    if end is not None and not _number(config, "target_entropy_end") > 0:
        _fail("target_entropy_end", end, _allowed("target_entropy_end"))
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 2):
        _fail("target_schedule_steps", steps, _allowed("target_schedule_steps"))
    moves = schedule != CONSTANT
    for key, value in (("target_entropy_end", end), ("target_schedule_steps", steps)):
        if moves and value is None:
            _fail(key, value, f"must be set with target_schedule={schedule}")
        if not moves and value is not None:
            _fail(key, value, f"needs target_schedule={LINEAR} or {COSINE} (target_schedule={CONSTANT} ignores it)")


def _check_mode(mode: Any) -> None:
    """The loss mode is registered in this process (with verl >= 0.9 the plugin loads in every process
    on ``import verl``, the driver's check included), or the error names the fix and the close matches."""
    registered = registered_policy_losses()
    if mode in registered:
        return
    if mode in MODES:
        hint = plugin_loading_hint()
        if hint is None:  # verl < 0.9: the driver never loads external_lib; the workers will, before this check
            return
        raise ValueError(f"{KEY_PREFIX}.loss_mode={mode!r} is not registered in this process: {hint}")
    names = sorted({*registered, *MODES})
    folded = {name.lower().replace("-", "_"): name for name in names}  # VERL_COV.kl_cov, verl-cov.kl_cov
    key = str(mode).lower().replace("-", "_")
    close = [key] if key in folded else difflib.get_close_matches(key, list(folded), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(folded[name] for name in close)}? " if close else ""
    raise ValueError(f"{KEY_PREFIX}.loss_mode={mode!r} is not a registered policy loss: {hint}registered: {names}")


# Which of verl-cov's own keys each mode reads (the config side of the methods table, verl_cov.methods):
# a key set away from its default for a mode that does not read it is refused, never ignored all run.
_TARGET_KEYS = (
    "target_entropy",
    "target_gain",
    "target_schedule",
    "target_entropy_end",
    "target_schedule_steps",
    "target_relative",
    "target_integral_gain",
)
# Target keys that act only through H*: set without target_entropy they would be ignored all run.
_NEEDS_TARGET = ("target_adapts_beta", *_TARGET_KEYS[2:])
READS = {
    CLIP_COV: ("seed", "selection_scope", *_TARGET_KEYS, "forking_share"),
    KL_COV: ("seed", "selection_scope", *_TARGET_KEYS, "target_adapts_beta", "forking_share"),
    FORKING: ("forking_share", "selection_scope"),
    VANILLA: (),
}
# Keys served through verl's engine workers (their train_batch, which verl-cov wraps): mini-batch statistics, entropy.
ENGINE_KEYS = ("selection_scope", "target_entropy", "forking_share")


def readers(key: str) -> tuple[str, ...]:
    """The verl-cov modes that read ``key``."""
    return tuple(mode for mode, keys in READS.items() if key in keys)


def _readers(key: str) -> str:
    *others, last = readers(key)
    return f"{', '.join(others)} and {last}" if others else last


def _check_mode_uses_keys(config: CovPolicyLossConfig, mode: Any) -> None:
    """Refuse a verl-cov key that ``mode`` would silently ignore for the whole run, and what verl < 0.8 cannot serve."""
    changed = [key for key in OWN_KEYS if config.get(key, default(key)) != default(key)]
    for key in changed:
        if key not in READS.get(mode, ()):
            owner = "verl-cov's own" if mode in MODES else "verl's own"
            reason = f"applies to {_readers(key)} only; loss_mode={mode!r} ({owner}) would ignore it"
            _fail(key, config.get(key), reason)
        if key in _NEEDS_TARGET and config.get("target_entropy") is None:
            _fail(key, config.get(key), "needs target_entropy to be set")
    if HAS_ENGINE_TRAIN_BATCH:
        return
    if mode == FORKING:
        raise ValueError(f"{KEY_PREFIX}.loss_mode={mode!r} needs verl >= 0.8 (the engine workers' per-token entropy)")
    for key in (key for key in ENGINE_KEYS if key in changed):
        _fail(key, config.get(key), "needs verl >= 0.8 (the engine workers, whose train_batch verl-cov wraps)")


def check(config: CovPolicyLossConfig) -> None:
    """Check a config as it is built (``__post_init__``; ``settings`` builds one from any other policy-loss
    config); ``ValueError`` naming the full key, the value and the allowed range, or the loss mode and its fix."""
    _check_values(config)
    mode = config.get("loss_mode")
    _check_mode(mode)
    _check_mode_uses_keys(config, mode)


def settings_for(policy_loss: Any, modes: tuple[str, ...]) -> CovPolicyLossConfig | None:
    """``settings(policy_loss)`` when it is a config of one of ``modes``; None for no policy loss or another mode
    (verl's own, a critic's), whose config is then never built or checked as verl-cov's."""
    if policy_loss is None or policy_loss.get("loss_mode") not in modes:
        return None
    return settings(policy_loss)


@functools.lru_cache(maxsize=64)
def _from_values(items: tuple[tuple[str, Any], ...]) -> CovPolicyLossConfig:
    return CovPolicyLossConfig(**dict(items))


def settings(policy_loss: Any) -> CovPolicyLossConfig:
    """The checked verl-cov settings of a policy-loss config: ``policy_loss`` itself when it is ours
    (checked when built), else a ``CovPolicyLossConfig`` from its values, keys it lacks taking the defaults
    above (verl's ``ppo_kl_coef`` keeps verl's value), checked once per distinct set of values."""
    if isinstance(policy_loss, CovPolicyLossConfig):
        return policy_loss
    items = (("loss_mode", policy_loss.get("loss_mode")),) + tuple(
        (name, policy_loss.get(name, default(name))) for name in KNOBS
    )
    return _from_values(items)
