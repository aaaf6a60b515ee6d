"""verl's engine adapter: runs each mini-batch of verl's engine workers inside ``verl_cov.scope.mini_batch``
(verl >= 0.8). With ``compat.py`` (versions, registry, aggregation) and ``plugin.py`` (registration) it is one
of the modules that touch verl's internals; the engine details it relies on are the accessors below and the
methods that ``wrap_engine`` and ``wrap_training_worker`` wrap (``verl_cov.plugin`` calls them when verl imports
the modules its ``ENGINE_WRAPS`` names), so a verl change to the engine or its workers touches them and nothing
else.

verl trains one PPO mini-batch per ``BaseEngine.train_batch(data, loss_function)`` call, on every
data-parallel rank, before it splits the mini-batch into micro-batches; this is where verl itself
all-reduces the mini-batch's token count. Wrapping it there gives the policy loss the statistics of
the whole mini-batch (global selection scope, entropy target) with collectives that every rank
issues exactly once per mini-batch. The wrapper reads the actor config from the loss function
(``partial(ppo_loss, config=...)``) and does nothing unless that config asks for the statistics
(``scope.wanted``) or the 80/20 rule's entropy (``token_entropy.wanted``): the copy of the mini-batch's
fields is made only then. The 80/20 rule in global scope also runs the engine's own ``infer_batch`` once
per mini-batch, before ``train_batch``, for the H_t of all its tokens.

The entropy target's schedule and integral (``verl_cov.controller``) keep state between mini-batches. Its
clock is verl's training step: ``TrainingWorker.train_mini_batch`` runs once per step on every worker
(it splits the step's batch into mini-batches and trains each through ``train_batch``), so each call
whose loss has a target begins a step. ``TrainingWorker.save_checkpoint`` / ``load_checkpoint`` also
write and read the state, ``STATE_FILE`` in the checkpoint's folder, one file per rank: the state lives
per process, every rank holds the same one (they all read the same all-reduced Ĥ), and per-rank files,
like verl's own per-rank shards, need no shared filesystem.
"""

from __future__ import annotations

import contextlib
import functools
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.distributed as dist

from verl_cov import controller, scope, token_entropy
from verl_cov.collective import all_reduce_sum, collective_device
from verl_cov.config import KEY_PREFIX, SELECTING_MODES, settings, settings_for

FIELDS = ("old_log_probs", "advantages", "response_mask")


def loss_config(loss_function: Callable | None) -> Any:
    """The config of the engine's ``loss_function`` (verl passes ``partial(ppo_loss, config=...)``), or None."""
    return getattr(loss_function, "keywords", {}).get("config")


def policy_loss_config(loss_function: Callable | None) -> Any:
    """The policy-loss config of the engine's ``loss_function``; None for another loss (a critic's has no
    ``policy_loss``) or none."""
    return getattr(loss_config(loss_function), "policy_loss", None)


def padded_fields(data: Any) -> Any:
    """The mini-batch's ``FIELDS`` as (batch, response_len) tensors: verl's engine holds them nested."""
    return data.select(*FIELDS).to_padded_tensor()


def data_parallel_group(engine: Any) -> Any:
    """The process group over which verl's engine all-reduces a mini-batch (its data-parallel ranks)."""
    return engine.get_data_parallel_group()


def request_entropy(data: Any) -> None:
    """Ask verl's engine to compute the per-token entropy in this mini-batch's update forward."""
    from verl.utils import tensordict_utils

    tensordict_utils.assign_non_tensor(data, calculate_entropy=True)


def padded_entropy(model_output: dict, micro_batch: Any) -> Any:
    """The micro-batch's H_t from verl's update forward as a (batch, response_len) tensor, or None without it."""
    from verl.workers.utils.padding import no_padding_2_padding

    entropy = model_output.get("entropy")
    return None if entropy is None else no_padding_2_padding(entropy, micro_batch)


def worker_loss_function(worker: Any) -> Callable | None:
    """The loss function a verl ``TrainingWorker`` trains with (``set_loss_fn``); None before it is set."""
    return getattr(worker, "loss_fn", None)


ENTROPY_FIELD = "verl_cov_token_entropy"  # the mini-batch's H_t, carried with its rows into each micro-batch
# What the probe must not inherit from the update's mini-batch: distillation's hooks (they call the loss
# function, which the probe has none of) and extra outputs it does not need.
PROBE_OFF = {"distillation_use_topk": False, "distillation_only": False, "calculate_sum_pi_squared": False}


def model_modules(engine: Any) -> list:
    """The torch modules verl's engine trains: FSDP's and VeOmni's one module, Megatron's list of chunks."""
    module = getattr(engine, "module", None)
    if module is None:
        return []
    return list(module) if isinstance(module, list | tuple) else [module]


@contextlib.contextmanager
def evaluating(engine: Any) -> Iterator[None]:
    """The engine's modules in eval mode for the probe, then back in their own mode: no dropout, and no
    train-mode hook (verl's activation offload counts train-mode forwards and expects a backward for each)."""
    modules = model_modules(engine)
    training = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, training, strict=True):
            module.train(mode)


