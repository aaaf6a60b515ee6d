"""verl's own trainer, ``python -m verl.trainer.main_ppo``, end to end on CPU with verl-cov installed as users
install it: Ray, the plugin in every worker, the rollout, the reward, the actor update, the file logger.

The CPU platform and rollout are the test-only ``verl_cpu_harness`` (loaded into every verl process with
``VERL_USE_EXTERNAL_MODULES``). Each run is a few steps of GRPO on a tiny random-init Qwen2.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
from packaging.version import Version
from trainer_runs import HARNESS_ROOT, PL, REPO, TARGET, run_command, run_trainer
from verl_patch_series import apply_series, opt_in_overrides
from verl_support import VERL

V09 = VERL >= Version("0.9")
V08 = VERL >= Version("0.8")
needs_09 = pytest.mark.skipif(not V09, reason="verl >= 0.9 (entry points, the v0/v1 trainers of 0.9.1)")

MECHANISM = {"actor/cov/mean", "actor/cov/pg_mean", "actor/cov/p999", "actor/cov/max", "actor/cov/entropy_estimate"}
SELECTION = {"actor/cov/selected_frac", "actor/cov/selected_adv_mean", "actor/cov/selected_logp_mean"}
FORKING = {"actor/cov/forking_frac"}
MODES = {
    # The vanilla run also validates before training and after every step, and logs to TensorBoard too:
    # the log tool's readers get verl's own console text, file log and event files of one run.
    "verl_cov.vanilla": (
        ["trainer.test_freq=1", "trainer.val_before_train=True", "trainer.logger=[console,file,tensorboard]"],
        MECHANISM,
    ),
    "verl_cov.clip_cov": (
        [
            f"{PL}.clip_cov_ratio=0.2",
            f"{PL}.clip_cov_lb=0.01",
            f"{PL}.clip_cov_ub=5.0",
            "actor_rollout_ref.actor.clip_ratio_low=1.0",
            "actor_rollout_ref.actor.clip_ratio_high=1.0",
        ],
        MECHANISM | SELECTION | {"actor/cov/candidate_frac"},
    ),
    "verl_cov.kl_cov": ([f"{PL}.kl_cov_ratio=0.2"], MECHANISM | SELECTION | {"actor/cov/selected_kl_mean"}),
}
if V08:
    # The 80/20 rule: alone (ρ = 0.2), and with KL-Cov (ρ = 0.5; a verl-cov key, so verl-cov's schema). Neither
    # run sets calculate_entropy: the engine adapter asks verl's update forward for the entropy.
    MODES["verl_cov.forking"] = ([], MECHANISM | FORKING)
    MODES["verl_cov.kl_cov+forking"] = (
        [f"{PL}.kl_cov_ratio=0.2", TARGET, f"+{PL}.forking_share=0.5"],
        MECHANISM | SELECTION | FORKING,
    )
FORKING_SHARE = {"verl_cov.forking": 0.2, "verl_cov.kl_cov+forking": 0.5}


def loss_mode(label: str) -> str:
    """A run's loss mode: its label, without what it adds after a "+"."""
    return label.split("+")[0]


# How the plugin gets into the workers: verl >= 0.9 imports its entry point on `import verl` (no line
# added); older verl imports actor_rollout_ref.model.external_lib in each worker.
LOADING = [] if V09 else ["actor_rollout_ref.model.external_lib=verl_cov.plugin"]


# The KL-Cov run on verl 0.9 trains 4 steps and saves at 2 and 4: it is also the uninterrupted run of
# the resume test.
STEPS = {mode: 4 if V09 and mode == "verl_cov.kl_cov" else 3 for mode in MODES}
SAVE = {mode: ["trainer.save_freq=2"] if STEPS[mode] == 4 else [] for mode in MODES}


@pytest.fixture(scope="module")
def mode_runs(tmp_path_factory) -> dict:
    runs = {}
    for mode, (overrides, _) in MODES.items():
        out = tmp_path_factory.mktemp(mode.split(".")[1].replace("+", "_"))
        runs[mode] = run_trainer(
            out,
            f"{PL}.loss_mode={loss_mode(mode)}",
            *overrides,
            *SAVE[mode],
            *LOADING,
            steps=STEPS[mode],
            env={"TENSORBOARD_DIR": str(out / "tensorboard")},
            label=f"{mode} verl {VERL}, {STEPS[mode]} steps",
        )
    return runs


