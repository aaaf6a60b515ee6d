"""verl_cov.controller: the entropy target's law, its schedule, integral and state, and its closed loop on a
softmax bandit trained with the real losses, mini-batch statistics and verl-style gradient clipping."""

import json
import math

import pytest
import torch
from conftest import actor_config
from verl.trainer.ppo.core_algos import get_policy_loss_fn

from verl_cov import scope
from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH
from verl_cov.config import MAX_KL_COEF, MAX_TARGET_GAIN
from verl_cov.controller import TargetState, configured, control, current_state, run_state
from verl_cov.metrics import control_metrics
from verl_cov.scope import MiniBatchStatistics


def settings(**policy_loss):
    return actor_config("verl_cov.kl_cov", **policy_loss).policy_loss


needs_engine = pytest.mark.skipif(not HAS_ENGINE_TRAIN_BATCH, reason="the entropy target needs verl >= 0.8")


@pytest.fixture(autouse=True)
def fresh_state():
    """Each test starts as a new run: step 0, no integral, no Ĥ_0."""
    with run_state() as state:
        yield state


def test_without_target_the_configured_values_apply():
    s = settings(kl_cov_ratio=0.01, ppo_kl_coef=0.5)
    assert control(0.01, s, entropy=0.0) == configured(0.01, s)
    assert configured(0.01, s)[:5] == (0.01, 0.5, 1.0, 5.0, False)


@needs_engine
def test_share_follows_the_entropy_gap():
    s = settings(target_entropy=2.0, target_gain=4.0)
    at_target = control(0.01, s, 2.0)
    assert at_target == (0.01, 1.0, 1.0, 5.0, False, 2.0, 0.0)
    shares = [control(0.01, s, h).share for h in (3.0, 2.0, 1.5, 1.0, 0.5, 0.0)]
    assert shares == sorted(shares) and shares[0] < 0.01 < shares[2]
    assert math.isclose(control(0.01, s, 1.0).share, 0.01 * math.exp(4.0 * 0.5))
    assert control(0.5, s, 0.0).share == 1.0  # capped
    low = control(0.01, s, 1.0)
    assert low.beta == 1.0 and low.clip_cov_lb < 1.0 and low.clip_cov_ub > 5.0


@needs_engine
def test_beta_adapts_only_when_asked_and_band_keeps_its_signs():
    s = settings(target_entropy=1.0, target_gain=2.0, target_adapts_beta=True, clip_cov_lb=-1.0, clip_cov_ub=3.0)
    c = control(0.01, s, 0.5)
    phi = math.exp(1.0)
    assert math.isclose(c.beta, phi) and math.isclose(c.clip_cov_lb, -phi) and math.isclose(c.clip_cov_ub, 3 * phi)


@needs_engine
@pytest.mark.parametrize("target", [1e-6, 0.05, 0.3, 1.0, 5.0, 1e3])
@pytest.mark.parametrize("gain", [1e-3, 1.0, 20.0, MAX_TARGET_GAIN])
def test_every_accepted_setting_gives_finite_values_over_the_entropy_range(target, gain):
    """No division by zero and no NaN anywhere in the accepted range: H* > 0, κ in (0, 50], Ĥ in [0, 20];
    φ stays within [e^-κ, e^κ], so Clip-Cov's band never divides by 0 (H* = 0.05, κ = 20, Ĥ = 2.3 used to)."""
    s = settings(target_entropy=target, target_gain=gain, target_adapts_beta=True, ppo_kl_coef=1e6)
    for entropy in [0.0, 1e-9, 0.05, 0.5, 2.3, 7.0, 20.0]:
        c = control(2e-4, s, entropy)
        assert all(math.isfinite(v) for v in c[:4]) and 0 < c.share <= 1 and not c.skipped, (entropy, c)
        assert c.clip_cov_lb != 0 and c.clip_cov_ub != 0


@needs_engine
@pytest.mark.parametrize("entropy", [math.nan, math.inf, -math.inf])
def test_a_non_finite_entropy_skips_the_target_and_says_so(entropy):
    """A NaN Ĥ used to set the share to 1 silently; now the configured values apply and it is flagged."""
    s = settings(kl_cov_ratio=0.01, target_entropy=1.0, target_adapts_beta=True)
    assert control(0.01, s, entropy)[:5] == (0.01, 1.0, 1.0, 5.0, True)


