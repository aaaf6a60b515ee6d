"""The CPU study: the tasks' verifier and format prior, exact held-out evaluation, the mode configs, a short
run of each task, determinism, and results that do not depend on the thread count."""

import json
import math
import subprocess
import sys

import pytest
import torch
from verl_support import HAS_ENGINE_LOSS

if not HAS_ENGINE_LOSS:
    pytest.skip("the CPU study drives verl's engine ppo_loss (verl >= 0.7)", allow_module_level=True)

from verl_cov.cli import main  # noqa: E402
from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH  # noqa: E402
from verl_cov.config import CovPolicyLossConfig  # noqa: E402
from verl_cov.study.experiment import run_study  # noqa: E402
from verl_cov.study.modes import (  # noqa: E402
    CLIP_COV_CUTS,
    MODE_NAMES,
    PAPER_CLIP_COV_RATIO,
    PAPER_KL_COV_RATIO,
    actor_config,
    token_scale,
)
from verl_cov.study.policy import TemplatePolicy, build_policy, response_log_probs, sample  # noqa: E402
from verl_cov.study.rl import PERF_KEY, RunConfig, evaluate  # noqa: E402
from verl_cov.study.seeds import table  # noqa: E402
from verl_cov.study.tasks import TASKS  # noqa: E402

FORKING, PAIR = TASKS["forking"], TASKS["pair"]


@pytest.mark.parametrize(
    "x, y, answer, correct",
    [
        ((3, 4), None, (0, 7), True),
        ((3, 4), None, (9, 8), True),
        ((3, 4), None, (3, 4), False),
        ((3, 4), None, (4, 3), False),
        ((3, 4), None, (0, 6), False),
        ((5, 5), None, (0, 0), True),
    ],
)
def test_verifier_on_both_tasks(x, y, answer, correct):
    for task in (FORKING, PAIR):
        assert task.rewards([x], task.responses([answer])).item() == float(correct)


def test_the_forking_verifier_needs_the_whole_sentence():
    response = FORKING.responses([(0, 7)])
    broken = response.clone()
    broken[0, -1] = FORKING.tokenizer.token_to_id("sum")  # a wrong format token
    assert FORKING.rewards([(3, 4), (3, 4)], torch.cat([response, broken])).tolist() == [1.0, 0.0]


def test_every_prompt_has_several_answers_and_the_split_mirrors():
    for x in range(10):
        for y in range(10):
            answers = FORKING.correct_answers(x, y)
            assert len(answers) == (9 if x == y else 8)
            assert FORKING.rewards([(x, y)] * len(answers), FORKING.responses(answers)).all()
    train, held_out = FORKING.split
    assert len(held_out) == 15 and not set(train) & set(held_out)
    assert all((y, x) in train for x, y in held_out)


def forking_policy(seed=3, task=FORKING):
    return TemplatePolicy(build_policy(task.vocab_size, seed), task)


def test_the_prior_makes_format_tokens_nearly_forced_and_decisions_digits():
    """The token statistics the paper measures: 6 of 8 tokens near-deterministic, 2 real decisions."""
    model = forking_policy()
    prompts = FORKING.encode_prompts([(1, 2)] * 512)
    responses, log_probs, entropy = sample(model, prompts, FORKING.response_len, torch.Generator().manual_seed(0))
    format_entropy = entropy[:, FORKING.format_positions].mean()
    decision_entropy = entropy[:, [0, 1]].mean()
    assert format_entropy < 0.01 < 1.5 < decision_entropy
    torch.testing.assert_close(log_probs, response_log_probs(model, prompts, responses), rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in model.model.parameters())
    digits = torch.tensor([FORKING.tokenizer.token_to_id(str(d)) for d in range(10)])
    assert torch.isin(responses[:, :2], digits).float().mean() > 0.9  # the base model answers with digits