def probe_entropy(engine: Any, data: Any) -> Any:
    """π_θ's H_t at every token of the mini-batch, in the layout of verl's model output (nested, one row per
    sequence), from one forward without gradient in eval mode: the engine's own ``infer_batch`` on a shallow
    copy of ``data`` with ``calculate_entropy``. Every data-parallel rank calls it; if any rank gets no
    entropy (an engine whose outputs live on one pipeline stage), every rank raises, so none waits in a
    collective the others never reach."""
    from verl.utils import tensordict_utils

    probe = data.copy()
    tensordict_utils.assign_non_tensor(probe, calculate_entropy=True, **PROBE_OFF)
    with evaluating(engine):
        output = engine.infer_batch(probe)
    entropy = (output or {}).get("model_output", {}).get("entropy")
    missing = torch.tensor([float(entropy is None)], device=collective_device(None))
    if all_reduce_sum(missing, None).item() > 0:
        raise RuntimeError(
            f"{KEY_PREFIX}.selection_scope='global' with the 80/20 rule needs the per-token entropy on every "
            f"rank, and {type(engine).__name__}.infer_batch returned none on some (an engine whose outputs live "
            "on one pipeline stage, or on one rank of a context-parallel group); use selection_scope=micro_batch"
        )
    return entropy


def carrying_entropy(data: Any, entropy: Any) -> Any:
    """A shallow copy of ``data`` with ``entropy`` as ``ENTROPY_FIELD``, so verl's micro-batch split (fixed or
    dynamic) hands each micro-batch the H_t of its own rows."""
    carried = data.copy()
    carried[ENTROPY_FIELD] = entropy
    return carried


def passing_carried_entropy(loss_function: Callable) -> Callable:
    """``loss_function`` run with the micro-batch's carried H_t (``carrying_entropy``) active."""

    @functools.wraps(loss_function)
    def loss(*args, **kwargs):
        data = kwargs.get("data")
        if data is None or ENTROPY_FIELD not in data.keys():
            return loss_function(*args, **kwargs)  # a call on data that is not the mini-batch's
        with token_entropy.active(padded_entropy({"entropy": data[ENTROPY_FIELD]}, data)):
            return loss_function(*args, **kwargs)

    return loss


def passing_token_entropy(loss_function: Callable, keeps_entropy_gradient: bool) -> Callable:
    """``loss_function(model_output=..., data=..., ...)`` run with the micro-batch's H_t active
    (``verl_cov.token_entropy``). Unless the user's own entropy bonus needs it (``keeps_entropy_gradient``),
    the entropy verl's loss receives is detached, so asking for it adds no backward pass through it."""

    @functools.wraps(loss_function)
    def loss(*args, **kwargs):
        model_output = kwargs.get("model_output")
        if model_output is None or model_output.get("entropy") is None:
            return loss_function(*args, **kwargs)  # not a policy-loss call (verl's distillation hook), or no H_t
        detached = {**model_output, "entropy": model_output["entropy"].detach()}
        if not keeps_entropy_gradient:
            kwargs["model_output"] = detached
        with token_entropy.active(padded_entropy(detached, kwargs["data"])):
            return loss_function(*args, **kwargs)

    return loss


def with_mini_batch_statistics(train_batch: Callable) -> Callable:
    """``train_batch(self, data, loss_function)`` run inside the mini-batch's ``scope.mini_batch``, and, for the
    80/20 rule, with each micro-batch's H_t active in the loss: from verl's update forward (micro-batch
    scope), or from one forward over the whole mini-batch before it, with the forking threshold of all ranks
    (global scope)."""

    @functools.wraps(train_batch)
    def wrapped(self, data, loss_function, *args, **kwargs):
        policy_loss = policy_loss_config(loss_function)
        has_fields = all(field in data.keys() for field in FIELDS)
        over_mini_batch = has_fields and token_entropy.wanted_over_mini_batch(policy_loss)
        if token_entropy.wanted(policy_loss) and not over_mini_batch:
            request_entropy(data)
            bonus = loss_config(loss_function).entropy_coeff
            loss_function = passing_token_entropy(loss_function, keeps_entropy_gradient=bonus != 0)
        if not (over_mini_batch or (has_fields and scope.wanted(policy_loss))):
            return train_batch(self, data, loss_function, *args, **kwargs)
        group, padded = data_parallel_group(self), padded_fields(data)
        with contextlib.ExitStack() as contexts:
            forking = None
            if over_mini_batch:
                share = settings(policy_loss).forking
                data, threshold, forking = _forking_over_mini_batch(self, data, padded["response_mask"], share, group)
                contexts.enter_context(token_entropy.mini_batch_scope(threshold))
                loss_function = passing_carried_entropy(loss_function)
            if scope.wanted(policy_loss):
                statistics = scope.mini_batch_statistics(
                    policy_loss,
                    padded["old_log_probs"],
                    padded["advantages"],
                    padded["response_mask"],
                    group=group,
                    forking=forking,
                )
                contexts.enter_context(scope.active(statistics))
            return train_batch(self, data, loss_function, *args, **kwargs)

    return wrapped


