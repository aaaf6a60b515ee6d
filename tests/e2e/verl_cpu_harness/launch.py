"""A launch of verl's own trainer on CPU: its environment and Hydra overrides, and the launcher itself.

    python -m verl_cpu_harness.launch OUT_DIR [hydra overrides...]     (what scripts/e2e_cpu.sh runs)

builds the tiny model and data into ``OUT_DIR/assets`` (once), then replaces itself with
``python -m verl.trainer.main_ppo`` whose file logger writes ``OUT_DIR/metrics.jsonl``. ``STEPS`` (3)
and ``GPUS`` (1: fake accelerators, one actor worker process each) come from the environment.
The overrides fall in two parts: ``cpu_overrides`` make any verl launch run on this machine (the
recipes' test appends them to a recipe), ``task_overrides`` describe the tiny run.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

from packaging.version import Version

HARNESS_ROOT = Path(__file__).resolve().parents[1]  # tests/e2e, put on PYTHONPATH
REWARD_FILE = Path(__file__).resolve().parent / "reward.py"


def verl_version() -> Version:
    return Version(importlib.metadata.version("verl"))


def environment(out: Path) -> dict[str, str]:
    """Variables every process of the launch needs (Ray workers inherit them from the driver)."""
    path = os.environ.get("PYTHONPATH")
    return {
        "PYTHONPATH": f"{HARNESS_ROOT}{os.pathsep}{path}" if path else str(HARNESS_ROOT),
        "VERL_USE_EXTERNAL_MODULES": "verl_cpu_harness.install",
        "VERL_FILE_LOGGER_PATH": str(out / "metrics.jsonl"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_DEDUP_LOGS": "0",
        "HYDRA_FULL_ERROR": "1",
    }


def cpu_overrides(gpus: int = 1) -> list[str]:
    """What puts a verl launch on CPU: FSDP2 on host memory, the ``hf_cpu`` rollout, SDPA attention, one
    agent-loop and one reward worker, and Ray told of ``gpus`` fake GPUs and enough CPUs for verl's bundles."""
    overrides = [
        "trainer.device=cpu",
        f"trainer.n_gpus_per_node={gpus}",
        "trainer.nnodes=1",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.ref.strategy=fsdp2",
        "actor_rollout_ref.model.use_remove_padding=False",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        "actor_rollout_ref.rollout.name=hf_cpu",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "reward.num_workers=1",
        f"+ray_kwargs.ray_init.num_gpus={gpus}",
        "ray_kwargs.ray_init.num_cpus=16",
        "+ray_kwargs.ray_init.include_dashboard=False",
    ]
    if verl_version() < Version("0.9"):
        overrides.append("+ray_kwargs.ray_init.resources={cpu:1}")  # the legacy workers ask for it
    else:
        overrides.append("transfer_queue.backend.SimpleStorage.num_data_storage_units=1")  # v1 trainer
    return overrides


def task_overrides(out: Path, steps: int) -> list[str]:
    """The tiny run: GRPO on "x+y=", 8 prompts x 4 responses per step in 2 mini-batches, 3 steps."""
    assets = out / "assets"
    overrides = [
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=False",
        f"data.train_files={assets / 'data' / 'train.parquet'}",
        f"data.val_files={assets / 'data' / 'val.parquet'}",
        "data.train_batch_size=8",
        "data.max_prompt_length=16",
        "data.max_response_length=4",
        "data.dataloader_num_workers=0",
        f"actor_rollout_ref.model.path={assets / 'model'}",
        "actor_rollout_ref.actor.optim.lr=1e-2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.actor.entropy_coeff=0",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        f"reward.custom_reward_function.path={REWARD_FILE}",
        "reward.custom_reward_function.name=compute_score",
        "trainer.logger=[console,file]",
        "trainer.project_name=verl-cov-e2e",
        "trainer.experiment_name=cpu",
        f"trainer.total_training_steps={steps}",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        f"trainer.default_local_dir={out / 'checkpoints'}",
    ]
    if verl_version() >= Version("0.9"):
        # The v0 trainer (the v1 trainer runs too, in the recipes' test); stable request ids, so the
        # hf_cpu rollout samples the same responses after a checkpoint resume.
        overrides += ["trainer.use_v1=False", "actor_rollout_ref.rollout.full_determinism=True"]
    return overrides


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m verl_cpu_harness.launch OUT_DIR [hydra overrides...]")
    out = Path(argv[0]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "assets" / "model" / "config.json").exists():
        from verl_cpu_harness import assets

        assets.build(out / "assets")
    (out / "metrics.jsonl").unlink(missing_ok=True)
    gpus, steps = int(os.environ.get("GPUS", "1")), int(os.environ.get("STEPS", "3"))
    command = [sys.executable, "-m", "verl.trainer.main_ppo", *cpu_overrides(gpus), *task_overrides(out, steps)]
    os.chdir(out)
    os.execve(sys.executable, [*command, *argv[1:]], {**os.environ, **environment(out)})


if __name__ == "__main__":
    main(sys.argv[1:])
