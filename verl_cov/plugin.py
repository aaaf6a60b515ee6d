"""verl-cov's plugin: importing this module adds ``verl_cov.clip_cov``, ``verl_cov.kl_cov``,
``verl_cov.forking`` and ``verl_cov.vanilla`` to verl's policy-loss registry and (verl >= 0.8) wraps the
engine's ``train_batch`` for the mini-batch statistics of ``selection_scope=global`` and ``target_entropy``
and for the per-token entropy of the 80/20 rule.

verl imports it in every process: through the ``verl.plugins`` entry point on ``import verl``
(verl >= 0.9), or as ``actor_rollout_ref.model.external_lib=verl_cov.plugin`` in each worker (any
verl). verl swallows an entry point's import error at DEBUG level; ``register`` therefore logs its own
failure at WARNING before raising, so a broken install is visible in every worker's log.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("verl_cov")


def register() -> None:
    """Register the modes (idempotent, never over another function's name) and install the engine hook."""
    try:
        from verl_cov import engine_adapter, losses
        from verl_cov.compat import register_once
        from verl_cov.config import CLIP_COV, FORKING, KL_COV, VANILLA

        register_once(CLIP_COV, losses.compute_policy_loss_clip_cov)
        register_once(KL_COV, losses.compute_policy_loss_kl_cov)
        register_once(FORKING, losses.compute_policy_loss_forking)
        register_once(VANILLA, losses.compute_policy_loss_vanilla_with_cov_metrics)
        engine_adapter.install()
    except Exception:
        logger.warning("verl-cov: could not register its policy-loss modes with verl", exc_info=True)
        raise


register()
