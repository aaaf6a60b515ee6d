"""contrib/: the verl patch series on a pristine copy of the installed verl 0.9.1 (it applies in order, its
own tests and this project's reference checks pass on the patched built-ins, OPT_IN.txt turns its selection
on), its PR description and #7829 comment, and the verl-recipe patches (deletions without content, every new
script resolves with DRY_RUN on stock verl and passes verl's own config checks)."""

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
from verl_patch_series import (
    CONTRIB,
    INSTALLED,
    PATCHES,
    RECIPE_PATCHES,
    apply_series,
    created_files,
    deleted_files,
    opt_in_overrides,
    patched_files,
    write_recipe,
)
from verl_support import VERL

pytestmark = pytest.mark.skipif(VERL != Version("0.9.1"), reason="the series and the recipe target verl 0.9.1")

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(Path(f).name for f in created_files(RECIPE_PATCHES[-1]) if re.fullmatch(r"entropy/run_\S+\.sh", f))
STOCK = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "none"}  # verl alone: no verl-cov plugin in the run
GPU_TEST = "tests/trainer/ppo/test_cov_selection_no_host_sync.py"


@pytest.fixture(scope="module")
def patched_verl(tmp_path_factory) -> Path:
    return apply_series(tmp_path_factory.mktemp("verl-patched"))


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    return write_recipe(tmp_path_factory.mktemp("verl-recipe"))


def subject(patch: Path) -> str:
    return re.search(r"^Subject: (.+(?:\n .+)*)", patch.read_text(), flags=re.MULTILINE).group(1).replace("\n", "")


