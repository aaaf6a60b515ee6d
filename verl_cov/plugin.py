"""verl-cov's plugin: importing this module adds ``verl_cov.clip_cov``, ``verl_cov.kl_cov``,
``verl_cov.forking`` and ``verl_cov.vanilla`` to verl's policy-loss registry and (verl >= 0.8) wraps the
engine's ``train_batch`` for the mini-batch statistics of ``selection_scope=global`` and ``target_entropy``
and for the per-token entropy of the 80/20 rule.

verl imports it in every process: through the ``verl.plugins`` entry point on ``import verl``
(verl >= 0.9), or as ``actor_rollout_ref.model.external_lib=verl_cov.plugin`` in each worker (any
verl). verl swallows an entry point's import error at DEBUG level; ``register`` therefore logs its own
failure at WARNING before raising, so a broken install is visible in every worker's log.

Import order: every verl-cov module that needs verl imports it, and on verl >= 0.9 ``import verl`` imports
this plugin before it returns. So the plugin may run while another verl-cov module (say ``verl_cov.config``,
imported first by a user's script) is half-imported. It therefore imports nothing of verl-cov at module level
but the modes' names: it registers forwarders (``DeferredLoss``) that import ``verl_cov.losses`` on their first
call, and wraps verl's engine modules through ``verl_cov.engine_adapter`` only when verl imports them. Outside
such a nested import it imports both modules first, so a broken install fails here, loudly, and registers
nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import logging
import sys
from collections.abc import Callable
from types import ModuleType

from verl_cov.names import CLIP_COV, ENGINE_WORKERS_SINCE, FORKING, KL_COV, VANILLA

logger = logging.getLogger("verl_cov")

LOSSES = {
    CLIP_COV: "compute_policy_loss_clip_cov",
    KL_COV: "compute_policy_loss_kl_cov",
    FORKING: "compute_policy_loss_forking",
    VANILLA: "compute_policy_loss_vanilla_with_cov_metrics",
}
# verl's modules (verl >= 0.8) and the ``verl_cov.engine_adapter`` function that wraps each once it is imported
ENGINE_WRAPS = {
    "verl.workers.engine.base": "wrap_engine",
    "verl.workers.engine_workers": "wrap_training_worker",
}


def loss_function(name: str) -> Callable:
    """``verl_cov.losses.<name>``."""
    return getattr(importlib.import_module("verl_cov.losses"), name)


class DeferredLoss:
    """``verl_cov.losses.<name>``, imported on the first call; it carries that function's name and pickles
    as that function."""

    def __init__(self, name: str) -> None:
        self.__module__, self.__name__, self.__qualname__ = "verl_cov.losses", name, name

    def __call__(self, *args, **kwargs):
        return loss_function(self.__name__)(*args, **kwargs)

    def __reduce__(self):
        return loss_function, (self.__name__,)


def register_once(name: str, loss_fn: Callable) -> None:
    """Add ``loss_fn`` to verl's policy-loss registry under ``name``; idempotent.

    Refuses to replace a different function already registered under ``name``, so verl's own
    modes (and anyone else's) are never overwritten.
    """
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    registered = POLICY_LOSS_REGISTRY.setdefault(name, loss_fn)
    if (registered.__module__, registered.__qualname__) != (loss_fn.__module__, loss_fn.__qualname__):
        raise RuntimeError(f"verl-cov: policy loss {name!r} is already registered by {registered.__module__}")


def wrap(name: str, module: ModuleType) -> None:
    getattr(importlib.import_module("verl_cov.engine_adapter"), ENGINE_WRAPS[name])(module)


class _WrapWhenImported(importlib.abc.MetaPathFinder):
    """Finds no module itself: when verl imports a module of ``ENGINE_WRAPS``, lets the path finder load it and
    wraps it right after, so loading the plugin never imports verl's engines itself (0.7 s and about
    800 modules, with a warning per missing backend, in every process). Leaves ``sys.meta_path`` once
    every module it waits for is wrapped."""

    def __init__(self, pending: set[str]) -> None:
        self.pending = pending

    def find_spec(self, name, path=None, target=None):
        if name not in self.pending:
            return None
        self.pending.discard(name)
        if not self.pending:
            with contextlib.suppress(ValueError):  # another thread's import got there first
                sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_and_wrap(module: ModuleType) -> None:
                exec_module(module)
                try:
                    wrap(name, module)
                except Exception:  # verl's own import goes on; a mode that needs the wrap says so when called
                    logger.warning("verl-cov: could not wrap verl's %s", name, exc_info=True)

            spec.loader.exec_module = exec_and_wrap
        return spec


def has_engine_workers() -> bool:
    """Whether verl trains through its engine workers' ``train_batch`` (``compat.HAS_ENGINE_TRAIN_BATCH``, which
    this module cannot import: it imports verl)."""
    import verl  # already in sys.modules: verl or its worker is what imports this plugin
    from packaging.version import Version

    return Version(verl.__version__) >= Version(ENGINE_WORKERS_SINCE)


def install_engine_wraps() -> None:
    """Wrap verl's ``BaseEngine.train_batch`` and ``TrainingWorker``'s step and checkpoint methods once per
    process (verl >= 0.8; idempotent): now for a module verl has loaded, else as soon as it is. The
    wrappers do nothing for a policy loss that asks for no statistics and has no target."""
    if not has_engine_workers():
        return
    pending = set()
    for name in ENGINE_WRAPS:
        if name in sys.modules:
            wrap(name, sys.modules[name])
        else:
            pending.add(name)
    if pending and not any(isinstance(finder, _WrapWhenImported) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WrapWhenImported(pending))


def importing_verl_cov() -> bool:
    """Whether another verl-cov module is half-imported (CPython marks a module's spec ``_initializing`` while
    its code runs): then verl-cov's modules cannot be imported until it finishes."""
    return any(
        getattr(getattr(module, "__spec__", None), "_initializing", False)
        for name, module in list(sys.modules.items())
        if name.startswith("verl_cov.") and name != __name__
    )


def register() -> None:
    """Register the modes (idempotent, never over another function's name) and install the engine wraps."""
    try:
        if not importing_verl_cov():  # import them now: a broken install fails here and registers nothing
            importlib.import_module("verl_cov.losses")
            if has_engine_workers():
                importlib.import_module("verl_cov.engine_adapter")
        install_engine_wraps()
        for name, function in LOSSES.items():
            register_once(name, DeferredLoss(function))
    except Exception:
        logger.warning("verl-cov: could not register its policy-loss modes with verl", exc_info=True)
        raise


register()