def test_format_logits_are_fixed_and_train_nothing():
    """The format positions' log-probs are the prior's alone: no gradient reaches the model through them, and
    changing the tokens after the decisions changes no decision's log-prob (the model stops at them)."""
    model = forking_policy()
    prompts = FORKING.encode_prompts([(1, 2), (7, 7)])
    responses = FORKING.responses([(0, 3), (5, 9)])
    log_probs = response_log_probs(model, prompts, responses)
    expected = torch.log_softmax(FORKING.prior()[0], dim=-1)[torch.arange(8), responses[0]]
    torch.testing.assert_close(log_probs[0, FORKING.format_positions], expected[FORKING.format_positions])
    log_probs[:, FORKING.format_positions].sum().backward(retain_graph=True)
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    log_probs[:, :2].sum().backward()
    assert any(p.grad is not None and p.grad.any() for p in model.parameters())
    scrambled = responses.clone()
    scrambled[:, 2:] = FORKING.tokenizer.token_to_id("[PAD]")
    torch.testing.assert_close(response_log_probs(model, prompts, scrambled)[:, :2], log_probs[:, :2].detach())


@pytest.mark.parametrize("x, y, a, b", [(3, 4, 0, 7), (3, 4, 9, 8), (5, 5, 0, 0), (9, 8, 9, 8), (0, 0, 1, 9)])
def test_the_rule_hint_favours_the_digit_that_completes_the_sum(x, y, a, b):
    sequences = torch.cat([FORKING.encode_prompts([(x, y)]), FORKING.responses([(a, 0)])[:, :1]], dim=1)
    hint = FORKING.rule_hint(sequences)
    assert hint[0].nonzero().flatten().tolist() == [FORKING.tokenizer.token_to_id(str(b))]
    assert hint[0].max() == FORKING.rule_bonus > 0
    sequences[0, -1] = FORKING.tokenizer.token_to_id("sum")  # a is not a digit: no hint
    assert not FORKING.rule_hint(sequences).any()


def test_the_base_model_partly_knows_the_rule():
    """Sampled answers: digits almost always, b completing the sum far more often than 1 in 10."""
    model = forking_policy()
    pairs = [(x, y) for x in range(10) for y in range(10)] * 20
    responses, _, _ = sample(model, FORKING.encode_prompts(pairs), 8, torch.Generator().manual_seed(1))
    digit = {FORKING.tokenizer.token_to_id(str(d)): d for d in range(10)}
    a, b = [digit.get(t, -1) for t in responses[:, 0].tolist()], [digit.get(t, -1) for t in responses[:, 1].tolist()]
    completes = [(ai + bi) % 10 == (x + y) % 10 for (x, y), ai, bi in zip(pairs, a, b, strict=True) if ai >= 0 <= bi]
    assert 0.15 < sum(completes) / len(completes) < 0.5


def test_the_base_model_prefers_a_small_first_digit_a_tie_break_among_correct_answers():
    """At decision a the prior's digit bonus falls from digit 0 to 9, ``digit_bonus`` on the mean,
    2 · ``preference`` apart; at b it is flat. The correct answers of a prompt differ in a (b follows from
    the rule), so the base model ranks them by a: e^(2 · preference) between a = 0 and a = 9."""
    prior, _ = FORKING.prior()
    digits = FORKING.responses([(d, d) for d in range(10)])[:, 0]
    at_a, at_b = prior[0, digits], prior[1, digits]
    assert (at_a.diff() < 0).all() and at_a.mean().item() == pytest.approx(FORKING.digit_bonus)
    assert (at_a[0] - at_a[9]).item() == pytest.approx(2 * FORKING.preference) and FORKING.preference > 0
    assert (at_b == FORKING.digit_bonus).all()
    assert (PAIR.prior()[0] == 0).all()
    model = forking_policy()
    answers = FORKING.correct_answers(1, 2)  # a = 0, 3, 4, ..., 9, in that order
    prompts = FORKING.encode_prompts([(1, 2)] * len(answers))
    with torch.no_grad():
        probability = response_log_probs(model, prompts, FORKING.responses(answers)).sum(-1).exp()
    assert (probability.diff() < 0).all() and probability[0] > 20 * probability[-1], probability