def _forking_over_mini_batch(engine: Any, data: Any, response_mask: Any, share: float, group: Any) -> tuple:
    """Global scope with the 80/20 rule: the mini-batch's H_t from ``probe_entropy`` and its forking threshold
    over all ranks; returns (``data`` carrying the H_t of each row into its micro-batch, the threshold, the
    mini-batch's forking tokens as a (batch, response_len) mask). verl's update forward then computes no
    entropy for verl-cov."""
    entropy = probe_entropy(engine, data)
    data = carrying_entropy(data, entropy)
    mask = response_mask.bool()
    entropy = padded_entropy({"entropy": entropy}, data)[:, : mask.shape[1]].to(mask.device)
    threshold = token_entropy.mini_batch_threshold(entropy, mask, share, group)
    return data, threshold, token_entropy.at_or_above(entropy, mask, threshold)


def _targets(worker: Any) -> bool:
    """Whether the worker trains a Clip-Cov or KL-Cov loss with an entropy target (not a critic, say,
    that verl may place in the same process)."""
    config = settings_for(policy_loss_config(worker_loss_function(worker)), SELECTING_MODES)
    return config is not None and config.target_entropy is not None


STATE_FILE = "verl_cov_target_state_rank_{rank}.json"


def state_file(local_path: str, rank: int | None = None) -> Path:
    """The controller-state file of ``rank`` (this process's global rank by default) in a checkpoint folder."""
    if rank is None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    return Path(local_path) / STATE_FILE.format(rank=rank)


def counting_steps(train_mini_batch: Callable) -> Callable:
    """``train_mini_batch(self, data)`` that first begins the controller's next training step."""

    @functools.wraps(train_mini_batch)
    def wrapped(self, *args, **kwargs):
        if _targets(self):
            controller.current_state().begin_step()
        return train_mini_batch(self, *args, **kwargs)

    return wrapped


def saving_state(save_checkpoint: Callable) -> Callable:
    """``save_checkpoint(self, local_path, ...)`` that first writes the controller's state into ``local_path``,
    before verl saves (and may copy the folder to HDFS); nothing without a local path."""

    @functools.wraps(save_checkpoint)
    def wrapped(self, local_path, *args, **kwargs):
        if local_path is not None and _targets(self):
            path = state_file(local_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(controller.current_state().to_dict()))
        return save_checkpoint(self, local_path, *args, **kwargs)

    return wrapped


def loading_state(load_checkpoint: Callable) -> Callable:
    """``load_checkpoint(self, local_path, ...)`` that also restores the controller's state from ``local_path``,
    read before verl loads (``del_local_after_load`` removes the folder); a checkpoint without one (saved
    before verl-cov had a state, or without a target) starts the controller afresh, with a warning."""

    @functools.wraps(load_checkpoint)
    def wrapped(self, local_path, *args, **kwargs):
        if local_path is not None and _targets(self):
            path = state_file(local_path)
            if not path.is_file():  # resumed on more ranks than saved: every rank saved the same state
                path = state_file(local_path, rank=0)
            if path.is_file():
                controller.set_state(controller.TargetState.from_dict(json.loads(path.read_text())))
            else:
                warnings.warn(
                    f"{KEY_PREFIX}.target_entropy: the checkpoint {local_path} holds no {path.name}; the entropy "
                    "target's schedule, integral and Ĥ_0 start afresh",
                    stacklevel=2,
                )
        return load_checkpoint(self, local_path, *args, **kwargs)

    return wrapped


def _wrap_methods(cls: type, wrappers: dict[str, Callable[[Callable], Callable]]) -> None:
    """Replace each named method of ``cls`` by its wrapper, once (marked ``__verl_cov_wrapped__``)."""
    for name, wrapper in wrappers.items():
        method = getattr(cls, name)
        if not getattr(method, "__verl_cov_wrapped__", False):
            wrapped = wrapper(method)
            wrapped.__verl_cov_wrapped__ = True
            setattr(cls, name, wrapped)


def wrap_engine(module: ModuleType) -> None:
    """Wrap ``BaseEngine.train_batch`` of verl's ``verl.workers.engine.base`` (the plugin calls this when verl
    imports that module)."""
    _wrap_methods(module.BaseEngine, {"train_batch": with_mini_batch_statistics})


def wrap_training_worker(module: ModuleType) -> None:
    """Wrap ``TrainingWorker``'s step and checkpoint methods of verl's ``verl.workers.engine_workers``."""
    _wrap_methods(
        module.TrainingWorker,
        {"train_mini_batch": counting_steps, "save_checkpoint": saving_state, "load_checkpoint": loading_state},
    )
