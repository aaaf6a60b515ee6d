"""Every recipe resolves against verl's own config files and passes verl's checks (DRY_RUN=1)."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.version import Version
from verl_support import VERL

pytestmark = pytest.mark.skipif(VERL < Version("0.9"), reason="the recipes target verl 0.9.1's trainer config")

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SCRIPTS = sorted(RECIPES.glob("qwen2.5-*.sh"))
EXPECTED = {
    "grpo": ["loss_mode: verl_cov.vanilla"],
    "clip_cov": ["loss_mode: verl_cov.clip_cov", "clip_cov_ratio: 0.0002", "clip_cov_lb: 1.0", "clip_cov_ub: 5.0"],
    "kl_cov": ["loss_mode: verl_cov.kl_cov", "ppo_kl_coef: 1.0"],
}


def dry_run(script: Path, *overrides: str, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, "LOGGER": "tensorboard", **env}
    return subprocess.run(
        ["bash", str(script), *overrides], capture_output=True, text=True, env=environment, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def results():
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(SCRIPTS, pool.map(dry_run, SCRIPTS), strict=True))


def test_six_recipes():
    assert len(SCRIPTS) == 6


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_recipe_resolves_and_validates(script, results):
    result = results[script]
    assert result.returncode == 0, result.stderr[-3000:]
    method = script.stem.split("-")[-1]
    size = script.stem.split("-")[1]
    assert "config resolved and validated" in result.stdout
    assert "verl_cov.config.CovPolicyLossConfig" in result.stdout
    for line in EXPECTED[method]:
        assert line in result.stdout
    if method == "kl_cov":
        assert f"kl_cov_ratio: {0.002 if size == '7b' else 0.0002}" in result.stdout
    assert "'console', 'file', 'tensorboard'" in result.stdout
    assert f"{script.stem}.jsonl" in result.stdout


def test_a_stale_key_fails_the_dry_run():
    result = dry_run(SCRIPTS[0], "actor_rollout_ref.actor.not_a_key=1")
    assert result.returncode != 0 and "not_a_key" in result.stderr


def test_a_mistyped_loss_mode_fails_the_dry_run_naming_the_close_match():
    result = dry_run(SCRIPTS[0], "actor_rollout_ref.actor.policy_loss.loss_mode=verl-cov.kl_cov")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "loss_mode='verl-cov.kl_cov' is not a registered policy loss: did you mean verl_cov.kl_cov?" in result.stderr


def test_a_bad_value_fails_the_dry_run():
    result = dry_run(RECIPES / "qwen2.5-7b-kl_cov.sh", KL_COV_RATIO="0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("resolve_config: error:")]
    assert errors == [
        "resolve_config: error: ValueError: actor_rollout_ref.actor.policy_loss.kl_cov_ratio=0 is out of range: "
        "must be (0, 1]"
    ]
