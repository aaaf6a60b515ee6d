"""verl_cov.engine_adapter without verl's engine: the wrappers on fake engines and workers that hold the loss
function as verl does (``partial(ppo_loss, config=actor_config)``). verl's real trainer runs them in
tests/e2e."""

import functools
import json
import warnings

import pytest
import torch
from conftest import actor_config

from verl_cov import controller, engine_adapter, token_entropy
from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH

pytestmark = pytest.mark.skipif(not HAS_ENGINE_TRAIN_BATCH, reason="the engine adapter serves verl >= 0.8")


def loss_function(mode: str, entropy_coeff: float = 0.0, **policy_loss):
    """What the engine calls: records what it saw (the entropy it got, the active H_t) and returns it."""
    config = actor_config(mode, **policy_loss)
    object.__setattr__(config, "entropy_coeff", entropy_coeff)

    def loss(model_output=None, data=None, dp_group=None, config=None, **kwargs):
        entropy = (model_output or {}).get("entropy")
        active = token_entropy._ACTIVE.get()
        return {"entropy": entropy, "active": active, "kwargs": kwargs}

    return functools.partial(loss, config=config)


@pytest.fixture
def padding_is_identity(monkeypatch):
    """No verl micro-batch here: H_t comes already in (batch, response_len) form."""
    monkeypatch.setattr(engine_adapter, "padded_entropy", lambda output, data: output["entropy"])


@pytest.mark.parametrize("bonus, keeps_gradient", [(0.0, False), (0.01, True)])
def test_the_loss_gets_h_t_and_verls_entropy_loses_its_gradient_unless_an_entropy_bonus_needs_it(
    bonus, keeps_gradient, padding_is_identity
):
    entropy = torch.rand(2, 3, requires_grad=True)
    wrapped = engine_adapter.passing_token_entropy(loss_function("verl_cov.forking", bonus), bonus != 0)
    seen = wrapped(model_output={"entropy": entropy, "log_probs": entropy}, data=None, dp_group=None)
    assert seen["entropy"].requires_grad is keeps_gradient
    assert seen["active"] is not None and not seen["active"].requires_grad
    torch.testing.assert_close(seen["active"], entropy.detach())
    assert token_entropy._ACTIVE.get() is None  # only while the loss runs


def test_a_call_without_model_output_passes_through(padding_is_identity):
    """verl's distillation hook calls the loss function as logits_processor_func(student_logits=..., data=...)."""
    wrapped = engine_adapter.passing_token_entropy(loss_function("verl_cov.forking"), False)
    seen = wrapped(student_logits=torch.zeros(1), data=None)
    assert seen["active"] is None and "student_logits" in seen["kwargs"]


class FakeEngine:
    def __init__(self):
        self.calls = []

    def train_batch(self, data, loss_function):
        self.calls.append((data, loss_function))
        return "trained"


@pytest.mark.parametrize(
    "mode, keys, asks_for_entropy",
    [
        ("verl_cov.forking", {}, True),
        ("verl_cov.kl_cov", {"forking_share": 0.3}, True),
        ("verl_cov.kl_cov", {}, False),
        ("verl_cov.vanilla", {}, False),
    ],
)
def test_train_batch_asks_verls_forward_for_the_entropy_only_for_the_80_20_rule(
    mode, keys, asks_for_entropy, monkeypatch
):
    requested = []
    monkeypatch.setattr(engine_adapter, "request_entropy", requested.append)
    engine, data, loss = FakeEngine(), {"field": 1}, loss_function(mode, **keys)
    assert engine_adapter.with_mini_batch_statistics(FakeEngine.train_batch)(engine, data, loss) == "trained"
    assert requested == ([data] if asks_for_entropy else [])
    assert (engine.calls[0][1] is loss) is not asks_for_entropy


class FakeWorker:
    def __init__(self, loss_fn):
        self.loss_fn, self.saved, self.loaded = loss_fn, [], []

    def save_checkpoint(self, local_path, hdfs_path=None, global_step=0, max_ckpt_to_keep=None):
        # verl may copy the folder to HDFS here: the state file must already be in it
        self.saved.append(sorted(p.name for p in local_path.iterdir()) if local_path is not None else None)

    def load_checkpoint(self, local_path, hdfs_path=None, del_local_after_load=False):
        self.loaded.append(local_path)

    def train_mini_batch(self, data):
        return controller.current_state().step


TARGET = {"target_entropy": 1.0, "target_integral_gain": 0.5}


def test_the_state_is_saved_before_verl_saves_and_read_back(tmp_path):
    worker = FakeWorker(loss_function("verl_cov.kl_cov", **TARGET))
    save = engine_adapter.saving_state(FakeWorker.save_checkpoint)
    load = engine_adapter.loading_state(FakeWorker.load_checkpoint)
    step = engine_adapter.counting_steps(FakeWorker.train_mini_batch)
    with controller.run_state() as state:
        assert [step(worker, None), step(worker, None)] == [1, 2]
        state.integral, state.initial_entropy = 3.5, 2.25
        save(worker, tmp_path)
        assert worker.saved == [["verl_cov_target_state_rank_0.json"]]
        save(worker, None)  # verl's managers accept no local path: nothing to write
    with controller.run_state():
        load(worker, tmp_path)
        assert controller.current_state().to_dict() == {"step": 2, "integral": 3.5, "initial_entropy": 2.25}
        assert worker.loaded == [tmp_path]


def test_a_rank_without_its_own_file_reads_rank_0s(tmp_path, monkeypatch):
    """Resumed on more ranks than saved: every rank saved the same state, so rank 0's serves."""
    saved = {"step": 7, "integral": 1.0, "initial_entropy": None}
    (tmp_path / "verl_cov_target_state_rank_0.json").write_text(json.dumps(saved))
    monkeypatch.setattr(engine_adapter.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(engine_adapter.dist, "get_rank", lambda: 3)
    worker = FakeWorker(loss_function("verl_cov.kl_cov", **TARGET))
    with controller.run_state():
        engine_adapter.loading_state(FakeWorker.load_checkpoint)(worker, tmp_path)
        assert (controller.current_state().step, controller.current_state().integral) == (7, 1.0)


def test_a_checkpoint_without_state_warns_and_starts_afresh(tmp_path):
    worker = FakeWorker(loss_function("verl_cov.kl_cov", **TARGET))
    with controller.run_state() as state, pytest.warns(UserWarning, match="start afresh"):
        engine_adapter.loading_state(FakeWorker.load_checkpoint)(worker, tmp_path)
    assert state.step == 0


@pytest.mark.parametrize("mode, keys", [("verl_cov.kl_cov", {}), ("verl_cov.vanilla", {})])
def test_workers_without_a_target_keep_no_state(mode, keys, tmp_path):
    """A critic or a run without a target: no step counted, nothing written, no warning on load."""
    worker = FakeWorker(loss_function(mode, **keys))
    with controller.run_state() as state, warnings.catch_warnings():
        warnings.simplefilter("error")
        engine_adapter.counting_steps(FakeWorker.train_mini_batch)(worker, None)
        engine_adapter.saving_state(FakeWorker.save_checkpoint)(worker, tmp_path)
        engine_adapter.loading_state(FakeWorker.load_checkpoint)(worker, tmp_path)
        assert state.step == 0 and worker.saved == [[]]