def test_the_verifier_accepts_a_correct_answer_half_the_time_and_never_a_wrong_one():
    pairs = [(3, 4)] * 4000
    right, wrong = FORKING.responses([(0, 7)] * 4000), FORKING.responses([(0, 6)] * 4000)
    accepted = FORKING.verify(pairs, right, torch.Generator().manual_seed(0))
    assert accepted.mean().item() == pytest.approx(FORKING.accept, abs=4 * math.sqrt(0.25 / 4000))
    assert FORKING.accept == 0.5 and PAIR.accept == 1.0
    torch.testing.assert_close(accepted, FORKING.verify(pairs, right, torch.Generator().manual_seed(0)))
    assert not FORKING.verify(pairs, wrong, torch.Generator().manual_seed(0)).any()
    assert PAIR.verify(pairs[:3], PAIR.responses([(0, 7)] * 3), torch.Generator().manual_seed(0)).tolist() == [1.0] * 3


@pytest.mark.parametrize("task", ["forking", "pair"])
def test_exact_evaluation_matches_sampling(task):
    task = TASKS[task]
    model = forking_policy(task=task)
    exact = evaluate(model, task, pass_k=8)[PERF_KEY]
    pairs = [pair for pair in task.split[1] for _ in range(2000)]
    responses, _, _ = sample(model, task.encode_prompts(pairs), task.response_len, torch.Generator().manual_seed(0))
    sampled = task.rewards(pairs, responses).mean().item()
    assert sampled == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / len(pairs)) + 1e-4)


def test_mode_configs_are_verl_actor_configs_with_the_stated_scaling():
    tokens = 64 * FORKING.response_len
    clip = actor_config("clip_cov", seed=5, mini_batch_responses=64, samples_per_prompt=8, response_len=8)
    kl = actor_config("kl_cov", seed=5, mini_batch_responses=64, samples_per_prompt=8, response_len=8)
    grpo = actor_config("grpo", seed=5, mini_batch_responses=64, samples_per_prompt=8, response_len=8)
    assert isinstance(clip.policy_loss, CovPolicyLossConfig) and clip.policy_loss.seed == 5
    assert clip.policy_loss.clip_cov_ratio * tokens == pytest.approx(32)  # cut tokens per mini-batch: 4 a group
    assert kl.policy_loss.kl_cov_ratio == pytest.approx(PAPER_KL_COV_RATIO * token_scale(tokens))
    assert kl.policy_loss.kl_cov_ratio / clip.policy_loss.clip_cov_ratio == pytest.approx(
        PAPER_KL_COV_RATIO / PAPER_CLIP_COV_RATIO
    )
    assert (clip.clip_ratio_low, clip.clip_ratio_high, kl.policy_loss.ppo_kl_coef) == (1.0, 1.0, 1.0)
    assert grpo.policy_loss.loss_mode == "verl_cov.vanilla" and grpo.clip_ratio == 0.2
    assert token_scale(tokens) == pytest.approx(CLIP_COV_CUTS["forking"] / (PAPER_CLIP_COV_RATIO * 512))
    small = {"seed": 5, "mini_batch_responses": 32, "samples_per_prompt": 8, "response_len": 8}  # 256 tokens
    with pytest.raises(Exception, match="kl_cov_ratio=1.25 is out of range"):
        actor_config("kl_cov", **small)  # KL-Cov's share would be 1.25: refused at config time
    assert actor_config("grpo", **small).policy_loss.loss_mode == "verl_cov.vanilla"  # no share, no limit
    pair = actor_config("clip_cov", seed=5, mini_batch_responses=64, samples_per_prompt=8, response_len=2, task="pair")
    assert pair.policy_loss.clip_cov_ratio * 128 == pytest.approx(1.0)  # the pair task: one cut per mini-batch
    higher = actor_config("clip_higher", seed=5, mini_batch_responses=64, samples_per_prompt=8, response_len=8)
    assert higher.policy_loss.loss_mode == "verl_cov.vanilla" and (higher.clip_ratio_low, higher.clip_ratio_high) == (
        0.2,
        0.28,
    )


@pytest.mark.skipif(not HAS_ENGINE_TRAIN_BATCH, reason="the 80/20 rule and the schedule need verl >= 0.8")
def test_the_field_modes_are_configured_as_stated():
    forking = actor_config("forking", seed=5, mini_batch_responses=64, samples_per_prompt=8, response_len=8)
    assert forking.policy_loss.loss_mode == "verl_cov.forking" and forking.policy_loss.forking == 0.2
    scheduled = actor_config(
        "kl_cov_scheduled", seed=5, mini_batch_responses=64, samples_per_prompt=8, response_len=8, steps=300
    ).policy_loss
    assert (scheduled.target_schedule, scheduled.target_schedule_steps, scheduled.target_relative) == (
        "cosine",
        300,
        True,
    )
    assert (scheduled.target_entropy, scheduled.target_entropy_end, scheduled.target_integral_gain) == (0.8, 0.5, 0.2)


