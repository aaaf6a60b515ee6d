"""CovPolicyLossConfig: built by verl's own Hydra config path, validated at build time."""

import re

import pytest
import torch
from conftest import random_batch
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config import FSDPActorConfig, PolicyLossConfig
from verl_hydra import build_actor

from verl_cov.config import CovPolicyLossConfig

PREFIX = "actor_rollout_ref.actor.policy_loss"
TARGET = f"{PREFIX}._target_=verl_cov.config.CovPolicyLossConfig"


def test_user_overrides_build_our_config():
    actor = build_actor([f"{PREFIX}.loss_mode=verl_cov.kl_cov", TARGET, f"{PREFIX}.kl_cov_ratio=0.002"])
    assert isinstance(actor, FSDPActorConfig)
    assert isinstance(actor.policy_loss, CovPolicyLossConfig)
    assert actor.policy_loss.kl_cov_ratio == 0.002
    assert actor.policy_loss.loss_mode == "verl_cov.kl_cov"


def test_overlay_sets_the_paper_defaults():
    actor = build_actor([f"{PREFIX}.loss_mode=verl_cov.clip_cov"], overlay=True)
    loss = actor.policy_loss
    assert isinstance(loss, CovPolicyLossConfig)
    assert (loss.clip_cov_ratio, loss.clip_cov_lb, loss.clip_cov_ub) == (2e-4, 1.0, 5.0)
    assert (loss.kl_cov_ratio, loss.ppo_kl_coef, loss.seed) == (2e-4, 1.0, 0)
    assert build_actor([f"{PREFIX}.seed=7"], overlay=True).policy_loss.seed == 7


def test_dataclass_defaults_are_the_papers():
    loss = CovPolicyLossConfig()
    assert (loss.clip_cov_ratio, loss.clip_cov_lb, loss.clip_cov_ub) == (2e-4, 1.0, 5.0)
    assert (loss.kl_cov_ratio, loss.ppo_kl_coef, loss.seed) == (2e-4, 1.0, 0)
    assert PolicyLossConfig().ppo_kl_coef != loss.ppo_kl_coef  # verl's own default differs (0.1)


BAD = [
    ("clip_cov_ratio", "0", "(0, 1]"),
    ("clip_cov_ratio", "1.5", "(0, 1]"),
    ("kl_cov_ratio", "-0.1", "(0, 1]"),
    ("kl_cov_ratio", "0", "(0, 1]"),
    ("clip_cov_lb", "5.0", "< clip_cov_ub"),
    ("ppo_kl_coef", "-1", "[0, 1e+06]"),
    ("ppo_kl_coef", "1e39", "[0, 1e+06]"),
    ("kl_cov_ratio", "nan", "finite number"),
    ("clip_cov_ratio", "abc", "finite number"),
    ("seed", "-3", "[0, 2**63)"),
    ("loss_mode", "verl_cov.klcov", "did you mean verl_cov.kl_cov"),
    ("loss_mode", "verl-cov.kl_cov", "did you mean verl_cov.kl_cov"),
    ("loss_mode", "VERL_COV.kl_cov", "did you mean verl_cov.kl_cov"),
    ("loss_mode", "bogus", "is not a registered policy loss"),
    ("selection_scope", "everywhere", "micro_batch, global"),
    ("target_entropy", "0", "> 0 nats"),
    ("target_entropy", "-1.5", "> 0 nats"),
    ("target_gain", "0", "(0, 50]"),
    ("target_gain", "75", "(0, 50]"),
    ("target_adapts_beta", "true", "needs target_entropy"),
]


NUMERIC_KEYS = ("clip_cov_ratio", "kl_cov_ratio", "clip_cov_lb", "ppo_kl_coef")


