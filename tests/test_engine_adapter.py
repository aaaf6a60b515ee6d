"""verl_cov.engine_adapter without verl's engine: the wrappers on fake engines and workers that hold the loss
function as verl does (``partial(ppo_loss, config=actor_config)``). verl's real trainer runs them in
tests/e2e."""

import functools
import json
import math
import warnings

import pytest
import torch
from conftest import actor_config
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu

from verl_cov import controller, engine_adapter, scope, token_entropy
from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH
from verl_cov.config import settings

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


# Global scope with the 80/20 rule, on a mini-batch in verl's engine layout: nested rows of different prompt and
# response lengths, split into micro-batches by verl's own prepare_micro_batches (fixed size, or dynamic, which
# reorders the rows). A stand-in model gives each token an entropy from its id, so the update's own forward and
# the probe agree, and a row carried into the wrong micro-batch or position shows.
PROMPT_LENS, RESPONSE_LENS = [2, 3, 2, 4, 3, 2], [4, 1, 5, 3, 5, 2]


def nested(rows):
    return torch.nested.nested_tensor(rows, layout=torch.jagged)


def token_entropy_of(input_ids):
    """The stand-in model's H_t at every position of every sequence: its next token's id in quarter nats
    (several tokens tie, some at the threshold), in verl's model-output layout."""
    return nested([torch.cat([ids[1:], ids[:1]]).float() / 4 for ids in input_ids.unbind()])


