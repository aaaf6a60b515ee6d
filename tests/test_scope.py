"""selection_scope=global: the same tokens whatever the micro-batch and data-parallel split (gloo ranks),
exact against a plain reference; the engine hook; no hidden state across mini-batches."""

import functools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from paper_reference import covariance
from scope_ranks import BAND, BATCH, SHARES, config, mini_batch, spawned_rank, train_rank
from verl_support import VERL

from verl_cov import scope
from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH
from verl_cov.engine_adapter import with_mini_batch_statistics

pytestmark = pytest.mark.skipif(not HAS_ENGINE_TRAIN_BATCH, reason=f"global scope needs verl >= 0.8 (have {VERL})")

# (world size, micro-batch rows per rank): ranks hold different numbers of micro-batches.
SPLITS = {
    2: [[1, 2, 3], [6]],  # 6 rows each: 3 micro-batches vs 1
    3: [[4], [1, 1, 1, 1], [2, 2]],
}


@pytest.fixture(scope="module")
def distributed_runs(tmp_path_factory) -> dict[int, dict]:
    """Every mode and scope trained on 2 and 3 gloo processes; each rank's selection, joined in row order."""
    runs = {}
    for world, splits in SPLITS.items():
        out = tmp_path_factory.mktemp(f"world{world}")
        mp.spawn(spawned_rank, args=(world, str(out / "init"), splits, str(out)), nprocs=world, join=True)
        parts = [torch.load(out / f"rank{rank}.pt") for rank in range(world)]
        runs[world] = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
    return runs


def statistics_and_selection(mode: str, actor, data):
    fields = (data["old_log_probs"], data["advantages"], data["response_mask"])
    stats = scope.mini_batch_statistics(actor.policy_loss, *fields)
    selected, candidates = scope.selected_tokens(mode, *fields, stats)
    return stats, selected, candidates


def single_process(mode: str, scope_name: str, micro_batch_rows: list[int]) -> torch.Tensor:
    return train_rank(0, 1, micro_batch_rows, mode, scope_name)


@pytest.mark.parametrize("mode", list(SHARES))
def test_global_scope_selects_the_same_tokens_whatever_the_split(mode, distributed_runs):
    whole = single_process(mode, "global", [BATCH])
    assert whole.any()
    for rows in ([1] * BATCH, [5, 7], [2, 3, 7]):
        assert torch.equal(single_process(mode, "global", rows), whole)
    for world, run in distributed_runs.items():
        assert torch.equal(run[mode, "global"], whole), f"{world} ranks selected other tokens"


@pytest.mark.parametrize("mode", list(SHARES))
def test_micro_batch_scope_depends_on_the_split(mode, distributed_runs):
    """The problem global scope removes: per-micro-batch selection changes with the split."""
    whole = single_process(mode, "micro_batch", [BATCH])
    others = [
        single_process(mode, "micro_batch", [1] * BATCH),
        *(r[mode, "micro_batch"] for r in distributed_runs.values()),
    ]
    assert any(not torch.equal(other, whole) for other in others)


def _reference_cov(data) -> dict:
    return covariance(data["old_log_probs"], data["advantages"], data["response_mask"])


def test_global_kl_cov_is_the_top_k_of_the_whole_mini_batch():
    data = mini_batch()
    selected = single_process("verl_cov.kl_cov", "global", [3, 9])
    n_valid = int(data["response_mask"].sum())
    k = SHARES["verl_cov.kl_cov"]["kl_cov_ratio"]
    assert int(selected.sum()) in (math.floor(k * n_valid), math.floor(k * n_valid) + 1)
    cov = _reference_cov(data)
    ranked = sorted(cov, key=cov.get, reverse=True)
    assert {tuple(p) for p in selected.nonzero().tolist()} == set(ranked[: int(selected.sum())])


