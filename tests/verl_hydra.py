"""Compose verl's real Hydra config the way ``verl.trainer.main_ppo`` does, with a user's overrides."""

from pathlib import Path

import verl
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from verl.utils.config import omega_conf_to_dataclass

VERL_CONFIG_DIR = Path(verl.__file__).parent / "trainer" / "config"
OVERLAY_DIR = Path(__file__).resolve().parents[1] / "verl_cov" / "hydra_config"


# Every real launch sets a micro-batch size; verl's ActorConfig refuses to build without one.
MICRO_BATCH = "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"


def compose_trainer(overrides: list[str], overlay: bool = False) -> DictConfig:
    config_dir, name = (OVERLAY_DIR, "verl_cov_trainer") if overlay else (VERL_CONFIG_DIR, "ppo_trainer")
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(config_name=name, overrides=[MICRO_BATCH, *overrides])


def build_actor(overrides: list[str], overlay: bool = False):
    """The actor dataclass the driver's ``validate_config`` and each worker build."""
    return omega_conf_to_dataclass(compose_trainer(overrides, overlay).actor_rollout_ref.actor)