@pytest.mark.parametrize(
    "mode, key, value",
    [
        ("kl_cov", "target_entropy", "0.3"),
        ("kl_cov", "selection_scope", "global"),
        ("clip_cov", "seed", "3"),
        ("vanilla", "target_gain", "5"),
        ("verl_cov.vanilla", "seed", "3"),
        ("verl_cov.clip_cov", "target_adapts_beta", "true"),
    ],
)
def test_a_key_the_mode_would_ignore_is_refused(mode, key, value):
    """verl's built-ins (and verl_cov.vanilla) read none of verl-cov's own keys: refused, not ignored all run."""
    overrides = [f"{PREFIX}.loss_mode={mode}", f"{PREFIX}.{key}={value}"]
    if key == "target_adapts_beta":
        overrides.append(f"{PREFIX}.target_entropy=1.0")
    with pytest.raises(Exception, match=rf"{PREFIX}\.{key}=.*would ignore it|{PREFIX}\.{key}=.*has no β") as error:
        build_actor(overrides, overlay=True)
    assert mode in str(error.value) or "β" in str(error.value)


def test_the_defaults_pass_with_every_mode():
    for mode in ("vanilla", "kl_cov", "clip_cov", "verl_cov.vanilla", "verl_cov.kl_cov", "verl_cov.clip_cov"):
        assert build_actor([f"{PREFIX}.loss_mode={mode}"], overlay=True).policy_loss.loss_mode == mode


@pytest.mark.parametrize("key, value, allowed", BAD)
def test_bad_value_fails_at_config_build(key, value, allowed):
    with pytest.raises(Exception) as error:
        build_actor([f"{PREFIX}.{key}={value}"], overlay=True)
    message = str(error.value)
    assert f"{PREFIX}.{key}=" in message and allowed in message


@pytest.mark.parametrize("key, value, allowed", [bad for bad in BAD if bad[0] in NUMERIC_KEYS and bad[1] != "abc"])
def test_plain_verl_config_checks_the_same_ranges_on_first_use(key, value, allowed):
    """Without ``_target_`` (verl's PolicyLossConfig) the modes run and reject the same values when called."""
    policy_loss = PolicyLossConfig(loss_mode="verl_cov.kl_cov", **{key: float(value)})
    config = FSDPActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, policy_loss=policy_loss)
    for mode in ("verl_cov.clip_cov", "verl_cov.kl_cov"):
        with pytest.raises(ValueError, match=re.escape(allowed)):
            get_policy_loss_fn(mode)(*random_batch(), "token-mean", config)


def test_plain_verl_config_runs():
    config = FSDPActorConfig(
        strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, policy_loss=PolicyLossConfig(kl_cov_ratio=0.1)
    )
    loss, metrics = get_policy_loss_fn("verl_cov.kl_cov")(*random_batch(), "token-mean", config)
    assert torch.isfinite(loss) and metrics["actor/cov/selected_frac"] > 0


@pytest.mark.parametrize("key, value", [("selection_scope", "global"), ("target_entropy", "1.0")])
def test_extensions_refuse_what_they_cannot_serve(key, value):
    """vanilla selects no tokens; verl < 0.8 has no engine train_batch to compute mini-batch statistics."""
    from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH

    with pytest.raises(Exception, match=r"applies to verl_cov\.clip_cov(, | and )verl_cov\.kl_cov.* only"):
        build_actor([f"{PREFIX}.loss_mode=verl_cov.vanilla", f"{PREFIX}.{key}={value}"], overlay=True)
    overrides = [f"{PREFIX}.loss_mode=verl_cov.kl_cov", f"{PREFIX}.{key}={value}"]
    if HAS_ENGINE_TRAIN_BATCH:
        assert str(getattr(build_actor(overrides, overlay=True).policy_loss, key)) == value
    else:
        with pytest.raises(Exception, match=rf"{PREFIX}\.{key}=.*needs verl >= 0\.8"):
            build_actor(overrides, overlay=True)


# The entropy target's schedule and integral: each key with target_entropy set (the keys need it).
TARGET_BAD = [
    ("target_schedule", "exponential", "constant, linear, cosine"),
    ("target_entropy_end", "0", "> 0, or null"),
    ("target_entropy_end", "-2.0", "> 0, or null"),
    ("target_entropy_end", "inf", "finite number"),
    ("target_schedule_steps", "1", "an integer >= 2, or null"),
    ("target_schedule_steps", "2.5", "an integer >= 2, or null"),
    ("target_schedule_steps", "true", "an integer >= 2, or null"),
    ("target_relative", "3", "true or false"),
    ("target_integral_gain", "-0.1", "[0, 50]"),
    ("target_integral_gain", "60", "[0, 50]"),
    ("target_integral_gain", "nan", "finite number"),
]
SCHEDULED = [f"++{PREFIX}.target_schedule=linear", f"++{PREFIX}.target_entropy_end=1.0"]