def test_global_clip_cov_draws_its_count_among_the_band():
    data = mini_batch()
    selected = single_process("verl_cov.clip_cov", "global", [12])
    cov = _reference_cov(data)
    in_band = {p for p, c in cov.items() if BAND["clip_cov_lb"] <= c <= BAND["clip_cov_ub"]}
    n_valid = int(data["response_mask"].sum())
    r = SHARES["verl_cov.clip_cov"]["clip_cov_ratio"]
    assert {tuple(p) for p in selected.nonzero().tolist()} <= in_band
    assert int(selected.sum()) in (math.floor(r * n_valid), math.floor(r * n_valid) + 1)


def test_global_clip_cov_draw_is_uniform_over_candidates():
    """Over many seeds every candidate is cut about equally often (the keyed hash acts as a uniform draw)."""
    data = mini_batch()
    mask = data["response_mask"]
    counts = torch.zeros(mask.shape)
    seeds = 400
    for seed in range(seeds):
        _, selected, candidates = statistics_and_selection(
            "verl_cov.clip_cov", config("verl_cov.clip_cov", "global", seed=seed), data
        )
        counts += selected
    p = counts[candidates].sum() / (seeds * int(candidates.sum()))
    expected, spread = seeds * p, math.sqrt(seeds * p * (1 - p))
    assert (counts[~candidates] == 0).all()
    assert ((counts[candidates] - expected).abs() < 5 * spread).all()


def test_same_seed_same_selection_and_seed_changes_it():
    data = mini_batch()
    draws = []
    for seed in (0, 0, 1):
        actor = config("verl_cov.clip_cov", "global", seed=seed)
        stats = scope.mini_batch_statistics(
            actor.policy_loss, data["old_log_probs"], data["advantages"], data["response_mask"]
        )
        draws.append(stats)
    assert draws[0] == draws[1] and draws[0].salt != draws[2].salt


def test_loss_without_active_mini_batch_names_the_key():
    data = mini_batch()
    actor = config("verl_cov.kl_cov", "global")
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    with pytest.raises(RuntimeError, match=r"actor_rollout_ref\.actor\.policy_loss\.selection_scope"):
        get_policy_loss_fn("verl_cov.kl_cov")(
            data["old_log_probs"], data["log_prob"], data["advantages"], data["response_mask"], "token-mean", actor
        )


def test_degenerate_mini_batches_give_finite_losses():
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    data = mini_batch()
    cases = {
        "all masked": {**data, "response_mask": torch.zeros_like(data["response_mask"])},
        "zero advantages": {**data, "advantages": torch.zeros_like(data["advantages"])},
        "one token": {key: value[:1, :1] for key, value in data.items()},
        # one token sampled with log π_old = −inf used to make Ĥ infinite and the controller divide by 0
        "minus infinite log-prob": {
            **data,
            "old_log_probs": data["old_log_probs"].index_put(
                (torch.tensor([0]), torch.tensor([0])), torch.tensor(-torch.inf)
            ),
        },
    }
    for name, case in cases.items():
        for mode in SHARES:
            actor = config(mode, "global", target_entropy=1.0)
            with scope.mini_batch(actor.policy_loss, case["old_log_probs"], case["advantages"], case["response_mask"]):
                loss, metrics = get_policy_loss_fn(mode)(
                    case["old_log_probs"],
                    case["log_prob"].requires_grad_(),
                    case["advantages"],
                    case["response_mask"],
                    "token-mean",
                    actor,
                )
            assert torch.isfinite(loss), (name, mode)
            assert all(math.isfinite(v) for v in metrics.values()), (name, mode, metrics)
            assert metrics["actor/cov/target_skipped"] == float(name == "all masked"), (name, mode)


RESUMED = """
import json, sys
sys.path.insert(0, {tests!r})
from scope_ranks import config, mini_batch
from test_scope import statistics_and_selection
out = {{}}
for mode in ("verl_cov.kl_cov", "verl_cov.clip_cov"):
    stats, selected, _ = statistics_and_selection(mode, config(mode, "global", target_entropy=2.5), mini_batch(seed=5))
    out[mode] = [stats.control.share, stats.threshold, selected.nonzero().tolist()]
print(json.dumps(out))
"""


