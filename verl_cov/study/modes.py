"""The three runs of the study and how the paper's hyper-parameters are scaled to the toy.

Each mode is the Hydra overrides a verl user types, applied to verl's own ``ppo_trainer`` config and
turned into verl's ``ActorConfig`` by verl's ``omega_conf_to_dataclass`` — the object verl's FSDP actor
hands to ``ppo_loss``.

Scaling (stated, the same for both methods, nothing tuned per mode): the paper selects a share of the
tokens of mini-batches of ~10^5–10^6 tokens; a toy mini-batch holds N_mb = 512 tokens (64 responses of
8 tokens; the pair task: 64 of 2, 128 tokens), where the paper's shares (r = 2e-4, k = 2e-3) select
nothing on average. Both shares are multiplied by one factor, set by how many tokens Clip-Cov cuts per
mini-batch in expectation, r·N_mb = ``CLIP_COV_CUTS`` of the task, keeping the paper's 7B ratio k/r = 10.
Forking task: 32 cuts, four per group of 8 responses (r = 0.0625, k = 0.625, 312.5× the paper's shares),
set by where KL-Cov's top k must reach: in a rewarded response (A > Ā) each of the 6 fixed format tokens
(log π ≈ 0) has Cov = −μ·(A − Ā), above the response's own decisions' (log π − μ)·(A − Ā), μ the mini-batch's
mean log π; so the top k reaches a rewarded decision, whose sharpening drives the collapse, only past the
format tokens of every response with at least its advantage and the failed decisions that outrank them (a
rewarded decision with log π < μ has Cov < 0 and ranks below every token with Cov > 0). The verifier accepts half
the correct answers, so about half of the 64 responses at most are rewarded: their format tokens take up to
about 192 places. At 16 cuts (k = 0.31, 160 tokens, the previous design) those and the failed decisions
filled the share, and KL-Cov's entropy fell as soon as it learned; 32 cuts (320 tokens) leave room past them.
One cut per mini-batch (the first version's factor) acts on almost nothing that trains there: the band ω
holds mostly rewarded responses' format tokens, whose logits are fixed. Pair task: one cut per mini-batch
(r = 0.0078, k = 0.078). Everything else is the paper's: ω = [1, 5], β = 1, clip ratio 1 for Clip-Cov,
no ratio clip for KL-Cov, clip 0.2 for the GRPO baseline, temperature 1, GRPO advantages, token-mean
aggregation, several mini-batches per rollout batch.
"""

from __future__ import annotations

from pathlib import Path

import verl
from hydra import compose, initialize_config_dir
from verl.utils.config import omega_conf_to_dataclass

from verl_cov import plugin  # noqa: F401  registers the modes, as verl's entry point does in a worker
from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH

PAPER_CLIP_COV_RATIO = 2e-4
PAPER_KL_COV_RATIO = 2e-3  # Qwen2.5-7B


CLIP_COV_CUTS = {"forking": 32, "pair": 1}  # tokens Clip-Cov cuts per mini-batch in expectation, per task


def token_scale(tokens_per_mini_batch: int, task: str = "forking") -> float:
    """The factor on the paper's shares at which Clip-Cov cuts ``CLIP_COV_CUTS[task]`` tokens per mini-batch
    in expectation (KL-Cov's share, ten times Clip-Cov's, is a share only from 320 tokens per mini-batch of
    the forking task: below, KL-Cov's config refuses it, naming ``kl_cov_ratio`` and its range)."""
    return CLIP_COV_CUTS[task] / (PAPER_CLIP_COV_RATIO * tokens_per_mini_batch)


POLICY_LOSS = "actor_rollout_ref.actor.policy_loss"
ACTOR = "actor_rollout_ref.actor"

PAPER_MODES = ("grpo", "clip_cov", "kl_cov")
TARGET_MODES = ("clip_cov_target", "kl_cov_target")  # beyond the paper: the same methods holding H*
# Since the paper, side by side: DAPO's clip-higher (verl's own keys), the 80/20 rule (Wang et al. 2025) and
# a scheduled target with an integral term (closed-loop entropy control, after EntroPIC / AER).
FIELD_MODES = ("clip_higher", "forking", "kl_cov_scheduled")
ENGINE_MODES = (*TARGET_MODES, "forking", "kl_cov_scheduled")  # verl >= 0.8: mini-batch statistics, entropy
MODE_NAMES = tuple(
    mode for mode in PAPER_MODES + TARGET_MODES + FIELD_MODES if HAS_ENGINE_TRAIN_BATCH or mode not in ENGINE_MODES
)
CLIP_HIGHER = 0.28  # DAPO's ε_high (ε_low stays 0.2)
UNSEEDED = ("grpo", "clip_higher", "forking")

