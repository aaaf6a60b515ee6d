"""contrib/: the verl patch series on a pristine copy of the installed verl 0.9.1 (it applies in order, its
own tests and this project's reference checks pass on the patched built-ins), and the verl-recipe folder
(every script resolves with DRY_RUN on stock verl and passes verl's own config checks)."""

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from filecmp import cmp
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from packaging.version import Version
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import omega_conf_to_dataclass, validate_config
from verl_patch_series import INSTALLED, PATCHES, apply_series, patched_files
from verl_support import VERL

pytestmark = pytest.mark.skipif(VERL != Version("0.9.1"), reason="the series and the recipe target verl 0.9.1")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "contrib" / "verl-recipe" / "entropy_cov"
SCRIPTS = sorted(RECIPE.glob("run_*.sh"))
STOCK = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "none"}  # verl alone: no verl-cov plugin in the run


@pytest.fixture(scope="module")
def patched_verl(tmp_path_factory) -> Path:
    return apply_series(tmp_path_factory.mktemp("verl-patched"))


def test_the_series_is_four_patches_in_verls_pr_style():
    assert [p.name[:4] for p in PATCHES] == ["0001", "0002", "0003", "0004"]
    for number, patch in enumerate(PATCHES, start=1):
        text = patch.read_text()
        subject = re.search(r"^Subject: (.+(?:\n .+)*)", text, flags=re.MULTILINE).group(1).replace("\n", "")
        assert re.match(rf"\[PATCH {number}/4\] \[[a-z_, ]+\] (feat|fix|refactor|chore|test): \S", subject), subject
        message = text.split("\n\n", 1)[1].split("\n---\n", 1)[0]
        assert len(message.split()) > 40, f"{patch.name}: the message must say what changes and why"
        changed = [line for line in text.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        assert len(changed) < 600, f"{patch.name} is too large to review"


def test_the_series_changes_exactly_the_files_it_names(patched_verl):
    named = {f for patch in PATCHES for f in patched_files(patch) if not f.startswith("docs/")}
    changed = {
        f"verl/{path.relative_to(INSTALLED)}"
        for path in INSTALLED.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
        if not cmp(path, patched_verl / "verl" / path.relative_to(INSTALLED), shallow=False)
    }
    added = {str(p.relative_to(patched_verl)) for p in (patched_verl / "tests").rglob("*.py")}
    assert changed | added == named
    assert "verl/trainer/ppo/core_algos.py" in changed and "verl/workers/config/actor.py" in changed


def test_the_patches_own_tests_pass_on_the_patched_tree(patched_verl):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/trainer/ppo/"],
        cwd=patched_verl,
        env={**STOCK, "PYTHONPATH": str(patched_verl)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b[5-9] passed|\b\d\d+ passed", result.stdout), result.stdout[-1000:]


def test_this_projects_reference_checks_pass_against_the_patched_builtins(patched_verl):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/builtin_reference_checks.py"],
        cwd=ROOT,
        env={
            **STOCK,
            "PYTHONPATH": os.pathsep.join([str(patched_verl), str(ROOT / "tests")]),
            "VERL_COV_PATCHED_VERL": str(patched_verl),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " failed" not in result.stdout and " skipped" not in result.stdout


def dry_run(script: Path, *overrides: str, home: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), *overrides],
        env={**STOCK, "DRY_RUN": "1", "PYTHON": sys.executable, "HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict[str, OmegaConf]:
    home = tmp_path_factory.mktemp("home")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(SCRIPTS, pool.map(lambda s: dry_run(s, home=home), SCRIPTS), strict=True))
    for script, result in results.items():
        assert result.returncode == 0, f"{script.name}:\n{result.stderr[-3000:]}"
    overlay = subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={RECIPE / 'config'}"]
        + ["--config-name=entropy_cov_trainer", "--cfg", "job", "--resolve"],
        env={**STOCK, "HOME": str(home)},
        capture_output=True,
        text=True,
        check=True,
    )
    return {"overlay": OmegaConf.create(overlay.stdout)} | {
        s.stem: OmegaConf.create(r.stdout) for s, r in results.items()
    }


PAPER = {  # run: (loss_mode, policy-loss keys, clip ratio, tokens per GPU), from the paper's recipe/entropy
    "run_qwen2_5_7b_grpo_fsdp": ("vanilla", {}, 0.2, 30720),
    "run_qwen2_5_7b_clip_cov_fsdp": (
        "clip_cov",
        {"clip_cov_ratio": 2e-4, "clip_cov_lb": 1.0, "clip_cov_ub": 5.0},
        1.0,
        30720,
    ),
    "run_qwen2_5_7b_kl_cov_fsdp": ("kl_cov", {"kl_cov_ratio": 2e-3, "ppo_kl_coef": 1.0}, 0.2, 30720),
    "run_qwen2_5_32b_clip_cov_fsdp": (
        "clip_cov",
        {"clip_cov_ratio": 2e-4, "clip_cov_lb": 1.0, "clip_cov_ub": 5.0},
        1.0,
        20480,
    ),
    "run_qwen2_5_32b_kl_cov_fsdp": ("kl_cov", {"kl_cov_ratio": 2e-4, "ppo_kl_coef": 1.0}, 0.2, 20480),
}


def test_five_recipe_scripts():
    assert sorted(s.stem for s in SCRIPTS) == sorted(PAPER)


@pytest.mark.filterwarnings("ignore:Disabled critic")
@pytest.mark.parametrize("run", sorted(PAPER))
def test_a_recipe_script_resolves_on_stock_verl_with_the_papers_settings(run, resolved):
    config = resolved[run]
    validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    loss_mode, keys, clip_ratio, tokens = PAPER[run]
    assert actor.policy_loss.loss_mode == loss_mode
    for key, value in keys.items():
        assert getattr(actor.policy_loss, key) == pytest.approx(value), key
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_c) == (clip_ratio, clip_ratio, 10.0)
    assert actor.ppo_max_token_len_per_gpu == tokens == config.actor_rollout_ref.rollout.max_num_batched_tokens
    assert actor.optim.lr == 1e-6 and actor.ppo_mini_batch_size == 32
    assert config.reward.reward_manager.name == "dapo"
    assert config.algorithm.filter_groups.enable and config.algorithm.filter_groups.metric == "acc"