def test_the_series_is_one_pr_of_two_patches_in_verls_style():
    assert [p.name[:4] for p in PATCHES] == ["0001", "0002"]
    for number, patch in enumerate(PATCHES, start=1):
        text = patch.read_text()
        assert re.match(rf"\[PATCH {number}/2\] \[algo\] (feat|fix): \S", subject(patch)), subject(patch)
        message = text.split("\n\n", 1)[1].split("\n---\n", 1)[0]
        assert len(message.split()) > 40, f"{patch.name}: the message must say what changes and why"
        assert "Co-authored-by: Claude" in message  # verl's AGENTS.md
        # A sign-off certifies the DCO for the human who sends the patch: they add their own, none is pre-filled.
        assert "Signed-off-by:" not in text, f"{patch.name} must not carry a pre-filled sign-off"
        changed = [line for line in text.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        assert len(changed) < 600, f"{patch.name} is too large to review"
    assert "base-commit: 1dda039b9c6311889a9c9a26040677e1254814f9" in PATCHES[0].read_text()  # newest main fetched
    tests_of = [{f for f in patched_files(p) if f.startswith("tests/")} for p in PATCHES]
    assert all(tests_of), "each patch carries its own tests"
    assert GPU_TEST in tests_of[0] and not GPU_TEST.endswith("_on_cpu.py")  # gpu_unit_tests.yml collects it


def test_the_pr_description_follows_verls_template():
    text = (CONTRIB / "verl" / "PR_DESCRIPTION.md").read_text()
    sections = ["### What does this PR do?", "### Checklist Before Starting", "### Test", "### API and Usage Example"]
    sections += ["### Design & Code Changes", "### Checklist Before Submitting"]
    assert [text.index(s) for s in sections] == sorted(text.index(s) for s in sections)
    title = re.search(r"^Title: `(.+)`", text, flags=re.MULTILINE).group(1)
    assert re.fullmatch(r"\[algo\] feat: .+", title)
    for needed in ("#7830", "pytest -q tests/trainer/ppo/test_cov_policy_losses_on_cpu.py", "passed", "AI assistance"):
        assert needed in text, needed
    assert "Opt-in" in text and "legacy" in text  # the choice and its reason


def test_the_7829_comment_is_a_ready_comment_not_a_docs_patch():
    text = (CONTRIB / "verl" / "issue-7829-comment.md").read_text()
    assert "#7830" in text and "bench_scope.py" in text and "recipe/dapo/7b_kl_cov.sh" not in text
    assert not any("docs/" in f for p in PATCHES for f in patched_files(p))


def test_the_readme_sends_each_piece_with_the_right_git_am_flags():
    text = (CONTRIB / "README.md").read_text()
    assert "git am --keep-non-patch" in text and not re.search(r"git am (-\w+ )*-k\b", text)
    for piece in ("PR_DESCRIPTION.md", "issue-7829-comment.md", "OPT_IN.txt", "apply_to_verl_recipe.sh"):
        assert piece in text, piece


def test_the_series_changes_exactly_the_files_it_names(patched_verl):
    named = {f for patch in PATCHES for f in patched_files(patch)}
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
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests/trainer/ppo/"],
        cwd=patched_verl,
        env={**STOCK, "PYTHONPATH": str(patched_verl), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b(19|[2-9]\d) passed", result.stdout), result.stdout[-1000:]
    skipped = re.findall(r"^SKIPPED \[\d+\] (\S+?):", result.stdout, flags=re.MULTILINE)
    assert skipped == [GPU_TEST], skipped  # only the GPU test, and only for want of a device


def test_this_projects_reference_checks_pass_against_the_patched_builtins(patched_verl):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/builtin_reference_checks.py"],
        cwd=ROOT,
        env={
            **STOCK,
            "PYTHONPATH": os.pathsep.join([str(patched_verl), str(ROOT / "tests")]),
            "VERL_COV_PATCHED_VERL": str(patched_verl),
            "OMP_NUM_THREADS": "1",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " failed" not in result.stdout and " skipped" not in result.stdout


def test_opt_in_is_hydra_overrides_that_turn_the_hashed_selection_on(patched_verl, recipe, tmp_path):
    overrides = opt_in_overrides()
    assert overrides == ["actor_rollout_ref.actor.policy_loss.cov_selection=hashed"]
    script = recipe / "run_qwen2_5_7b_kl_cov_fsdp.sh"
    seed = "actor_rollout_ref.actor.policy_loss.seed=7"
    stock = dry_run(script, *overrides, seed, home=tmp_path)
    assert stock.returncode != 0 and "cov_selection" in stock.stderr
    default = dry_run(script, home=tmp_path, PYTHONPATH=str(patched_verl))
    patched = dry_run(script, *overrides, seed, home=tmp_path, PYTHONPATH=str(patched_verl))
    assert default.returncode == 0 == patched.returncode, patched.stderr[-2000:]
    assert OmegaConf.create(default.stdout).actor_rollout_ref.actor.policy_loss.cov_selection == "legacy"
    policy_loss = OmegaConf.create(patched.stdout).actor_rollout_ref.actor.policy_loss
    assert (policy_loss.cov_selection, policy_loss.seed) == ("hashed", 7)


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
def resolved(recipe, tmp_path_factory) -> dict[str, OmegaConf]:
    home = tmp_path_factory.mktemp("home")
    scripts = [recipe / name for name in SCRIPTS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(scripts, pool.map(lambda s: dry_run(s, home=home), scripts), strict=True))
    for script, result in results.items():
        assert result.returncode == 0, f"{script.name}:\n{result.stderr[-3000:]}"
    overlay = subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={recipe / 'config'}"]
        + ["--config-name=entropy_trainer", "--cfg", "job", "--resolve"],
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
    assert sorted(Path(s).stem for s in SCRIPTS) == sorted(PAPER)


def test_no_patch_carries_a_pre_filled_sign_off():
    """A sign-off certifies the DCO for the human who sends a patch; the README has them add their own."""
    for patch in PATCHES + RECIPE_PATCHES:
        assert not re.search(r"^Signed-off-by:", patch.read_text(), flags=re.MULTILINE), patch.name
    readme = (CONTRIB / "README.md").read_text()
    assert "git rebase --signoff --exec 'git commit --amend --no-edit --reset-author'" in readme


def test_the_recipe_does_not_advertise_keys_its_pinned_verl_rejects():
    removal, addition = RECIPE_PATCHES
    assert "cov_selection" not in addition.read_text()


def test_the_recipe_patch_deletes_the_old_folder_without_content_and_adds_new_files():
    removal, addition = RECIPE_PATCHES
    deleted = deleted_files(removal)
    assert "entropy/main_entropy.py" in deleted and "entropy/7b_kl_cov.sh" in deleted
    assert deleted == patched_files(removal) and not created_files(removal)
    assert not re.search(r"^(@@|-[^-])", removal.read_text(), flags=re.MULTILINE), "format-patch -D: no old lines"
    assert created_files(addition) == patched_files(addition)  # only new files: nothing of verl-recipe's
    hunks = re.findall(r"^@@ .*", addition.read_text(), flags=re.MULTILINE)
    assert len(hunks) == len(created_files(addition)) and all(h.startswith("@@ -0,0 +1,") for h in hunks)
    for patch in RECIPE_PATCHES:
        assert re.match(r"\[PATCH \d/2\] \[recipe\] (feat|chore): entropy: ", subject(patch)), subject(patch)


KNOWN_MODES = {  # install_verl.sh's MODEs and the fields each reads for --method pip and git
    "rolling": ("VERL_COMMIT", "PIP_INSTALL"),
    "pinned_tag": ("TAG", "PIP_INSTALL"),
    "pinned_commit": ("COMMIT", "PIP_INSTALL"),
}


def test_required_verl_uses_a_mode_install_verl_accepts(recipe):
    fields = dict(line.split("=", 1) for line in (recipe / "REQUIRED_VERL.txt").read_text().splitlines() if "=" in line)
    assert fields["MODE"] == "pinned_tag" and fields["TAG"] == "v0.9.1" == f"v{VERL}"
    assert all(fields.get(key) for key in KNOWN_MODES[fields["MODE"]])
    assert fields["PIP_INSTALL"] == "pip install verl==0.9.1" and fields["RECIPE_FOLDER"] == "entropy"
    assert "--branch v0.9.1" in fields["GIT_SETUP"]  # --method git: install_verl.sh runs it, then pip install -e


def test_the_apply_script_builds_the_recipe_commits_on_a_verl_recipe_checkout(recipe, tmp_path):
    repo = tmp_path / "verl-recipe"
    for path in deleted_files(RECIPE_PATCHES[0]):  # stand-ins for the files verl-recipe holds today
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(f"old {path}\n")
    (repo / "README.md").write_text("other recipes\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)}
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "base"]):
        subprocess.run([*git, *command], cwd=repo, env=env, check=True)
    result = subprocess.run(
        ["bash", str(CONTRIB / "verl-recipe" / "apply_to_verl_recipe.sh"), str(repo)],
        env={**env, "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    log = subprocess.run(["git", "log", "--format=%s", "-3"], cwd=repo, env=env, capture_output=True, text=True)
    assert log.stdout.splitlines() == [subject(p).split("] ", 1)[1] for p in reversed(RECIPE_PATCHES)] + ["base"]
    now = {str(p.relative_to(repo)) for p in (repo / "entropy").rglob("*") if p.is_file()}
    assert now == set(created_files(RECIPE_PATCHES[-1]))
    assert all((repo / f).read_bytes() == (recipe.parent / f).read_bytes() for f in now)
    assert (repo / "README.md").read_text() == "other recipes\n"


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


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_recipe_script_is_self_contained_with_an_upper_case_user_block(script, recipe):
    text = (recipe / script).read_text()
    assert not re.search(r"^\s*(source|\.)\s", text, flags=re.MULTILINE), "sources another file"
    assert "dirname" not in text and "BASH_SOURCE" not in text, "reads files next to itself"
    block = text.split("USER-ADJUSTABLE", 1)[1].split("\n# ====", 1)[0].strip("= \n").splitlines()
    user = [re.fullmatch(r"([A-Z_]+)=\$\{\1:-.+\}", line) for line in block]
    assert block and all(user), block
    defined = {match.group(1) for match in user}
    used = set(re.findall(r"\$\{([A-Z_]+)\}", text.split("# ====", 2)[2])) - {"HOME"}
    assert used <= defined, sorted(used - defined)
