"""verl's engine adapter: runs each mini-batch of verl's engine workers inside ``verl_cov.scope.mini_batch``
(verl >= 0.8). With ``compat.py`` (versions, registry, aggregation) it is one of the two modules that touch
verl's internals; the three engine details it relies on are the three accessors below, so a verl change to
the engine touches them and nothing else.

verl trains one PPO mini-batch per ``BaseEngine.train_batch(data, loss_function)`` call, on every
data-parallel rank, before it splits the mini-batch into micro-batches; this is where verl itself
all-reduces the mini-batch's token count. Wrapping it there gives the policy loss the statistics of
the whole mini-batch (global selection scope, entropy target) with collectives that every rank
issues exactly once per mini-batch. The wrapper reads the actor config from the loss function
(``partial(ppo_loss, config=...)``) and does nothing unless that config asks for the statistics
(``scope.wanted``): the copy of the mini-batch's fields is made only then.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from verl_cov import scope
from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH

FIELDS = ("old_log_probs", "advantages", "response_mask")


def policy_loss_config(loss_function: Callable) -> Any:
    """The policy-loss config of the engine's ``loss_function``: verl passes ``partial(ppo_loss, config=...)``."""
    actor_config = getattr(loss_function, "keywords", {}).get("config")
    return getattr(actor_config, "policy_loss", None)


def padded_fields(data: Any) -> Any:
    """The mini-batch's ``FIELDS`` as (batch, response_len) tensors: verl's engine holds them nested."""
    return data.select(*FIELDS).to_padded_tensor()


def data_parallel_group(engine: Any) -> Any:
    """The process group over which verl's engine all-reduces a mini-batch (its data-parallel ranks)."""
    return engine.get_data_parallel_group()


def with_mini_batch_statistics(train_batch: Callable) -> Callable:
    """``train_batch(self, data, loss_function)`` run inside the mini-batch's ``scope.mini_batch``."""

    @functools.wraps(train_batch)
    def wrapped(self, data, loss_function, *args, **kwargs):
        policy_loss = policy_loss_config(loss_function)
        if not scope.wanted(policy_loss) or not all(field in data.keys() for field in FIELDS):
            return train_batch(self, data, loss_function, *args, **kwargs)
        padded = padded_fields(data)
        statistics = scope.mini_batch_statistics(
            policy_loss,
            padded["old_log_probs"],
            padded["advantages"],
            padded["response_mask"],
            group=data_parallel_group(self),
        )
        with scope.active(statistics):
            return train_batch(self, data, loss_function, *args, **kwargs)

    wrapped.__verl_cov_wrapped__ = True
    return wrapped


ENGINE_MODULE = "verl.workers.engine.base"


def _wrap(engine_module: ModuleType) -> None:
    engine = engine_module.BaseEngine
    if not getattr(engine.train_batch, "__verl_cov_wrapped__", False):
        engine.train_batch = with_mini_batch_statistics(engine.train_batch)


class _WrapWhenImported(importlib.abc.MetaPathFinder):
    """Finds no module itself: when verl imports its engine module, lets the path finder load it and wraps
    ``BaseEngine.train_batch`` right after, so loading the plugin never imports verl's engines itself
    (0.7 s and about 800 modules, with a warning per missing backend, in every process)."""

    def find_spec(self, name, path=None, target=None):
        if name != ENGINE_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_and_wrap(module: ModuleType) -> None:
                exec_module(module)
                _wrap(module)

            spec.loader.exec_module = exec_and_wrap
        return spec


def install() -> None:
    """Wrap verl's ``BaseEngine.train_batch`` once per process (verl >= 0.8; idempotent): now if verl's engine
    module is loaded, else as soon as it is. The wrapper does nothing for a mini-batch whose policy loss
    asks for no statistics."""
    if not HAS_ENGINE_TRAIN_BATCH:
        return
    if ENGINE_MODULE in sys.modules:
        _wrap(sys.modules[ENGINE_MODULE])
    elif not any(isinstance(finder, _WrapWhenImported) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WrapWhenImported())