def flat(tree, prefix="") -> dict:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


ACTOR = "actor_rollout_ref.actor"
PER_RUN = {  # the keys a run may set differently from the overlay (its defaults: KL-Cov on Qwen2.5-7B)
    f"{ACTOR}.policy_loss.loss_mode",
    f"{ACTOR}.policy_loss.kl_cov_ratio",
    f"{ACTOR}.policy_loss.ppo_kl_coef",  # the scripts of other modes leave verl's default, unread
    f"{ACTOR}.clip_ratio_low",
    f"{ACTOR}.clip_ratio_high",
    f"{ACTOR}.ppo_max_token_len_per_gpu",
    "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu",
    "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu",
    "actor_rollout_ref.rollout.max_num_batched_tokens",
    "actor_rollout_ref.model.path",
    "actor_rollout_ref.rollout.prometheus.served_model_name",  # ${model.path}
    "trainer.experiment_name",
    "actor_rollout_ref.rollout.trace.experiment_name",  # ${trainer.experiment_name}
    "trainer.default_local_dir",
}


@pytest.mark.parametrize("run", sorted(PAPER))
def test_the_config_overlay_holds_the_scripts_shared_settings(run, resolved):
    overlay, script = (
        flat(OmegaConf.to_container(resolved[name], throw_on_missing=False)) for name in ("overlay", run)
    )
    assert overlay.keys() == script.keys()
    differing = {key for key in script if script[key] != overlay[key]}
    assert differing <= PER_RUN, sorted(differing - PER_RUN)
    if run == "run_qwen2_5_7b_kl_cov_fsdp":
        assert differing == set()


def test_the_selection_seed_needs_the_patch_series(patched_verl, tmp_path):
    script = RECIPE / "run_qwen2_5_7b_kl_cov_fsdp.sh"
    seed = "actor_rollout_ref.actor.policy_loss.seed=7"
    stock = dry_run(script, seed, home=tmp_path)
    assert stock.returncode != 0 and "seed" in stock.stderr
    patched = dry_run(script, seed, home=tmp_path, PYTHONPATH=str(patched_verl))
    assert patched.returncode == 0, patched.stderr[-2000:]
    assert OmegaConf.create(patched.stdout).actor_rollout_ref.actor.policy_loss.seed == 7


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_a_recipe_script_is_self_contained_with_an_upper_case_user_block(script):
    text = script.read_text()
    assert not re.search(r"^\s*(source|\.)\s", text, flags=re.MULTILINE), "sources another file"
    assert "dirname" not in text and "BASH_SOURCE" not in text, "reads files next to itself"
    block = text.split("USER-ADJUSTABLE", 1)[1].split("\n# ====", 1)[0].strip("= \n").splitlines()
    user = [re.fullmatch(r"([A-Z_]+)=\$\{\1:-.+\}", line) for line in block]
    assert block and all(user), block
    defined = {match.group(1) for match in user}
    used = set(re.findall(r"\$\{([A-Z_]+)\}", text.split("# ====", 2)[2])) - {"HOME"}
    assert used <= defined, sorted(used - defined)
