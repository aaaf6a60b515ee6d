"""Entropy target (beyond the paper): the covariance methods act harder as the entropy falls below H*.

Each mini-batch, with Ĥ the measured entropy (``verl_cov.scope``: −mean log π_old over the mini-batch's
valid tokens on all ranks, an unbiased estimate of the sampling policy's per-token entropy),

    e = clip((H*(s) − Ĥ)/H*(s), −1, 1),   I <- clip(I + e, 0, log φ_max/κ_I)   (κ_I > 0 only),
    φ = exp(clip(κ·e + κ_I·I, −κ_max, log φ_max)),   κ_max = ``MAX_TARGET_GAIN`` = 50,
    share = min(1, ratio·φ),   β' = β·φ (``target_adapts_beta``),   Clip-Cov's band -> [ω_low/φ, ω_high·φ],

with φ_max the largest φ the method can use: 1/ratio, where the share reaches 1, or with
``target_adapts_beta`` up to ``MAX_KL_COEF``/β (and never above e^κ_max).

At Ĥ = H* (and I = 0) the configured ratio and band apply; below the target the method acts on more
tokens (the band widens too, since a share alone cannot reach the positive-covariance tokens outside
[ω_low, ω_high] that keep lowering the entropy); above it, on fewer. With κ_I = 0 (the default) this is
the proportional law φ = exp(κ·e), which settles below H*: it needs a standing error to act harder than
configured. The integral term I, the running sum of e over mini-batches, supplies that standing action
instead, so the entropy settles at H*. Anti-windup: I does not grow while φ is at φ_max and e > 0
(conditional integration), and κ_I·I stays within [0, log φ_max], so a long stretch below the target
stores no more than the law can use and the action falls as soon as the entropy is back above H*
(else, with the share already 1, I would keep every token selected for as many mini-batches as it took to
unwind). I accumulates once per mini-batch, so κ_I's effect per training step grows with the number of
mini-batches (and PPO epochs) per step. I never goes negative, since a run starts far
above the target for many steps (e = −1 each) and a negative store would let the entropy fall through
H* before it unwound: RL lowers the entropy, so the standing action is upward. φ stays within
[e^-50, e^50], so no value of Ĥ, I or the gains makes it 0 or infinite. A non-finite Ĥ (no valid token) leaves the
configured values in place, is reported (``skipped``), and leaves the state unchanged.

H*(s) follows ``target_schedule`` over the training step s (s = 1 is the run's first step): with
H*_0 = ``target_entropy``, H*_end = ``target_entropy_end``, S = ``target_schedule_steps`` and
p = clip((s − 1)/(S − 1), 0, 1),

    constant: H*_0,   linear: H*_0 + (H*_end − H*_0)·p,   cosine: H*_end + (H*_0 − H*_end)·(1 + cos πp)/2,

so H*(1) = H*_0 and H*(s) = H*_end from s = S on; s = 0 (a mini-batch before any counted step) reads
H*_0. With ``target_relative`` both values are fractions of Ĥ_0, the first finite, positive Ĥ of the run.

The state (s, I, Ĥ_0) is ``TargetState``, one per process: ``control`` reads and advances the current
one, verl's training step advances s (``verl_cov.engine_adapter`` counts the worker's
``train_mini_batch`` calls and saves the state with verl's checkpoints, so a resumed run continues
exactly), and ``run_state`` gives a run of the study its own. Every rank computes the same Ĥ (all-reduced),
so every rank's state and φ agree. A large β·φ makes KL-Cov's gradient large (β·sign(log π − log π_old)
per token): keep verl's ``grad_clip`` on with it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from verl_cov.config import CONSTANT, LINEAR, MAX_KL_COEF, MAX_TARGET_GAIN, CovPolicyLossConfig


class Control(NamedTuple):
    """What the controller sets for one mini-batch: the selected share, KL-Cov's β, Clip-Cov's band, whether
    the target was skipped (Ĥ not finite), the target H* in force (nats; NaN: no target, or a relative one
    before Ĥ_0 is known) and the integral I after this mini-batch."""

    share: float
    beta: float
    clip_cov_lb: float
    clip_cov_ub: float
    skipped: bool = False
    target: float = math.nan
    integral: float = 0.0


@dataclass
class TargetState:
    """The controller's state in one process.

    Attributes:
        step: s, the training steps begun (0 before the first); H*(s) holds for the current step.
        integral: I, the running sum of the tracking error e over mini-batches (dimensionless).
        initial_entropy: Ĥ_0, nats per token: the run's first finite, positive Ĥ; None before it.
    """

    step: int = 0
    integral: float = 0.0
    initial_entropy: float | None = None

    def begin_step(self) -> None:
        """Advance s: the mini-batches that follow belong to the next training step."""
        self.step += 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; floats round-trip exactly through ``json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TargetState:
        """The state ``to_dict`` wrote; ``ValueError`` for anything else."""
        step, integral, initial = values["step"], float(values["integral"]), values["initial_entropy"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0 or not math.isfinite(integral):
            raise ValueError(f"not a verl-cov target state: {values!r}")
        if initial is not None and not (math.isfinite(float(initial)) and float(initial) > 0):
            raise ValueError(f"not a verl-cov target state: {values!r}")
        return cls(step, integral, None if initial is None else float(initial))


_STATE = TargetState()  # the process's; verl's workers keep one for the whole run


def current_state() -> TargetState:
    """The state ``control`` reads and advances in this process."""
    return _STATE


def set_state(state: TargetState) -> None:
    """Make ``state`` the process's state (a checkpoint's, when verl resumes)."""
    global _STATE
    _STATE = state


@contextlib.contextmanager
def run_state(state: TargetState | None = None) -> Iterator[TargetState]:
    """Run a block (one training run of several in a process) with ``state``, a fresh one by default;
    the previous state is back afterwards."""
    previous = current_state()
    set_state(TargetState() if state is None else state)
    try:
        yield current_state()
    finally:
        set_state(previous)


def schedule_value(config: CovPolicyLossConfig, step: int) -> float:
    """H*(s) in the units of ``target_entropy`` (nats, or a fraction of Ĥ_0 with ``target_relative``)."""
    start = config.target_entropy
    if config.target_schedule == CONSTANT:
        return start
    end = config.target_entropy_end
    p = min(1.0, max(0.0, (step - 1) / (config.target_schedule_steps - 1)))
    if config.target_schedule == LINEAR:
        return start + (end - start) * p
    return end + (start - end) * (1 + math.cos(math.pi * p)) / 2


def target_in_force(config: CovPolicyLossConfig, state: TargetState) -> float:
    """H*(s) in nats per token; NaN for a relative target before Ĥ_0 is measured."""
    value = schedule_value(config, state.step)
    if not config.target_relative:
        return value
    return math.nan if state.initial_entropy is None else value * state.initial_entropy


def tracking_error(entropy: float, target: float) -> float:
    """e = clip((H* − Ĥ)/H*, −1, 1): the entropy's relative shortfall (H* > 0)."""
    return max(-1.0, min(1.0, (target - entropy) / target))


