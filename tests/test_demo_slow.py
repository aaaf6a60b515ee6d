"""The default CPU study on three seeds: the effect the demo is meant to show (marked slow, not in CI)."""

import json

import numpy as np
import pytest
from verl_support import HAS_ENGINE_LOSS

if not HAS_ENGINE_LOSS:
    pytest.skip("the CPU study drives verl's engine ppo_loss (verl >= 0.7)", allow_module_level=True)

from verl_cov.study.rl import RunConfig  # noqa: E402
from verl_cov.study.runs import run_study  # noqa: E402

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    results = {seed: run_study(root / f"seed{seed}", RunConfig(seed=seed), progress=False) for seed in SEEDS}
    print(json.dumps({seed: r["modes"] for seed, r in results.items()}, indent=1))
    return results


def mean(studies, mode, key):
    return float(np.mean([studies[seed]["modes"][mode][key] for seed in SEEDS]))


@pytest.mark.slow
def test_grpo_entropy_collapses(studies):
    initial = float(np.log(14))  # a random-init policy is near-uniform over the 14 tokens
    assert mean(studies, "grpo", "final_entropy") < 0.15 * initial


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["clip_cov", "kl_cov"])
def test_covariance_methods_keep_more_entropy_without_losing_pass_at_k(studies, mode):
    assert mean(studies, mode, "final_entropy") > 1.2 * mean(studies, "grpo", "final_entropy")
    assert mean(studies, mode, "final_pass@8") >= mean(studies, "grpo", "final_pass@8") - 0.05


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["grpo", "clip_cov", "kl_cov"])
def test_the_law_fits(studies, mode):
    assert mean(studies, mode, "r2") > 0.5
    assert all(studies[seed]["modes"][mode]["a"] > 0 for seed in SEEDS)  # R falls as H rises


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["clip_cov_target", "kl_cov_target"])
def test_entropy_target_holds_a_band_where_fixed_shares_drift(studies, mode):
    """Over the last third of the run the target modes stay near H* on every seed (measured within
    [0.5, 1.1]·H*, asserted with a little slack); the same method with a fixed share ends below H*/2."""
    from verl_cov.study.modes import TARGET_ENTROPY

    for seed in SEEDS:
        low, high = studies[seed]["modes"][mode]["entropy_last_third"]
        assert 0.45 * TARGET_ENTROPY <= low and high <= 1.15 * TARGET_ENTROPY, (seed, low, high)
    assert mean(studies, mode.removesuffix("_target"), "final_entropy") < 0.5 * TARGET_ENTROPY
