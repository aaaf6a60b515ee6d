"""The study's figures: entropy and held-out accuracy over steps per mode, and R against H with the law."""

from __future__ import annotations

from pathlib import Path

from verl_cov.analysis.law import LawFit
from verl_cov.analysis.plots import plot_compare, pyplot, save
from verl_cov.analysis.run_log import RunLog
from verl_cov.study.rl import PERF_KEY


def plot_study(
    out: Path, runs: list[RunLog], fits: list[LawFit | None], pass_k: int, targets: dict[str, float]
) -> list[Path]:
    """``entropy_accuracy.png`` and ``entropy_law.png`` in ``out`` from the study's runs and fitted laws;
    each target run's H* (as it logged it, a schedule too) is drawn dotted; ``targets`` (mode: constant H*)
    marks the constant ones on the law's plot."""
    figure, axes = pyplot().subplots(1, 3, figsize=(15, 4.2))
    for run in runs:
        steps, entropy = run.get("actor/entropy")
        color = axes[0].plot(steps, entropy, label=run.name)[0].get_color()
        if "actor/cov/target_entropy" in run.keys():
            target_steps, target = run.get("actor/cov/target_entropy")
            axes[0].plot(target_steps, target, color=color, ls=":", lw=1.2, label=f"{run.name}: H*")
        for axis, key in ((axes[1], PERF_KEY), (axes[2], f"val-aux/sum/acc/pass@{pass_k}")):
            eval_steps, values = run.get(key)
            axis.plot(eval_steps, values, marker="o", ms=3, color=color, label=run.name)
    axes[0].set(xlabel="step", ylabel="entropy (nats per token)", title="policy entropy")
    axes[1].set(xlabel="step", ylabel="held-out pass@1", title="held-out pass@1 (temperature 1)")
    axes[2].set(xlabel="step", ylabel=f"held-out pass@{pass_k}", title=f"held-out pass@{pass_k}")
    for axis in axes:
        axis.legend(fontsize=8)
    curves = save(figure, out / "entropy_accuracy.png")
    law = plot_compare(runs, fits, ["actor/entropy"] * len(runs), out / "entropy_law.png", targets)
    return [curves, law]
