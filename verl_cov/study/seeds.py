"""The study on several seeds at once, one process per seed (each with one torch thread), and the
markdown table the docs show: per-seed end-of-run entropy and its ratio to GRPO, held-out pass@1 and
pass@k, and where the covariance sits (the paper's top-share statistic)."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from verl_cov.study.experiment import run_study
from verl_cov.study.rl import TOP_SHARE, RunConfig


def _one_seed(job: tuple[Path, RunConfig, tuple[str, ...]]) -> dict:
    import torch

    torch.set_num_threads(1)
    out, config, modes = job
    return run_study(out, config, modes, progress=False)


def run_seeds(out: Path, config: RunConfig, modes: tuple[str, ...], seeds: list[int], jobs: int) -> dict[int, dict]:
    """``out/seed<s>`` per seed (logs, summary.json, plots); the summaries by seed."""
    work = [(out / f"seed{seed}", RunConfig(**{**config.__dict__, "seed": seed}), modes) for seed in seeds]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        summaries = dict(zip(seeds, pool.map(_one_seed, work), strict=True))
    (out / "seeds.json").write_text(json.dumps({seed: s["modes"] for seed, s in summaries.items()}, indent=1))
    return summaries


def table(summaries: dict[int, dict], pass_k: int) -> str:
    seeds = sorted(summaries)
    modes = list(summaries[seeds[0]]["modes"])
    rows = [
        f"| mode | end-of-run entropy (seeds {', '.join(map(str, seeds))}) | × GRPO per seed | × GRPO (mean) "
        f"| pass@1 (mean) | pass@{pass_k} (mean) |",
        "|---|---|---|---|---|---|",
    ]
    grpo = [summaries[s]["modes"]["grpo"] for s in seeds] if "grpo" in modes else []
    for mode in modes:
        entropy = [summaries[s]["modes"][mode]["end_entropy"] for s in seeds]
        per_seed, mean = _ratio_cells(entropy, [row["end_entropy"] for row in grpo])
        pass1 = sum(summaries[s]["modes"][mode]["final_pass@1"] for s in seeds) / len(seeds)
        passk = sum(summaries[s]["modes"][mode][f"final_pass@{pass_k}"] for s in seeds) / len(seeds)
        rows.append(
            f"| {mode} | {', '.join(f'{e:.3f}' for e in entropy)} | {per_seed} | {mean} | {pass1:.3f} | {passk:.3f} |"
        )
    if grpo:
        top = [row["cov_top_mean"] for row in grpo]
        every = [row["cov_all_mean"] for row in grpo]
        rows.append(
            f"\nCovariance concentration (GRPO, first third of the run): the top {TOP_SHARE:.1%} of a step's "
            f"tokens average Cov {sum(top) / len(top):.2f}, all tokens {sum(every) / len(every):.4f}."
        )
    return "\n".join(rows)


def _ratio_cells(entropy: list[float], grpo: list[float]) -> tuple[str, str]:
    """The per-seed and mean ratios to GRPO's end-of-run entropy; "–" without a GRPO run (or one at 0)."""
    if not grpo or not all(g > 0 for g in grpo):
        return "–", "–"
    ratios = [e / g for e, g in zip(entropy, grpo, strict=True)]
    return ", ".join(f"{r:.1f}×" for r in ratios), f"{sum(ratios) / len(ratios):.1f}×"
