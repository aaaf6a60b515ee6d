"""Resolve a verl launch's full Hydra config and check it, without Ray, a GPU or a model.

Called by the recipes with ``DRY_RUN=1``: the same ``--config-path``/``--config-name``/overrides that
would go to ``python -m verl.trainer.main_ppo``. It composes verl's own config files, runs verl's
``validate_config`` (which builds the actor config with ``omega_conf_to_dataclass``, so every key and
value is checked, ours included), converts the algorithm config, and prints the resolved
policy-loss section.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import verl
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import omega_conf_to_dataclass, validate_config

VERL_CONFIG = Path(verl.__file__).parent / "trainer" / "config"


def split_args(argv: list[str]) -> tuple[Path, str, list[str]]:
    config_path, config_name, overrides = VERL_CONFIG, "ppo_trainer", []
    for arg in argv:
        if arg.startswith("--config-path="):
            config_path = Path(arg.split("=", 1)[1]).resolve()
        elif arg.startswith("--config-name="):
            config_name = arg.split("=", 1)[1]
        else:
            overrides.append(arg)
    return config_path, config_name, overrides


def root_cause(error: BaseException) -> BaseException:
    """The innermost cause: Hydra wraps a config class's ValueError in its own instantiation errors."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def check(argv: list[str]):
    """The composed, resolved config, after the checks ``main_ppo`` runs before Ray starts."""
    config_path, config_name, overrides = split_args(argv)
    with initialize_config_dir(config_dir=str(config_path), version_base=None):
        config = compose(config_name=config_name, overrides=overrides)
    OmegaConf.resolve(config)
    validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    omega_conf_to_dataclass(config.algorithm)
    return config, actor


def main(argv: list[str]) -> int:
    try:
        config, actor = check(argv)
    except Exception as error:  # one line, as main_ppo's own check would stop the launch
        cause = root_cause(error)
        print(f"resolve_config: error: {type(cause).__name__}: {cause}", file=sys.stderr)
        return 2
    print(f"# {config.trainer.experiment_name}: config resolved and validated")
    print(f"# actor policy_loss as {type(actor.policy_loss).__module__}.{type(actor.policy_loss).__name__}")
    print(f"# loggers {list(config.trainer.logger)}, file log {os.environ.get('VERL_FILE_LOGGER_PATH')}")
    print(
        OmegaConf.to_yaml(
            OmegaConf.create(
                {
                    "actor_rollout_ref": {
                        "actor": {
                            "policy_loss": {
                                k: v
                                for k, v in config.actor_rollout_ref.actor.policy_loss.items()
                                if k != "rollout_correction"
                            }
                        }
                    }
                }
            )
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