def bandit(
    mode: str, target: float | None, seed: int, steps: int = 200, arms: int = 32, samples: int = 256, **target_keys
):
    """Entropy per step of a softmax policy over ``arms`` actions, reward = arm index / arms (one best
    arm, so plain policy gradient collapses), GRPO-style normalised advantages, two mini-batches per
    step, SGD with gradient-norm clipping at 1 (verl's default ``grad_clip``); a fresh controller state
    whose step advances each step, as verl's worker does."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.zeros(arms, requires_grad=True)
    keys = {"clip_cov_ratio": 0.01, "kl_cov_ratio": 0.05}
    if target is not None:
        keys.update(target_entropy=target, target_adapts_beta=mode == "verl_cov.kl_cov", **target_keys)
    actor = actor_config(mode, clip_ratio=1.0, **keys)
    loss_fn, optimizer = get_policy_loss_fn(mode), torch.optim.SGD([logits], lr=0.3)
    entropy = []
    with run_state() as state:
        for _ in range(steps):
            state.begin_step()
            with torch.no_grad():
                log_pi = torch.log_softmax(logits, -1)
                entropy.append(float(-(log_pi.exp() * log_pi).sum()))
                actions = torch.multinomial(log_pi.exp(), samples, replacement=True, generator=g)
                reward = actions.float() / arms
                advantages = ((reward - reward.mean()) / (reward.std() + 1e-6))[:, None]
                old_log_prob = log_pi[actions][:, None]
            mask = torch.ones(samples, 1, dtype=torch.bool)
            for rows in torch.arange(samples).split(samples // 2):
                with scope.mini_batch(actor.policy_loss, old_log_prob[rows], advantages[rows], mask[rows]):
                    log_prob = torch.log_softmax(logits, -1)[actions[rows]][:, None]
                    loss, _ = loss_fn(old_log_prob[rows], log_prob, advantages[rows], mask[rows], "token-mean", actor)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_([logits], 1.0)
                optimizer.step()
    return entropy


# Where each method holds the bandit's entropy over the last 100 of 200 steps (10th percentile to maximum),
# as a share of H*.
# Clip-Cov settles below the target (its lever saturates: once every candidate is cut the rest of
# the gradient still lowers entropy), KL-Cov with an adaptive β tracks it closely.
BANDS = {"verl_cov.clip_cov": (0.4, 1.1), "verl_cov.kl_cov": (0.75, 1.1)}


@needs_engine
@pytest.mark.parametrize("mode", list(BANDS))
@pytest.mark.parametrize("seed", [0, 1])
def test_target_holds_entropy_in_a_band_where_the_fixed_share_collapses(mode, seed):
    target = 1.5
    fixed = bandit(mode, None, seed)
    held = bandit(mode, target, seed)
    low, high = BANDS[mode]
    assert max(fixed[-100:]) < min(low * target, 0.2 * target)
    # The 10th percentile, not the minimum: a mini-batch that measures a low entropy by chance makes β·φ
    # spike for one step, and the controller pulls the entropy back within a few steps.
    tenth = sorted(held[-100:])[10]
    assert low * target <= tenth and max(held[-100:]) <= high * target, held[-100:]


@needs_engine
@pytest.mark.parametrize("seed", [0, 1])
def test_the_integral_term_settles_the_entropy_at_the_target_where_the_proportional_law_settles_below(seed):
    """KL-Cov with an adaptive β and a low gain κ = 5: the proportional law needs a standing error to act,
    so over the last 100 of 200 steps the entropy averages about 0.74·H*; with κ_I = 0.2 the integral
    supplies that action and the entropy averages H* (0.98–1.01·H* on these seeds)."""
    target, mode = 1.5, "verl_cov.kl_cov"
    proportional = bandit(mode, target, seed, target_gain=5.0)
    integral = bandit(mode, target, seed, target_gain=5.0, target_integral_gain=0.2)
    assert sum(proportional[-100:]) / 100 < 0.8 * target
    assert 0.95 * target <= sum(integral[-100:]) / 100 <= 1.05 * target, integral[-100:]


def linear(start, end, steps, s):
    return start + (end - start) * min(1, max(0, (s - 1) / (steps - 1)))


def cosine(start, end, steps, s):
    p = min(1, max(0, (s - 1) / (steps - 1)))
    return end + (start - end) * (1 + math.cos(math.pi * p)) / 2


@needs_engine
@pytest.mark.parametrize("schedule, formula", [("linear", linear), ("cosine", cosine)])
@pytest.mark.parametrize("start, end", [(2.0, 1.0), (0.5, 3.0)])
def test_the_schedule_moves_the_target_from_start_at_step_1_to_end_at_step_s(schedule, formula, start, end):
    s = settings(target_entropy=start, target_schedule=schedule, target_entropy_end=end, target_schedule_steps=5)
    for step in (0, 1, 2, 3, 4, 5, 6, 50):
        with run_state(TargetState(step=step)):
            assert math.isclose(control(0.01, s, 1.2).target, formula(start, end, 5, step), rel_tol=1e-12), step
    assert formula(start, end, 5, 1) == start and formula(start, end, 5, 5) == end


@needs_engine
def test_a_constant_schedule_holds_the_target_at_every_step():
    s = settings(target_entropy=1.3)
    for step in (0, 1, 7, 10**6):
        with run_state(TargetState(step=step)):
            assert control(0.01, s, 1.0).target == 1.3


@needs_engine
def test_a_relative_target_is_a_fraction_of_the_first_entropy_measured(fresh_state):
    s = settings(
        target_entropy=0.5,
        target_relative=True,
        target_schedule="linear",
        target_entropy_end=0.25,
        target_schedule_steps=3,
    )
    fresh_state.begin_step()
    waiting = control(0.01, s, math.nan)  # no Ĥ yet: no H* either
    assert waiting.skipped and math.isnan(waiting.target) and fresh_state.initial_entropy is None
    first = control(0.01, s, 2.0)  # Ĥ_0 = 2: H* = 0.5·2, and Ĥ is above it
    assert fresh_state.initial_entropy == 2.0 and first.target == 1.0 and first.share < 0.01
    fresh_state.begin_step()
    assert control(0.01, s, 0.5).target == 0.75  # later Ĥ leave Ĥ_0 alone; step 2: (0.5 + 0.25)/2 · 2
    fresh_state.begin_step()
    assert control(0.01, s, 0.5).target == 0.5


@needs_engine
def test_the_integral_sums_the_error_never_goes_below_0_and_is_clamped(fresh_state):
    """I <- clip(I + e, 0, log φ_max/κ_I), not grown while φ is at φ_max; φ = exp(clip(κ·e + κ_I·I, −κ_max,
    log φ_max)), with φ_max = 1/ratio for a share alone."""
    s = settings(target_entropy=2.0, target_gain=4.0, target_integral_gain=0.5)
    c = control(0.01, s, 1.0)  # e = 0.5
    assert c.integral == fresh_state.integral == 0.5
    assert math.isclose(c.share, 0.01 * math.exp(4.0 * 0.5 + 0.5 * 0.5))
    c = control(0.01, s, 3.0)  # e = −0.5: back to 0
    assert c.integral == 0.0 and math.isclose(c.share, 0.01 * math.exp(-2.0))
    control(0.01, s, 3.0)  # above the target: I stays at 0, it does not store the excess
    assert fresh_state.integral == 0.0
    for _ in range(500):
        c = control(0.01, s, 0.0)  # e = 1: the share reaches 1 once κ·e + κ_I·I >= log(1/0.01)
    assert c.share == 1.0
    # The store stops where it stops being usable (one mini-batch past it at most), not at κ_max/κ_I = 100:
    assert 4.0 + 0.5 * fresh_state.integral < math.log(100) + 0.5
    # so the action falls on the first mini-batch back above the target, not after unwinding a large store
    c = control(0.01, s, 3.0)  # e = −0.5
    assert c.share < 0.01


@needs_engine
def test_with_an_adaptive_beta_phi_stops_where_beta_reaches_the_largest_accepted_value(fresh_state):
    """β' = β·φ <= MAX_KL_COEF: a long stretch below the target (κ = 20, κ_I = 1) cannot push β' to 1e21,
    where the gradient norm overflows in float32 and verl skips every update."""
    s = settings(target_entropy=1.0, target_gain=20.0, target_integral_gain=1.0, target_adapts_beta=True)
    for _ in range(300):
        c = control(2e-4, s, 0.0)
    assert c.share == 1.0 and c.beta == pytest.approx(MAX_KL_COEF)
    assert fresh_state.integral == 0.0  # κ·e = 20 alone is past log φ_max = log(1e6): nothing to store
    assert control(2e-4, s, 2.0).beta < 1.0  # e = −1, back above the target: β' falls at once


@needs_engine
@pytest.mark.parametrize("entropy", [math.nan, math.inf, -math.inf])
def test_a_non_finite_entropy_neither_winds_the_integral_nor_anchors_the_target(entropy, fresh_state):
    s = settings(target_entropy=0.5, target_relative=True, target_integral_gain=1.0)
    control(0.01, s, 1.0)
    before = fresh_state.to_dict()
    c = control(0.01, s, entropy)
    assert c.skipped and c.share == 0.01 and c.target == 0.5 and c.integral == before["integral"]
    assert fresh_state.to_dict() == before


@needs_engine
@pytest.mark.parametrize("integral_gain", [0.0, 1e-9, 0.2, 5.0, MAX_TARGET_GAIN])
@pytest.mark.parametrize("gain", [1e-3, 20.0, MAX_TARGET_GAIN])
def test_phi_stays_finite_and_within_its_bounds_with_any_accepted_integral_gain(gain, integral_gain):
    """Long runs far below and far above the target: φ within [e^-50, e^50], every value finite."""
    s = settings(target_entropy=1.0, target_gain=gain, target_integral_gain=integral_gain, target_adapts_beta=True)
    with run_state():
        for entropy in [0.0] * 300 + [20.0] * 300 + [0.5, 1e-9, 7.0] * 50:
            c = control(2e-4, s, entropy)
            phi = c.beta  # β = 1: β' = φ
            assert math.exp(-MAX_TARGET_GAIN) <= phi <= math.exp(MAX_TARGET_GAIN), (entropy, c)
            assert all(math.isfinite(v) for v in c[:4]) and math.isfinite(c.integral) and 0 < c.share <= 1


@needs_engine
def test_without_an_integral_gain_the_law_is_the_proportional_one_and_the_state_holds_no_integral(fresh_state):
    s = settings(target_entropy=2.0, target_gain=4.0)
    for entropy in (1.0, 0.2, 3.0):
        c = control(0.01, s, entropy)
        assert c.share == min(1.0, 0.01 * math.exp(4.0 * max(-1.0, min(1.0, (2.0 - entropy) / 2.0))))
    assert fresh_state.integral == 0.0


def test_the_state_round_trips_through_json():
    for state in (TargetState(), TargetState(7, 0.1 + 0.2, 2.718281828459045), TargetState(3, 1e-300, None)):
        assert TargetState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    for bad in (
        {"step": -1, "integral": 0.0, "initial_entropy": None},
        {"step": 1, "integral": "nan", "initial_entropy": 1.0},
    ):
        with pytest.raises(ValueError, match="not a verl-cov target state"):
            TargetState.from_dict(bad)


def test_run_state_gives_a_block_its_own_state_and_restores_the_previous_one(fresh_state):
    fresh_state.begin_step()
    with run_state() as inner:
        assert current_state() is inner and inner.step == 0
        inner.begin_step()
        inner.begin_step()
    assert current_state() is fresh_state and fresh_state.step == 1


@needs_engine
def test_control_metrics_log_the_target_in_force_its_error_and_the_integral(fresh_state):
    s = settings(target_entropy=2.0, target_schedule="linear", target_entropy_end=1.0, target_schedule_steps=3)
    fresh_state.begin_step()
    fresh_state.begin_step()  # step 2: H* = 1.5
    stats = MiniBatchStatistics(10, -1.2, 0.0, 1.2, control(0.01, s, 1.2), None, 1)
    metrics = control_metrics(s, stats, with_beta=True)
    assert metrics["actor/cov/target_entropy"] == 1.5
    assert math.isclose(metrics["actor/cov/target_error"], 1.2 - 1.5)
    assert metrics["actor/cov/target_skipped"] == 0.0 and "actor/cov/target_integral" not in metrics
    with_integral = settings(target_entropy=2.0, target_gain=1.0, target_integral_gain=0.1)
    stats = MiniBatchStatistics(10, -1.0, 0.0, 1.0, control(0.01, with_integral, 1.0), None, 1)
    assert control_metrics(with_integral, stats, with_beta=False)["actor/cov/target_integral"] == 0.5
    skipped = MiniBatchStatistics(0, 0.0, 0.0, math.nan, control(0.01, with_integral, math.nan), None, 1)
    metrics = control_metrics(with_integral, skipped, with_beta=False)
    assert metrics["actor/cov/target_error"] == 0.0 and metrics["actor/cov/target_skipped"] == 1.0
    assert all(math.isfinite(value) for value in metrics.values())
    assert not any(word in key for key in metrics for word in ("max", "min"))  # verl reduces those by name