@pytest.mark.parametrize("mode", list(MODES))
def test_every_step_completes_and_logs_the_mode_metrics(mode, mode_runs):
    run = mode_runs[mode]
    assert run.returncode == 0, run.log[-4000:]
    steps = run.steps()
    assert sorted(steps) == list(range(1, STEPS[mode] + 1))
    for step, data in steps.items():
        assert MODES[mode][1] <= set(data), (step, sorted(MODES[mode][1] - set(data)))
        assert all(math.isfinite(data[key]) for key in MODES[mode][1])
        assert data["critic/advantages/max"] > 0  # the reward separates responses: GRPO has a signal


@pytest.mark.parametrize("mode", ["verl_cov.clip_cov", "verl_cov.kl_cov"])
def test_the_methods_select_tokens_at_the_shares_set(mode, mode_runs):
    for step, data in mode_runs[mode].steps().items():
        assert 0 < data["actor/cov/selected_frac"] <= 0.3, (step, data["actor/cov/selected_frac"])


@pytest.mark.skipif(not V08, reason="the 80/20 rule needs verl >= 0.8")
@pytest.mark.parametrize("mode", list(FORKING_SHARE))
def test_the_80_20_rule_gives_the_gradient_to_the_top_share_by_entropy(mode, mode_runs):
    """At least the share ρ of tokens got the gradient, not all: more where ⌈ρ·N⌉ rounds up a micro-batch of
    few tokens and where entropies tie at the threshold (the first token of every response to one prompt has
    the same H_t); and verl's own actor/entropy_loss shows that the update forward computed H_t."""
    share = FORKING_SHARE[mode]
    for step, data in mode_runs[mode].steps().items():
        assert share <= data["actor/cov/forking_frac"] < 1, (step, data["actor/cov/forking_frac"])
        if "actor/cov/selected_frac" in data:  # KL-Cov selects among the forking tokens only
            assert 0 < data["actor/cov/selected_frac"] <= data["actor/cov/forking_frac"], step
        assert data["actor/entropy_loss"] > 0, step


@pytest.mark.parametrize("mode", list(MODES))
def test_the_loss_changes_the_weights_the_rollout_samples_from(mode, mode_runs):
    """The rollout server gets the actor's weights before every step's rollout: the first copy is the
    initial model, and each later one differs from the one before (the update moved the weights)."""
    run = mode_runs[mode]
    loads = run.trace("weights.jsonl")
    assert len(loads) >= 3
    fingerprints = [load["fingerprint"] for load in loads]
    assert fingerprints[0] == initial_fingerprint(run.out)
    assert all(later != earlier for earlier, later in zip(fingerprints, fingerprints[1:], strict=False))
    assert all(data["actor/grad_norm"] > 0 for data in run.steps().values())


@needs_09
def test_rollout_and_actor_agree_on_the_log_probs(mode_runs):
    """The transformers rollout samples from the weights the actor trains (verl compares their log-probs)."""
    for step, data in mode_runs["verl_cov.vanilla"].steps().items():
        assert data["training/rollout_actor_probs_pearson_corr"] > 0.99, step
        assert data["training/rollout_probs_diff_max"] < 1e-2, (step, data["training/rollout_probs_diff_max"])


def test_the_log_tool_reads_verls_console_file_and_tensorboard_logs_alike(mode_runs):
    """One real run, three of verl's loggers: the console text (Ray prefixes, colours, numpy values), the
    file logger and the TensorBoard files hold the same entropy and validation series, and the law's
    pairing leaves out the same points in each."""
    from verl_cov.analysis.discover import read_runs
    from verl_cov.analysis.keys import entropy_key, performance_keys
    from verl_cov.analysis.pairing import pair

    run = mode_runs["verl_cov.vanilla"]
    console, file_log, events = (
        read_runs(path)[0] for path in (run.out / "run.log", run.out / "metrics.jsonl", run.out / "tensorboard")
    )
    (score,) = performance_keys(file_log)
    assert score.startswith("val-core/digit_sum/") and score.endswith("/mean@1")
    assert sorted(file_log.series[score]) == [0, 1, 2, 3]  # before training and after each step
    for other in (console, events):
        assert entropy_key(other) == entropy_key(file_log) == "actor/entropy"
        assert performance_keys(other) == [score]
        for key in ("actor/entropy", score, "actor/cov/mean"):
            assert other.series[key].keys() == file_log.series[key].keys(), key
            for step, value in file_log.series[key].items():
                assert other.series[key][step] == pytest.approx(value, rel=1e-6), (key, step)
    points, left_out = pair(file_log.series["actor/entropy"], file_log.series[score])
    assert [(p.step, p.entropy_step) for p in points] == [(1, 2), (2, 3)]
    assert [item.step for item in left_out] == [0, 3]