def engine_mini_batch(split: str, seed: int = 0):
    """(data, (batch, response_len) H_t, mask). Cov_old falls as H_t rises (A = ±1 by row, log π_old = ∓H_t − 1),
    so the top of the covariance is not forking: a selection that ignored the forking mask would pick others."""
    g = torch.Generator().manual_seed(seed)
    sequences = [torch.randint(0, 12, (p + r,), generator=g) for p, r in zip(PROMPT_LENS, RESPONSE_LENS, strict=True)]
    entropy_rows = token_entropy_of(nested(sequences)).unbind()
    # verl's layout: the entropy of response token t of a row sits at full-sequence position prompt_len - 1 + t
    responses = [row[p - 1 : p - 1 + r] for row, p, r in zip(entropy_rows, PROMPT_LENS, RESPONSE_LENS, strict=True)]
    masks = [torch.rand(r, generator=g) > 0.2 for r in RESPONSE_LENS]
    signs = [1.0 if i < len(sequences) // 2 else -1.0 for i in range(len(sequences))]
    data = TensorDict(
        {
            "input_ids": nested(sequences),
            "prompts": nested([ids[:p] for ids, p in zip(sequences, PROMPT_LENS, strict=True)]),
            "responses": nested([ids[p:] for ids, p in zip(sequences, PROMPT_LENS, strict=True)]),
            "response_mask": nested([m.long() for m in masks]),
            "old_log_probs": nested([-sign * h - 1 for sign, h in zip(signs, responses, strict=True)]),
            "advantages": nested([torch.full_like(h, sign) for sign, h in zip(signs, responses, strict=True)]),
        },
        batch_size=[len(sequences)],
    )
    sizes = {"fixed": {"use_dynamic_bsz": False, "micro_batch_size_per_gpu": 2}}
    tu.assign_non_tensor(data, **sizes.get(split, {"use_dynamic_bsz": True, "max_token_len_per_gpu": 9}))
    width = max(RESPONSE_LENS)
    entropy, mask = torch.zeros(len(sequences), width), torch.zeros(len(sequences), width, dtype=torch.bool)
    for i, r in enumerate(RESPONSE_LENS):
        entropy[i, :r], mask[i, :r] = responses[i], masks[i]
    return data, entropy, mask


class NestedEngine:
    """verl's engine as the adapter meets it: ``infer_batch`` answers the probe from the stand-in model;
    ``train_batch`` splits the mini-batch with verl's ``prepare_micro_batches`` and calls the loss on each
    micro-batch, recording per row what the loss saw."""

    def __init__(self):
        self.module = torch.nn.Linear(1, 1)  # trained in train mode; the probe should switch it to eval
        self.probes, self.seen, self.micro_batches = [], {}, 0

    def get_data_parallel_group(self):
        return None

    def infer_batch(self, data, loss_function=None):
        flags = ("calculate_entropy", *engine_adapter.PROBE_OFF)
        self.probes.append(({flag: tu.get_non_tensor_data(data, flag, None) for flag in flags}, self.module.training))
        return {"model_output": {"entropy": token_entropy_of(data["input_ids"])}}

    def train_batch(self, data, loss_function):
        from verl.workers.engine.utils import prepare_micro_batches

        assert not tu.get_non_tensor_data(data, "calculate_entropy", False)  # the update forward computes none for us
        assert self.module.training
        micro_batches, indices = prepare_micro_batches(data)
        rows_of = indices if indices is not None else [range(i * 2, i * 2 + 2) for i in range(len(micro_batches))]
        for micro, rows in zip(micro_batches, rows_of, strict=True):
            self.micro_batches += 1
            seen = loss_function(model_output={"entropy": token_entropy_of(micro["input_ids"])}, data=micro)
            self.seen.update(zip(rows, seen, strict=True))
        return "trained"


def real_loss(model_output=None, data=None, dp_group=None, config=None):
    """verl-cov's registered loss on the micro-batch, plus, per row, the forking tokens, the tokens the method
    selected and the update forward's own H_t beside the H_t the loss read (carried from the probe)."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.workers.utils.padding import no_padding_2_padding

    cfg = settings(config.policy_loss)
    padded = data.select("old_log_probs", "advantages", "response_mask").to_padded_tensor()
    mask = padded["response_mask"].bool()
    old_log_prob, advantages = padded["old_log_probs"], padded["advantages"]
    _, metrics = get_policy_loss_fn(cfg.loss_mode)(
        old_log_prob, old_log_prob + 0.1, advantages, mask, "token-mean", config
    )
    forking = token_entropy.forking_tokens(cfg, mask)
    selected = torch.zeros_like(forking)
    if scope.current(cfg) is not None:
        selected, _ = scope.selected_tokens(cfg.loss_mode, old_log_prob, advantages, mask & forking, scope.current(cfg))
    n = int(mask.sum())
    assert metrics["actor/cov/forking_frac"] * n == pytest.approx(int(forking.sum()))
    assert metrics.get("actor/cov/selected_frac", 0.0) * n == pytest.approx(int(selected.sum()))
    own = no_padding_2_padding(model_output["entropy"], data)
    read = token_entropy.current(cfg)
    return list(zip(forking, selected, own, read, strict=True))


def top_share_reference(entropy, mask, share):
    """The valid tokens at or above the ⌈share·N⌉-th largest H_t of the whole mini-batch, written out."""
    values = sorted(entropy[mask].tolist(), reverse=True)
    return mask & (entropy >= values[math.ceil(share * len(values)) - 1])


@pytest.mark.parametrize("split", ["fixed", "dynamic"])
@pytest.mark.parametrize(
    "mode, keys",
    [
        ("verl_cov.forking", {}),
        ("verl_cov.kl_cov", {"forking_share": 0.5, "kl_cov_ratio": 0.2}),
        ("verl_cov.clip_cov", {"forking_share": 0.5, "clip_cov_ratio": 0.2, "clip_cov_lb": -5.0, "clip_cov_ub": 5.0}),
    ],
)
def test_global_scope_forks_the_top_share_of_the_whole_mini_batch_however_it_is_split(split, mode, keys):
    data, entropy, mask = engine_mini_batch(split)
    config = actor_config(mode, selection_scope="global", **keys)
    engine = NestedEngine()
    train = engine_adapter.with_mini_batch_statistics(NestedEngine.train_batch)
    assert train(engine, data, functools.partial(real_loss, config=config)) == "trained"
    # one probe, in eval mode, asking for the entropy and none of distillation's hooks, on a copy of the data
    assert engine.probes == [({"calculate_entropy": True, **engine_adapter.PROBE_OFF}, False)]
    assert "calculate_entropy" not in data.keys() and engine.module.training
    assert engine.micro_batches > 1 and sorted(engine.seen) == list(range(len(RESPONSE_LENS)))
    expected = top_share_reference(entropy, mask, config.policy_loss.forking)
    assert 0 < expected.sum() < mask.sum()
    selected = torch.zeros_like(mask)
    for row, (forking, chosen, own, read) in engine.seen.items():
        r = RESPONSE_LENS[row]
        assert torch.equal(read[:r], own[:r]), row  # each row read the H_t of its own tokens
        assert forking[:r].tolist() == expected[row, :r].tolist(), row
        selected[row, :r] = chosen[:r]
    if mode != "verl_cov.forking":  # the method's count, r·N or k·N of all N tokens, among the forking tokens
        assert not (selected & ~expected).any()
        assert int(selected.sum()) >= math.floor(0.2 * int(mask.sum())) > 0
    if mode == "verl_cov.kl_cov":  # the top of the forking tokens by Cov_old, the means over all tokens
        padded = data.select("old_log_probs", "advantages").to_padded_tensor()
        log_prob, advantage = padded["old_log_probs"], padded["advantages"]
        cov = (log_prob - log_prob[mask].mean()) * (advantage - advantage[mask].mean())
        assert cov[selected].min() >= cov[expected & ~selected].max()


def test_global_forking_needs_the_entropy_on_every_rank():
    data, _, _ = engine_mini_batch("fixed")
    engine = NestedEngine()
    engine.infer_batch = lambda data, loss_function=None: {}  # a pipeline stage without outputs
    config = actor_config("verl_cov.forking", selection_scope="global")
    train = engine_adapter.with_mini_batch_statistics(NestedEngine.train_batch)
    with pytest.raises(RuntimeError, match=r"selection_scope='global' with the 80/20 rule needs the per-token entropy"):
        train(engine, data, functools.partial(real_loss, config=config))
    assert engine.module.training and engine.micro_batches == 0
