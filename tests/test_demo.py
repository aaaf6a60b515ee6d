"""The CPU study: the task's verifier, exact held-out evaluation, the mode configs, and a short run."""

import json
import math

import pytest
import torch
from verl_support import HAS_ENGINE_LOSS

if not HAS_ENGINE_LOSS:
    pytest.skip("the CPU study drives verl's engine ppo_loss (verl >= 0.7)", allow_module_level=True)

from verl_cov.cli import main  # noqa: E402
from verl_cov.config import CovPolicyLossConfig  # noqa: E402
from verl_cov.study import task  # noqa: E402
from verl_cov.study.modes import PAPER_CLIP_COV_RATIO, PAPER_KL_COV_RATIO, actor_config, token_scale  # noqa: E402
from verl_cov.study.policy import build_policy, sample  # noqa: E402
from verl_cov.study.rl import PERF_KEY, RunConfig, Study, evaluate  # noqa: E402
from verl_cov.study.runs import run_study  # noqa: E402


@pytest.mark.parametrize(
    "x, y, response, correct",
    [
        (3, 4, "0 7", True),
        (3, 4, "9 8", True),  # 17 ≡ 7 (mod 10)
        (3, 4, "3 4", False),  # copying the prompt
        (3, 4, "4 3", False),
        (3, 4, "0 6", False),
        (3, 4, "0 7 1", False),
        (3, 4, "= 7", False),
        (5, 5, "0 0", True),
    ],
)
def test_verifier(x, y, response, correct):
    assert task.is_correct(x, y, response) is correct


def test_every_prompt_has_several_answers_and_the_split_mirrors():
    for x in range(10):
        for y in range(10):
            answers = task.correct_answers(x, y)
            assert len(answers) == (9 if x == y else 8)
            assert all(task.is_correct(x, y, f"{a} {b}") for a, b in answers)
    train, held_out = task.split_prompts()
    assert len(held_out) == task.HELD_OUT and not set(train) & set(held_out)
    assert all((y, x) in train for x, y in held_out)
    assert task.split_prompts() == (train, held_out)


def test_exact_evaluation_matches_sampling():
    study = Study()
    model = build_policy(study.vocab_size, seed=3)
    exact = evaluate(model, study, RunConfig())[PERF_KEY]
    pairs = [pair for pair in study.held_out for _ in range(2000)]
    responses = sample(model, study.encode(pairs), task.RESPONSE_LEN, torch.Generator().manual_seed(0))
    sampled = study.rewards(pairs, responses).mean().item()
    assert sampled == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / len(pairs)))


def test_mode_configs_are_verl_actor_configs_with_the_stated_scaling():
    tokens = 64 * task.RESPONSE_LEN
    clip = actor_config("clip_cov", seed=5, mini_batch_responses=64, samples_per_prompt=8, response_len=2)
    kl = actor_config("kl_cov", seed=5, mini_batch_responses=64, samples_per_prompt=8, response_len=2)
    grpo = actor_config("grpo", seed=5, mini_batch_responses=64, samples_per_prompt=8, response_len=2)
    assert isinstance(clip.policy_loss, CovPolicyLossConfig) and clip.policy_loss.seed == 5
    assert clip.policy_loss.clip_cov_ratio * tokens == pytest.approx(1.0)  # one cut token per mini-batch
    assert kl.policy_loss.kl_cov_ratio == pytest.approx(PAPER_KL_COV_RATIO * token_scale(tokens))
    assert kl.policy_loss.kl_cov_ratio / clip.policy_loss.clip_cov_ratio == pytest.approx(
        PAPER_KL_COV_RATIO / PAPER_CLIP_COV_RATIO
    )
    assert (clip.clip_ratio_low, clip.clip_ratio_high, kl.policy_loss.ppo_kl_coef) == (1.0, 1.0, 1.0)
    assert grpo.policy_loss.loss_mode == "verl_cov.vanilla" and grpo.clip_ratio == 0.2


def test_short_study_writes_logs_summary_and_plots(tmp_path, capsys):
    summary = run_study(tmp_path, RunConfig(steps=8, eval_every=2), progress=False)
    for mode in ("grpo", "clip_cov", "kl_cov"):
        lines = [json.loads(line) for line in (tmp_path / f"{mode}.jsonl").read_text().splitlines()]
        assert [line["step"] for line in lines] == list(range(9))
        for line in lines[1:]:
            assert all(math.isfinite(v) for v in line["data"].values())
            assert {"actor/entropy", "actor/pg_loss", "actor/cov/mean", "critic/score/mean"} <= set(line["data"])
        row = summary["modes"][mode]
        assert {"a", "b", "r2", "ceiling", "final_entropy", "final_pass@1", "final_pass@8"} <= set(row)
        assert row["n_points"] == 4
    assert "actor/cov/selected_frac" in lines[-1]["data"]  # kl_cov logs what it selected
    for mode in set(summary["modes"]) - {"grpo", "clip_cov", "kl_cov"}:  # the entropy-target runs (verl >= 0.8)
        last = json.loads((tmp_path / f"{mode}.jsonl").read_text().splitlines()[-1])["data"]
        assert last["actor/cov/target_entropy"] == 1.0 and 0 < last["actor/cov/share"] <= 1
        assert math.isclose(last["actor/cov/batch_entropy"], last["actor/entropy"], rel_tol=0.5)
    assert json.loads((tmp_path / "summary.json").read_text())["modes"].keys() == summary["modes"].keys()
    for png in ("entropy_accuracy.png", "entropy_law.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert main(["fit", str(tmp_path / "grpo.jsonl"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_points"] == 4


def test_same_seed_same_study(tmp_path):
    first = run_study(tmp_path / "a", RunConfig(steps=3, eval_every=1), modes=("clip_cov",), progress=False)
    again = run_study(tmp_path / "b", RunConfig(steps=3, eval_every=1), modes=("clip_cov",), progress=False)
    assert (tmp_path / "a" / "clip_cov.jsonl").read_text() == (tmp_path / "b" / "clip_cov.jsonl").read_text()
    assert first["modes"]["clip_cov"]["final_entropy"] == again["modes"]["clip_cov"]["final_entropy"]


def test_demo_command_rejects_bad_flags(capsys):
    assert main(["demo", "--modes", "grpo,ppo"]) == 2
    assert "unknown --modes ppo" in capsys.readouterr().err
    assert main(["demo", "--steps", "0"]) == 2