def initial_fingerprint(out: Path) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "assets" / "model", torch_dtype=torch.float32)
    return [round(float(t.double().abs().sum()), 12) for _, t in sorted(model.state_dict().items())]


def test_a_bad_value_stops_the_launch_before_any_worker_starts(tmp_path):
    """verl 0.9 checks the config in the driver, before ray.init; verl 0.7 in its TaskRunner, before it
    creates the actor workers (WorkerDict)."""
    run = run_trainer(
        tmp_path,
        TARGET,
        f"{PL}.loss_mode=verl_cov.kl_cov",
        f"{PL}.kl_cov_ratio=0",
        *LOADING,
        label=f"bad value verl {VERL}",
    )
    assert run.returncode != 0
    assert f"{PL}.kl_cov_ratio=0 is out of range: must be (0, 1]" in run.log
    assert "(WorkerDict" not in run.log
    if V09:
        assert "ray init kwargs" not in run.log  # main_ppo prints it just before ray.init


@needs_09
def test_with_plugins_off_and_no_external_lib_the_launch_names_the_fix(tmp_path):
    run = run_trainer(
        tmp_path,
        TARGET,
        f"{PL}.loss_mode=verl_cov.kl_cov",
        env={"VERL_USE_EXTERNAL_PLUGINS": "none"},
        label="plugins off verl 0.9",
    )
    assert run.returncode != 0
    assert "loss_mode='verl_cov.kl_cov' is not registered in this process" in run.log
    assert "set actor_rollout_ref.model.external_lib=verl_cov.plugin" in run.log
    assert "ray init kwargs" not in run.log


# The global run's entropy target: H* falls linearly from 3.0 at step 1 to 2.95 at step 4, just above the
# tiny model's entropy (about 2.9 to 2.8 nats), so the controller raises the share, but not to 1 (every
# token selected would leave the selection test nothing to tell apart); with an integral term. It saves
# at step 2 for the resume test.
GLOBAL_STEPS = 4
TARGET_KEYS = [
    f"+{PL}.target_entropy=3.0",
    f"+{PL}.target_schedule=linear",
    f"+{PL}.target_entropy_end=2.95",
    f"+{PL}.target_schedule_steps={GLOBAL_STEPS}",
    f"+{PL}.target_integral_gain=0.5",
]
GLOBAL = [
    TARGET,
    f"{PL}.loss_mode=verl_cov.kl_cov",
    f"+{PL}.selection_scope=global",
    *TARGET_KEYS,
    f"{PL}.kl_cov_ratio=0.1",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "trainer.save_freq=2",
]


def scheduled_target(step: int) -> float:
    """H*(s) of ``TARGET_KEYS``, written out: 3 + (2.95 − 3)·(s − 1)/(4 − 1)."""
    return 3.0 + (2.95 - 3.0) * (step - 1) / (GLOBAL_STEPS - 1)


def per_mini_batch(records: list[dict], key: str) -> dict[int, list[dict]]:
    """Trace records grouped by their mini-batch (``key``), each mini-batch recorded on both ranks with one
    threshold."""
    mini_batches: dict[int, list[dict]] = {}
    for record in records:
        mini_batches.setdefault(record[key], []).append(record)
    for name, parts in mini_batches.items():
        assert {part["rank"] for part in parts} == {0, 1} and len({part["threshold"] for part in parts}) == 1, name
    return mini_batches


def joined(parts: list[dict], values: str, flags: str) -> list[tuple[float, bool]]:
    """(value, flag) of every token the records of one mini-batch list, both ranks together."""
    return [(value, flag) for part in parts for value, flag in zip(part[values], part[flags], strict=True)]


@pytest.fixture(scope="module")
def global_run(tmp_path_factory):
    """KL-Cov with selection_scope=global and a scheduled entropy target with an integral term, on 2
    data-parallel workers, each with 4 micro-batches of 2 responses per mini-batch."""
    if VERL < Version("0.8"):
        pytest.skip("selection_scope=global and target_entropy need verl >= 0.8")
    return run_trainer(
        tmp_path_factory.mktemp("global"),
        *GLOBAL,
        gpus=2,
        steps=GLOBAL_STEPS,
        label="global scope + scheduled target, 2 workers",
    )