def ceiling(ratio: float, settings: CovPolicyLossConfig) -> float:
    """log φ_max, the largest log φ the method can use: the share reaches 1 at φ = 1/ratio; with
    ``target_adapts_beta`` β' = β·φ keeps acting up to ``MAX_KL_COEF`` (the largest β the config accepts)."""
    usable = math.log(1 / ratio)
    if settings.target_adapts_beta and settings.ppo_kl_coef > 0:
        usable = max(usable, math.log(MAX_KL_COEF / settings.ppo_kl_coef))
    return min(MAX_TARGET_GAIN, usable)


def integrated(integral: float, error: float, gain: float, integral_gain: float, log_phi_max: float) -> float:
    """I + e, with anti-windup: not while φ is already at its ceiling and e would raise it further
    (conditional integration), and I within [0, log φ_max/κ_I]; I unchanged when κ_I = 0."""
    if integral_gain == 0 or (error > 0 and gain * error + integral_gain * integral >= log_phi_max):
        return integral
    return max(0.0, min(log_phi_max / integral_gain, integral + error))


def gain_factor(error: float, gain: float, integral_term: float = 0.0, log_phi_max: float = MAX_TARGET_GAIN) -> float:
    """φ = exp(clip(κ·e + κ_I·I, −κ_max, log φ_max)), in [e^-50, e^50]; exp(κ·e) when κ_I·I = 0."""
    return math.exp(max(-MAX_TARGET_GAIN, min(log_phi_max, gain * error + integral_term)))


def configured(ratio: float, settings: CovPolicyLossConfig, skipped: bool = False) -> Control:
    """The configured values, unchanged (no target, or a mini-batch the target cannot measure)."""
    return Control(ratio, settings.ppo_kl_coef, settings.clip_cov_lb, settings.clip_cov_ub, skipped)


def control(ratio: float, settings: CovPolicyLossConfig, entropy: float) -> Control:
    """The share and β for a mini-batch of measured entropy ``entropy``; ``ratio`` is r or k from config.
    With a target, reads and advances the process's ``TargetState``: call it once per mini-batch."""
    if settings.target_entropy is None:
        return configured(ratio, settings)
    state = current_state()
    if math.isfinite(entropy) and entropy > 0 and state.initial_entropy is None:
        state.initial_entropy = entropy
    target = target_in_force(settings, state)
    if not (math.isfinite(entropy) and target > 0):  # NaN target: a relative one without Ĥ_0 yet
        return configured(ratio, settings, skipped=True)._replace(target=target, integral=state.integral)
    error = tracking_error(entropy, target)
    log_phi_max = ceiling(ratio, settings)
    state.integral = integrated(state.integral, error, settings.target_gain, settings.target_integral_gain, log_phi_max)
    phi = gain_factor(error, settings.target_gain, settings.target_integral_gain * state.integral, log_phi_max)
    beta = settings.ppo_kl_coef * phi if settings.target_adapts_beta else settings.ppo_kl_coef
    widened = _widened(settings.clip_cov_lb, settings.clip_cov_ub, phi)
    return Control(min(1.0, ratio * phi), beta, *widened, False, target, state.integral)


def _widened(low: float, high: float, phi: float) -> tuple[float, float]:
    """[ω_low, ω_high] scaled away from 0 on each side by φ (a bound's sign never changes)."""
    return (low / phi if low > 0 else low * phi), (high * phi if high > 0 else high / phi)