# The entropy target of the *_target runs (one value for both methods), per task: about half the
# initial entropy per token and several times where GRPO ends (forking: 0.52-0.54 -> ~0.02 nats; pair:
# 2.6 -> ~0.2); the controller's default gain κ = 20. KL-Cov adapts β too: its share alone saturates
# (every token penalised) without holding the entropy.
TARGET_ENTROPY = {"forking": 0.27, "pair": 1.0}
# kl_cov_scheduled: H* anchored to the run's first measured entropy Ĥ_0, from 0.8·Ĥ_0 at step 1 down to 0.5·Ĥ_0
# at the last step on a cosine (forking task: about 0.43 -> 0.27 nats), with the integral term (κ_I = 0.2) so
# the entropy settles at H*, not below it; one setting for every task and seed.
SCHEDULE = {"start": 0.8, "end": 0.5, "integral_gain": 0.2}


def mode_overrides(mode: str, scale: float, task: str = "forking", steps: int = 300) -> list[str]:
    """The command-line overrides of one run; ``scale`` multiplies the paper's token shares, ``steps`` is the
    run's length (the scheduled target's range)."""
    if mode == "kl_cov_scheduled":
        return [
            *mode_overrides("kl_cov", scale),
            f"+{POLICY_LOSS}.target_entropy={SCHEDULE['start']}",
            f"+{POLICY_LOSS}.target_entropy_end={SCHEDULE['end']}",
            f"+{POLICY_LOSS}.target_schedule=cosine",
            f"+{POLICY_LOSS}.target_schedule_steps={max(2, steps)}",
            f"+{POLICY_LOSS}.target_relative=true",
            f"+{POLICY_LOSS}.target_integral_gain={SCHEDULE['integral_gain']}",
            f"+{POLICY_LOSS}.target_adapts_beta=true",
        ]
    if mode in TARGET_MODES:
        method = mode.removesuffix("_target")
        return [
            *mode_overrides(method, scale),
            f"+{POLICY_LOSS}.target_entropy={TARGET_ENTROPY[task]}",
            *([f"+{POLICY_LOSS}.target_adapts_beta=true"] if method == "kl_cov" else []),
        ]
    return {
        "grpo": [f"{POLICY_LOSS}.loss_mode=verl_cov.vanilla", f"{ACTOR}.clip_ratio=0.2"],
        "clip_higher": [
            f"{POLICY_LOSS}.loss_mode=verl_cov.vanilla",
            f"{ACTOR}.clip_ratio_low=0.2",
            f"{ACTOR}.clip_ratio_high={CLIP_HIGHER}",
        ],
        # ρ = 0.2, the paper's; GRPO's clip 0.2, so the mask is the only change from the baseline
        "forking": [f"{POLICY_LOSS}.loss_mode=verl_cov.forking", f"{ACTOR}.clip_ratio=0.2"],
        "clip_cov": [
            f"{POLICY_LOSS}.loss_mode=verl_cov.clip_cov",
            f"{POLICY_LOSS}.clip_cov_ratio={PAPER_CLIP_COV_RATIO * scale}",
            f"{POLICY_LOSS}.clip_cov_lb=1.0",
            f"{POLICY_LOSS}.clip_cov_ub=5.0",
            f"{ACTOR}.clip_ratio_low=1.0",
            f"{ACTOR}.clip_ratio_high=1.0",
        ],
        "kl_cov": [
            f"{POLICY_LOSS}.loss_mode=verl_cov.kl_cov",
            f"{POLICY_LOSS}.kl_cov_ratio={PAPER_KL_COV_RATIO * scale}",
            f"{POLICY_LOSS}.ppo_kl_coef=1.0",
        ],
    }[mode]


def actor_config(
    mode: str,
    seed: int,
    mini_batch_responses: int,
    samples_per_prompt: int,
    response_len: int,
    task: str = "forking",
    steps: int = 300,
):
    """verl's ActorConfig for ``mode``, composed from verl's own config files plus the mode's overrides."""
    scale = token_scale(mini_batch_responses * response_len, task)
    overrides = [
        f"{POLICY_LOSS}._target_=verl_cov.config.CovPolicyLossConfig",
        *([f"+{POLICY_LOSS}.seed={seed}"] if mode not in UNSEEDED else []),  # they draw nothing at random
        f"{ACTOR}.ppo_mini_batch_size={mini_batch_responses // samples_per_prompt}",
        f"{ACTOR}.ppo_micro_batch_size_per_gpu={mini_batch_responses}",
        f"actor_rollout_ref.rollout.n={samples_per_prompt}",
        f"{ACTOR}.loss_agg_mode=token-mean",
        f"{ACTOR}.entropy_coeff=0",
        f"{ACTOR}.use_kl_loss=false",
        *mode_overrides(mode, scale, task, steps),
    ]
    config_dir = Path(verl.__file__).parent / "trainer" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        config = compose(config_name="ppo_trainer", overrides=overrides)
    return omega_conf_to_dataclass(config.actor_rollout_ref.actor)