def test_global_scope_and_target_run_in_the_real_workers(global_run):
    assert global_run.returncode == 0, global_run.log[-4000:]
    steps = global_run.steps()
    assert sorted(steps) == list(range(1, GLOBAL_STEPS + 1))
    integral = 0.0
    for step, data in steps.items():
        assert 0 < data["actor/cov/share"] <= 1, step
        assert 0 < data["actor/cov/batch_entropy"] < scheduled_target(step), step  # below H*: a larger share
        assert data["actor/cov/share"] > 0.1  # k·φ with φ > 1
        # The schedule's clock is the training step: verl's train_mini_batch calls, counted on each worker.
        assert data["actor/cov/target_entropy"] == pytest.approx(scheduled_target(step), rel=1e-9), step
        assert data["actor/cov/target_error"] == pytest.approx(
            data["actor/cov/batch_entropy"] - data["actor/cov/target_entropy"], abs=1e-6
        )
        assert data["actor/cov/target_skipped"] == 0.0
        assert data["actor/cov/target_integral"] > integral, step  # every mini-batch below H* adds e > 0
        integral = data["actor/cov/target_integral"]
        assert data["actor/cov/selected_frac"] > 0


def test_both_ranks_select_the_same_tokens(global_run):
    """Each rank records, per micro-batch, every valid token's score and whether it selected it. Per
    mini-batch (keyed by its salt, a hash of all ranks' sums) both ranks took part with one threshold,
    and the tokens selected on either rank are exactly the top of the whole mini-batch by score."""
    records = global_run.trace("selection.jsonl")
    assert records, "the engine hook never ran in the workers"
    mini_batches = per_mini_batch(records, "salt")
    assert len(mini_batches) == GLOBAL_STEPS * 2  # 2 mini-batches per step
    for salt, parts in mini_batches.items():
        assert len({part["n_valid"] for part in parts}) == 1, salt
        tokens = joined(parts, "score", "selected")
        assert len(tokens) == parts[0]["n_valid"]  # the micro-batches of both ranks cover the mini-batch once
        chosen = sorted(score for score, selected in tokens if selected)
        others = [score for score, selected in tokens if not selected]
        target = parts[0]["share"] * parts[0]["n_valid"]
        # floor(share·N) or one more, plus the tokens tied with the last one (selected together)
        above = sum(score > chosen[0] for score in chosen) if chosen else 0
        assert math.floor(target) <= len(chosen) and above <= math.floor(target), (len(chosen), above, target)
        assert chosen and chosen[0] >= max(others), salt
        per_rank = {rank: sum(sum(p["selected"]) for p in parts if p["rank"] == rank) for rank in (0, 1)}
        assert sum(per_rank.values()) == len(chosen)


def resumed_steps_match(whole, resumed) -> list[set[str]]:
    """The run resumed from step 2 trained steps 3 and 4 and logged there exactly what the uninterrupted 4-step
    run logged (every actor/ and critic/ key but timings); the keys compared, per step."""
    assert resumed.returncode == 0, resumed.log[-4000:]
    assert sorted(resumed.steps()) == [3, 4]
    compared_per_step = []
    for step in (3, 4):
        before, after = whole.steps()[step], resumed.steps()[step]
        compared = {key for key in before if key.startswith(("actor/", "critic/")) and "/perf/" not in key}
        assert {key: after[key] for key in compared} == {key: before[key] for key in compared}, step
        compared_per_step.append(compared)
    return compared_per_step


@needs_09
def test_a_resumed_run_logs_what_the_uninterrupted_run_logged(mode_runs, tmp_path):
    """The 4-step KL-Cov run saved at step 2; a second run resumed from that checkpoint logs the same
    values for steps 3 and 4: verl restores the data order, weights and optimizer, the rollout draws
    from (request, weight version), and verl-cov's selection is a function of (seed, tokens) alone."""
    whole = mode_runs["verl_cov.kl_cov"]
    checkpoint = whole.out / "checkpoints" / "global_step_2"
    assert checkpoint.is_dir()
    resumed = run_trainer(
        tmp_path,
        f"{PL}.loss_mode=verl_cov.kl_cov",
        *MODES["verl_cov.kl_cov"][0],
        *SAVE["verl_cov.kl_cov"],
        "trainer.resume_mode=resume_path",
        f"trainer.resume_from_path={checkpoint}",
        steps=4,
        label="verl_cov.kl_cov resumed from step 2",
    )
    for compared in resumed_steps_match(whole, resumed):
        assert {key for key in compared if key.startswith("actor/cov/")} >= MODES["verl_cov.kl_cov"][1]


