"""Registers the verl-cov modes in verl's policy-loss registry.

verl imports the ``verl.plugins`` entry point (verl >= 0.9) or ``actor_rollout_ref.model.external_lib``
in every process, and swallows an entry point's import error at DEBUG level; ``register`` therefore
logs its own failure at WARNING before raising, so a broken install is visible in every worker's log.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("verl_cov")


def register() -> None:
    """Add ``verl_cov.clip_cov``, ``verl_cov.kl_cov`` and ``verl_cov.vanilla`` to verl's registry (idempotent)."""
    try:
        from verl_cov import losses
        from verl_cov.compat import register_once
        from verl_cov.config import CLIP_COV, KL_COV, VANILLA

        register_once(CLIP_COV, losses.compute_policy_loss_clip_cov)
        register_once(KL_COV, losses.compute_policy_loss_kl_cov)
        register_once(VANILLA, losses.compute_policy_loss_vanilla_with_cov_metrics)
    except Exception:
        logger.warning("verl-cov: could not register its policy-loss modes with verl", exc_info=True)
        raise