@pytest.mark.parametrize("key, value, allowed", TARGET_BAD)
def test_a_bad_schedule_or_integral_value_fails_with_the_key_and_its_range(key, value, allowed):
    overrides = [f"{PREFIX}.target_entropy=2.0", f"++{PREFIX}.{key}={value}"]
    if key.startswith("target_schedule") or key == "target_entropy_end":  # the other schedule keys, valid
        overrides = [*SCHEDULED, f"++{PREFIX}.target_schedule_steps=10", *overrides]
    with pytest.raises(Exception) as error:
        build_actor(overrides, overlay=True)
    message = str(error.value)
    assert f"{PREFIX}.{key}=" in message, message
    assert "is out of range" in message and allowed in message, message


@pytest.mark.parametrize(
    "overrides, key, reason",
    [
        (
            [f"++{PREFIX}.target_schedule=cosine", f"++{PREFIX}.target_schedule_steps=5"],
            "target_entropy_end",
            "must be set with target_schedule=cosine",
        ),
        (
            [f"++{PREFIX}.target_schedule=linear", f"++{PREFIX}.target_entropy_end=1.0"],
            "target_schedule_steps",
            "must be set with target_schedule=linear",
        ),
        ([f"++{PREFIX}.target_entropy_end=1.0"], "target_entropy_end", "needs target_schedule=linear or cosine"),
        ([f"++{PREFIX}.target_schedule_steps=5"], "target_schedule_steps", "needs target_schedule=linear or cosine"),
    ],
)
def test_a_schedule_needs_its_end_and_step_and_only_a_moving_one_takes_them(overrides, key, reason):
    with pytest.raises(Exception, match=rf"{PREFIX}\.{key}=.*is out of range: {reason}"):
        build_actor([f"{PREFIX}.target_entropy=2.0", *overrides], overlay=True)


@pytest.mark.parametrize(
    "keys",
    [
        {"target_schedule": "linear", "target_entropy_end": "1.0", "target_schedule_steps": "5"},
        {"target_relative": "true"},
        {"target_integral_gain": "0.5"},
    ],
)
def test_schedule_and_integral_keys_need_a_target_and_a_mode_that_reads_them(keys):
    """Set without target_entropy (Clip-Cov, KL-Cov) or for a mode without a target (vanilla, forking,
    verl's own): refused with the (first) key named, never ignored all run; accepted with a target."""
    from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH

    key = next(iter(keys))
    overrides = [f"++{PREFIX}.{name}={value}" for name, value in keys.items()]
    for mode in ("verl_cov.vanilla", "kl_cov", "verl_cov.forking"):
        with pytest.raises(
            Exception, match=rf"{PREFIX}\.{key}=.*applies to verl_cov\.clip_cov and verl_cov\.kl_cov only"
        ):
            build_actor([f"{PREFIX}.loss_mode={mode}", *overrides], overlay=True)
    for mode in ("verl_cov.clip_cov", "verl_cov.kl_cov"):
        with pytest.raises(Exception, match=rf"{PREFIX}\.{key}=.*needs target_entropy to be set"):
            build_actor([f"{PREFIX}.loss_mode={mode}", *overrides], overlay=True)
        with_target = [f"{PREFIX}.loss_mode={mode}", f"{PREFIX}.target_entropy=2.0", *overrides]
        if not HAS_ENGINE_TRAIN_BATCH:  # refused as the target itself is
            with pytest.raises(Exception, match=rf"{PREFIX}\.target_entropy=2\.0 .*needs verl >= 0\.8"):
                build_actor(with_target, overlay=True)
            continue
        loss = build_actor(with_target, overlay=True).policy_loss
        assert {name: str(getattr(loss, name)).lower() for name in keys} == keys