def test_a_resumed_run_continues_the_targets_schedule_and_integral(global_run, tmp_path):
    """The global run saved the controller's state (step, integral I, Ĥ_0) with verl's checkpoint at step 2,
    one file per rank; a run resumed from it on 2 workers logs the same H*(s), I, share and selection at
    steps 3 and 4 as the uninterrupted run."""
    checkpoint = global_run.out / "checkpoints" / "global_step_2"
    states = [
        json.loads((checkpoint / "actor" / f"verl_cov_target_state_rank_{rank}.json").read_text()) for rank in (0, 1)
    ]
    assert states[0] == states[1] and states[0]["step"] == 2 and states[0]["integral"] > 0, states
    resumed = run_trainer(
        tmp_path,
        *GLOBAL,
        "trainer.resume_mode=resume_path",
        f"trainer.resume_from_path={checkpoint}",
        gpus=2,
        steps=GLOBAL_STEPS,
        label="global scope + scheduled target, resumed from step 2",
    )
    targets = {"actor/cov/target_entropy", "actor/cov/target_integral", "actor/cov/target_error", "actor/cov/share"}
    for compared in resumed_steps_match(global_run, resumed):
        assert targets <= compared


# KL-Cov among the 80/20 rule's forking tokens, both over the whole mini-batch of 2 workers: the forking threshold
# from one forward without gradient before the micro-batches (H_t of pi_theta), the KL-Cov threshold among them;
# dynamic batch sizes, so verl reorders the rows into micro-batches of at most 24 tokens.
FORKING_GLOBAL_STEPS = 2
FORKING_GLOBAL = [
    TARGET,
    f"{PL}.loss_mode=verl_cov.kl_cov",
    f"{PL}.kl_cov_ratio=0.2",
    f"+{PL}.forking_share=0.5",
    f"+{PL}.selection_scope=global",
    "actor_rollout_ref.actor.use_dynamic_bsz=True",
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24",
]


@pytest.fixture(scope="module")
def global_forking_run(tmp_path_factory):
    if VERL < Version("0.8"):
        pytest.skip("the 80/20 rule needs verl >= 0.8")
    return run_trainer(
        tmp_path_factory.mktemp("global_forking"),
        *FORKING_GLOBAL,
        gpus=2,
        steps=FORKING_GLOBAL_STEPS,
        label="KL-Cov + 80/20, global scope, 2 workers",
    )


def test_global_forking_tokens_are_the_top_share_of_the_whole_mini_batch(global_forking_run):
    """Each micro-batch's loss on either rank records its tokens' H_t and which are forking. Per mini-batch
    (one threshold on both ranks), the forking tokens of both ranks together are exactly
    those at or above the ⌈ρ·N⌉-th largest H_t of the whole mini-batch, and KL-Cov selected among them only."""
    run = global_forking_run
    assert run.returncode == 0, run.log[-4000:]
    steps = run.steps()
    assert sorted(steps) == list(range(1, FORKING_GLOBAL_STEPS + 1))
    for step, data in steps.items():
        assert 0 < data["actor/cov/selected_frac"] <= data["actor/cov/forking_frac"] < 1, step
    mini_batches = per_mini_batch(run.trace("forking.jsonl"), "mini_batch")
    assert sorted(mini_batches) == list(range(1, FORKING_GLOBAL_STEPS * 2 + 1))  # 2 mini-batches per step
    for number, parts in mini_batches.items():
        tokens = joined(parts, "entropy", "forking")
        # the micro-batches of both ranks cover the mini-batch's valid tokens once
        assert len(tokens) == sum({part["rank"]: part["rank_valid_tokens"] for part in parts}.values()), number
        ranked = sorted((h for h, _ in tokens), reverse=True)
        kth = ranked[math.ceil(0.5 * len(ranked)) - 1]
        assert [forking for _, forking in tokens] == [h >= kth for h, _ in tokens], number
    # KL-Cov's candidates are the forking tokens (the trace's "score" lists the eligible ones): the top k·N by
    # Cov_old among them, N all the valid tokens, over both ranks
    selections = per_mini_batch(run.trace("selection.jsonl"), "salt")
    assert len(selections) == FORKING_GLOBAL_STEPS * 2
    for salt, parts in selections.items():
        tokens = joined(parts, "score", "selected")
        assert len(tokens) < parts[0]["n_valid"]  # the forking tokens only
        chosen = [c for c, selected in tokens if selected]
        assert len(chosen) >= min(len(tokens), math.floor(0.2 * parts[0]["n_valid"])) > 0, salt
        assert min(chosen) >= max((c for c, selected in tokens if not selected), default=-math.inf), salt