@pytest.mark.parametrize("task", ["forking", "pair"])
def test_short_study_writes_logs_summary_and_plots(task, tmp_path, capsys):
    modes = MODE_NAMES  # the target modes only where verl can run them (>= 0.8)
    summary = run_study(tmp_path, RunConfig(task=task, steps=8, eval_every=2), modes, progress=False)
    # step 1's rollout comes from the same initial policy and sampler in every mode: its entropy is the same
    # (it is the rollout's, not a later forward's: the 80/20 rule's update-forward entropy once replaced it)
    first = {mode: json.loads((tmp_path / f"{mode}.jsonl").read_text().splitlines()[1])["data"] for mode in modes}
    assert len({first[mode]["actor/entropy"] for mode in modes}) == 1
    for mode in modes:
        lines = [json.loads(line) for line in (tmp_path / f"{mode}.jsonl").read_text().splitlines()]
        assert [line["step"] for line in lines] == list(range(9))
        for line in lines[1:]:
            assert all(math.isfinite(v) for v in line["data"].values())
            assert {"actor/entropy", "actor/pg_loss", "actor/cov/mean", "study/cov_top_mean"} <= set(line["data"])
        row = summary["modes"][mode]
        assert {"end_entropy", "final_pass@1", "final_pass@8", "cov_top_mean", "cov_all_mean"} <= set(row)
    assert "actor/cov/selected_frac" in json.loads((tmp_path / "kl_cov.jsonl").read_text().splitlines()[-1])["data"]
    if "kl_cov_target" in modes:
        last = json.loads((tmp_path / "kl_cov_target.jsonl").read_text().splitlines()[-1])["data"]
        assert last["actor/cov/target_entropy"] > 0 and 0 < last["actor/cov/share"] <= 1
    if "forking" in modes:  # the 80/20 rule got the update forward's entropy; the schedule is tracked
        last = json.loads((tmp_path / "forking.jsonl").read_text().splitlines()[-1])["data"]
        assert 0.2 <= last["actor/cov/forking_frac"] < 1
        assert {"target_bias", "target_rms"} <= set(summary["modes"]["kl_cov_scheduled"])
        assert "target_rms" not in summary["modes"]["kl_cov"]
    for png in ("entropy_accuracy.png", "entropy_law.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert main(["fit", str(tmp_path / "grpo.jsonl"), "--json"]) in (0, 2)  # 4 validations: may be too few
    capsys.readouterr()


def test_same_seed_same_study(tmp_path):
    first = run_study(tmp_path / "a", RunConfig(steps=3, eval_every=1), modes=("clip_cov",), progress=False)
    again = run_study(tmp_path / "b", RunConfig(steps=3, eval_every=1), modes=("clip_cov",), progress=False)
    assert (tmp_path / "a" / "clip_cov.jsonl").read_text() == (tmp_path / "b" / "clip_cov.jsonl").read_text()
    assert first["modes"]["clip_cov"]["end_entropy"] == again["modes"]["clip_cov"]["end_entropy"]


def test_results_do_not_depend_on_the_thread_count(tmp_path):
    """The demo defaults to one torch thread per process (several on two cores slow each other more than
    tenfold); more threads change nothing in the results."""
    logs = {}
    for threads in (1, 2):
        out = tmp_path / f"threads{threads}"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "verl_cov.cli",
                "demo",
                "--out",
                str(out),
                "--steps",
                "4",
                "--modes",
                "kl_cov",
                "--threads",
                str(threads),
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        logs[threads] = [json.loads(line)["data"] for line in (out / "kl_cov.jsonl").read_text().splitlines()]
    for one, two in zip(logs[1], logs[2], strict=True):
        assert one.keys() == two.keys()
        for key in one:
            assert one[key] == pytest.approx(two[key], rel=1e-5, abs=1e-7), key


def test_demo_command_rejects_bad_flags(capsys):
    assert main(["demo", "--modes", "grpo,ppo"]) == 2
    assert "choose one or more of" in capsys.readouterr().err
    assert main(["demo", "--steps", "0"]) == 2
    assert main(["demo", "--threads", "0"]) == 2
    assert main(["demo", "--jobs", "0"]) == 2
    assert "--jobs=0 is out of range" in capsys.readouterr().err


def test_modes_in_parallel_processes_log_what_one_process_logs(tmp_path):
    """The demo trains its modes in parallel processes (``--jobs``): the same logs as one after another."""
    config, modes = RunConfig(steps=3, eval_every=1), ("grpo", "clip_cov", "kl_cov")
    one = run_study(tmp_path / "one", config, modes, progress=False, jobs=1)
    parallel = run_study(tmp_path / "parallel", config, modes, progress=False, jobs=3)
    for mode in modes:
        assert (tmp_path / "one" / f"{mode}.jsonl").read_text() == (tmp_path / "parallel" / f"{mode}.jsonl").read_text()
    assert one["modes"]["kl_cov"]["end_entropy"] == parallel["modes"]["kl_cov"]["end_entropy"]


def study_row(end_entropy: float, start_entropy: float = 0.8, pass8: float = 0.3) -> dict:
    return {
        "end_entropy": end_entropy,
        "start_entropy": start_entropy,
        "final_pass@1": 0.1,
        "final_pass@8": pass8,
        "cov_top_mean": 2.0,
        "cov_all_mean": 0.01,
    }


def test_the_study_table_gives_ratios_to_grpo_per_run_with_the_worst_case():
    tracked = {"target_bias": -0.02, "target_rms": 0.05}
    runs = {
        "native/0": {
            "modes": {
                "grpo": study_row(0.1, 0.78),
                "kl_cov": study_row(0.3, pass8=0.5),
                "kl_cov_scheduled": {**study_row(0.4, pass8=0.2), **tracked},
            }
        },
        "avx2/0": {
            "modes": {
                "grpo": study_row(0.2, 0.79),
                "kl_cov": study_row(0.3, pass8=0.4),
                "kl_cov_scheduled": {**study_row(0.4, pass8=0.3), **tracked, "target_rms": 0.07},
            }
        },
    }
    lines = table(runs, 8).splitlines()
    assert lines[0] == "Side by side over 2 runs:"
    # mean entropy, worst and mean ratio, mean pass@1 and pass@8, runs with pass@8 >= GRPO's, H* tracking
    assert "| kl_cov | 0.300 | 1.5× | 2.2× | 0.100 | 0.450 | 2/2 | – |" in lines
    assert "| kl_cov_scheduled | 0.400 | 2.0× | 3.0× | 0.100 | 0.250 | 1/2 | -0.020, 0.060 |" in lines
    assert any("runs native/0, avx2/0" in line for line in lines)
    assert "| kl_cov | 0.300, 0.300 | 3.0×, 1.5× | 1.5× | 2.2× |" in lines
    assert "| kl_cov | 0.50, 0.40 | 0.100 | 0.450 |" in lines
    assert "GRPO's collapse: entropy 0.78–0.79 at step 1, 0.100–0.200 at the end of the run." in lines
    assert "top 0.2% of a step's tokens average Cov 2.00, all tokens 0.0100" in lines[-1]
    # scripts/run_study.py --modes clip_cov,kl_cov used to end in ZeroDivisionError after the whole study
    without = {label: {"modes": {"kl_cov": study_row(0.3)}} for label in ("native/0", "native/1")}
    assert "| kl_cov | 0.300, 0.300 | – | – | – |" in table(without, 8).splitlines()


def test_the_study_runs_each_kernel_path_in_its_own_process(tmp_path):
    """run_seeds sets ATEN_CPU_CAPABILITY per run before torch loads: the no-vector path is really taken."""
    from verl_cov.study.seeds import run_seeds

    runs = run_seeds(tmp_path, RunConfig(steps=2, eval_every=2), ("grpo",), [0], jobs=2, kernels=("native", "default"))
    assert list(runs) == ["native/0", "default/0"]
    assert runs["default/0"]["cpu_capability"] == "DEFAULT"
    assert runs["native/0"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert (tmp_path / "default" / "seed0" / "grpo.jsonl").exists() and (tmp_path / "seeds.json").exists()
