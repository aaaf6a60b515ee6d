"""The study's robustness check (marker ``study``; the CI runs it once, on the newest tested verl): the
default study on 2 seeds x 2 CPU kernel paths, each run its own process with one torch thread. On every run
GRPO's entropy collapses and both methods end at least 3x above it (the issue's bar); a change that loses
the effect on one seed or one floating-point path fails here, and so does one that keeps the entropy by not
learning (held-out pass@8 below GRPO's on the mean). A regression test on seeds the design was checked on:
the robustness over 8 seeds x 3 paths, and its known limit (KL-Cov's entropy still falls after step 300), is
docs/study.md's."""

import pytest
import torch

from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH

if not HAS_ENGINE_TRAIN_BATCH:
    pytest.skip("run once per CI, on verl >= 0.8 (the study's loss path is the same on 0.7)", allow_module_level=True)

from verl_cov.study.modes import PAPER_MODES  # noqa: E402
from verl_cov.study.rl import RunConfig  # noqa: E402
from verl_cov.study.seeds import run_seeds  # noqa: E402

pytestmark = pytest.mark.study
SEEDS = [0, 1]
KERNELS = ("native", "default")  # this CPU's widest vector kernels, and none
# End-of-run entropy as a multiple of GRPO's: on the docs' machine these 4 runs are 14.5x to 18.7x (Clip-Cov)
# and 8.6x to 10.8x (KL-Cov; docs/study.md, where the worst of 24 runs are 6.7x and 4.7x); room for another CPU.
ABOVE_GRPO = {"clip_cov": 3.0, "kl_cov": 3.0}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return run_seeds(tmp_path_factory.mktemp("robust"), RunConfig(), PAPER_MODES, SEEDS, jobs=2, kernels=KERNELS)


def test_each_run_took_its_kernel_path(runs):
    assert runs["default/0"]["cpu_capability"] == "DEFAULT"
    assert runs["native/0"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize("label", [f"{kernel}/{seed}" for kernel in KERNELS for seed in SEEDS])
def test_grpo_collapses_and_both_methods_keep_entropy(runs, label):
    modes = runs[label]["modes"]
    grpo = modes["grpo"]
    assert grpo["end_entropy"] < 0.25 * grpo["start_entropy"], grpo  # GRPO's collapse
    for method, above in ABOVE_GRPO.items():
        assert modes[method]["end_entropy"] > above * grpo["end_entropy"], (method, modes[method], grpo)


@pytest.mark.parametrize("method", ["clip_cov", "kl_cov"])
def test_both_methods_reach_grpos_held_out_pass_at_8_on_the_mean(runs, method):
    passk = {mode: sum(run["modes"][mode]["final_pass@8"] for run in runs.values()) / len(runs) for mode in PAPER_MODES}
    assert passk[method] >= passk["grpo"], passk