@needs_09
def test_a_recipe_trains_through_its_own_launch_path(tmp_path):
    """``bash recipes/qwen2.5-7b-kl_cov.sh`` itself (the v1 trainer with DAPO dynamic sampling, the
    packaged overlay, the math-verify reward) pointed at the tiny model and data, on CPU: 2 steps."""
    from verl_cpu_harness import assets, launch

    data = assets.build(tmp_path / "assets")
    environment = {
        **os.environ,
        **launch.environment(tmp_path),
        "PYTHON": sys.executable,
        "MODEL_PATH": str(data / "model"),
        "TRAIN_FILE": str(data / "data" / "train.parquet"),
        "VAL_FILES": f"[{data / 'data' / 'val.parquet'}]",
        "NNODES": "1",
        "GPUS_PER_NODE": "1",
        "ROLLOUT_TP": "1",
        "LOGGER": "console",
        "OUT_DIR": str(tmp_path),
        "TOTAL_STEPS": "2",
        "MAX_PROMPT": "16",
        "MAX_RESPONSE": "4",
        "TOKENS_PER_GPU": "256",
        "KL_COV_RATIO": "0.2",
    }
    environment.pop("VERL_FILE_LOGGER_PATH")  # the recipe names its own log: $OUT_DIR/$EXPERIMENT.jsonl
    small = [
        "data.train_batch_size=8",
        "data.dataloader_num_workers=0",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.rollout.n=4",
    ]
    command = ["bash", str(REPO / "recipes" / "qwen2.5-7b-kl_cov.sh"), *launch.cpu_overrides(1), *small]
    run = run_command(command, tmp_path, environment, "recipe qwen2.5-7b-kl_cov.sh (v1 trainer)")
    assert run.returncode == 0, run.log[-4000:]
    records = [json.loads(line) for line in (tmp_path / "qwen2.5-7b-kl_cov.jsonl").read_text().splitlines()]
    steps = {record["step"]: record["data"] for record in records}
    assert sorted(steps) == [0, 1, 2]  # step 0: the recipe's val_before_train
    assert "val-core/digit_sum/acc/mean@1" in steps[0]
    for step in (1, 2):
        assert steps[step]["actor/cov/selected_frac"] > 0
        assert "training/filter_groups/evicted_samples" in steps[step]  # dynamic sampling ran


@pytest.mark.skipif(VERL != Version("0.9.1"), reason="contrib/verl's patch series targets verl 0.9.1")
def test_the_patched_builtin_kl_cov_trains_in_verls_trainer(tmp_path):
    """contrib/verl's series on a copy of verl, verl-cov's plugin off, its opt-in (OPT_IN.txt:
    cov_selection=hashed) on: verl's built-in kl_cov reads the new policy_loss keys from verl's own YAML and
    logs the series' actor/cov/ metrics through the trainer."""
    tree = apply_series(tmp_path / "verl-patched")
    run = run_trainer(
        tmp_path / "run",
        f"{PL}.loss_mode=kl_cov",
        f"{PL}.kl_cov_ratio=0.2",
        f"{PL}.seed=3",
        *opt_in_overrides(),
        env={
            "VERL_USE_EXTERNAL_PLUGINS": "none",
            "PYTHONPATH": os.pathsep.join([str(tree), str(HARNESS_ROOT)]),
        },
        label="patched verl 0.9.1, built-in kl_cov",
    )
    assert run.returncode == 0, run.log[-4000:]
    steps = run.steps()
    assert sorted(steps) == [1, 2, 3]  # the unpatched verl refuses policy_loss.seed and has no actor/cov/
    for step, data in steps.items():
        assert {"actor/cov/mean", "actor/cov/micro_batch_peak", "actor/cov/selected_frac"} <= data.keys(), step
        assert 0.1 < data["actor/cov/selected_frac"] < 0.3, step  # k = 0.2 of each micro-batch's tokens