def test_a_resumed_process_selects_what_the_running_one_does():
    """No state outlives a mini-batch: after other mini-batches in this process, a mini-batch gets the
    same share, threshold and tokens as in a fresh process (a run resumed from a checkpoint)."""
    running = {}
    for mode in ("verl_cov.kl_cov", "verl_cov.clip_cov"):
        actor = config(mode, "global", target_entropy=2.5)
        for seed in range(3):  # earlier mini-batches
            statistics_and_selection(mode, actor, mini_batch(seed))
        stats, selected, _ = statistics_and_selection(mode, actor, mini_batch(seed=5))
        running[mode] = [stats.control.share, stats.threshold, selected.nonzero().tolist()]
    code = RESUMED.format(tests=str(Path(__file__).parent))
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(fresh.strip().splitlines()[-1]) == json.loads(json.dumps(running))


def test_the_plugin_wraps_verl_engine_train_batch_once():
    from verl.workers.engine.base import BaseEngine

    from verl_cov import plugin

    wrapped = BaseEngine.train_batch
    assert getattr(wrapped, "__verl_cov_wrapped__", False)
    plugin.install_engine_wraps()
    assert BaseEngine.train_batch is wrapped  # idempotent


def test_hook_passes_through_when_the_config_asks_for_nothing():
    from scope_ranks import StandInEngine, selected_by_loss
    from tensordict import TensorDict

    data = TensorDict(mini_batch(), batch_size=[BATCH])
    seen = []
    engine = StandInEngine([BATCH], None)
    actor = config("verl_cov.kl_cov", "micro_batch")

    def loss(micro, config):
        seen.append(scope._ACTIVE.get())
        return selected_by_loss(micro, config)

    engine.train_batch(data, functools.partial(loss, config=actor))
    engine.train_batch(data, lambda micro: seen.append(scope._ACTIVE.get()) or micro["response_mask"])
    assert seen == [None, None]


def test_hook_reads_the_mini_batches_verl_trainer_hands_the_engine():
    """The layout of verl's ``_update_actor``: padded batch -> ``left_right_2_no_padding`` -> mini-batches
    from verl's ``make_iterator``; the hook sees each mini-batch's own tokens."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    data = mini_batch()
    prompt_len = 6
    prompt_mask = torch.arange(prompt_len)[None, :] >= torch.tensor([0, 2, 4] * 4)[:, None]  # left padding
    attention_mask = torch.cat([prompt_mask, data["response_mask"]], dim=1).long()
    batch = TensorDict(
        {
            "input_ids": torch.randint(3, 50, attention_mask.shape),
            "attention_mask": attention_mask,
            "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
            "response_mask": data["response_mask"].long(),
            "old_log_probs": data["old_log_probs"],
            "advantages": data["advantages"].contiguous(),
            "log_prob": data["log_prob"],
        },
        batch_size=[BATCH],
    )
    try:
        batch = left_right_2_no_padding(batch)
    except ImportError as error:  # verl 0.8.0 unpads with flash-attn, which a CPU machine lacks
        pytest.skip(f"verl's left_right_2_no_padding needs {error.name} here")
    actor = config("verl_cov.kl_cov", "global", target_entropy=1.0)
    seen = []

    class Engine:
        def get_data_parallel_group(self):
            return None

        @with_mini_batch_statistics
        def train_batch(self, data, loss_function):
            seen.append(scope._ACTIVE.get())

    mini = BATCH // 3
    for mini_batch_td in tu.make_iterator(batch, mini_batch_size=mini, epochs=1, seed=0, dataloader_kwargs={}):
        assert mini_batch_td["input_ids"].is_nested
        Engine().train_batch(mini_batch_td, functools.partial(lambda micro, config: None, config=actor))
    assert len(seen) == 3
    for i, stats in enumerate(seen):
        rows = slice(i * mini, (i + 1) * mini)
        fields = (data["old_log_probs"][rows], data["advantages"][rows], data["response_mask"][rows])
        assert stats == scope.mini_batch_statistics(actor.policy_loss, *fields)
