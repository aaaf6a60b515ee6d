"""The study over seeds and CPU kernel paths, one ``verl-cov demo`` process per run (one torch thread
each), and the markdown tables the docs show: per-run end-of-run entropy, its ratio to GRPO's with the
worst case, GRPO's collapse, held-out pass@k per run, and where the covariance sits.

A small RL run is chaotic: rounding differences between torch's CPU kernels (``ATEN_CPU_CAPABILITY``,
read once when torch is imported, hence a process per run) grow into different runs. A result holds
only if it holds on every kernel path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from verl_cov.study.rl import TOP_SHARE, RunConfig

# "native": ATEN_CPU_CAPABILITY unset, the widest vector kernels torch has for this CPU.
KERNELS = ("native", "avx2", "default")


def run_label(kernel: str, seed: int) -> str:
    return f"{kernel}/{seed}"


def _demo(out: Path, config: RunConfig, modes: tuple[str, ...], kernel: str) -> dict:
    """One run: ``verl-cov demo`` in a fresh process with the kernel path set before torch loads."""
    environment = {key: value for key, value in os.environ.items() if key != "ATEN_CPU_CAPABILITY"}
    environment["OMP_NUM_THREADS"] = "1"
    if kernel != "native":
        environment["ATEN_CPU_CAPABILITY"] = kernel
    command = [
        *(sys.executable, "-c", "import sys; from verl_cov.cli import main; sys.exit(main())", "demo"),
        *("--out", str(out), "--seed", str(config.seed), "--steps", str(config.steps), "--task", config.task),
        *("--modes", ",".join(modes), "--no-progress", "--jobs", "1"),  # the study's pool runs `jobs` at once
    ]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the study run {out} failed:\n{result.stderr[-4000:]}")
    return json.loads((out / "summary.json").read_text())


def run_seeds(
    out: Path,
    config: RunConfig,
    modes: tuple[str, ...],
    seeds: list[int],
    jobs: int,
    kernels: tuple[str, ...] = ("native",),
) -> dict[str, dict]:
    """``out/<kernel>/seed<s>`` per run (logs, summary.json, plots); the summaries by ``run_label``."""
    runs = [(kernel, seed) for kernel in kernels for seed in seeds]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {
            run_label(kernel, seed): pool.submit(
                _demo, out / kernel / f"seed{seed}", RunConfig(**{**config.__dict__, "seed": seed}), modes, kernel
            )
            for kernel, seed in runs
        }
        summaries = {label: future.result() for label, future in futures.items()}
    (out / "seeds.json").write_text(json.dumps({label: s["modes"] for label, s in summaries.items()}, indent=1))
    return summaries


def side_by_side(summaries: dict[str, dict], pass_k: int) -> str:
    """Markdown, one row per mode over all runs: mean end-of-run entropy, its worst and mean ratio to GRPO's,
    mean held-out pass@1 and pass@k, on how many runs pass@k is at or above GRPO's as printed (to 0.01: an exact
    pass@k of 0.99998 is not below GRPO's 1.0), and for a controlled mode
    the tracking of H* (mean bias Ĥ − H* and mean RMS over the last third of each run)."""
    row = by_mode(summaries)
    modes = list(row)
    grpo = row.get("grpo")
    lines = [
        f"| mode | end-of-run entropy (mean) | × GRPO worst | × GRPO mean | pass@1 (mean) | pass@{pass_k} (mean) "
        f"| pass@{pass_k} ≥ GRPO's (to 0.01) | H* tracking: bias, RMS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        runs = row[mode]
        entropy = [r["end_entropy"] for r in runs]
        _, worst, mean_ratio = _ratio_cells(entropy, [r["end_entropy"] for r in grpo] if grpo else [])
        passk = [r[f"final_pass@{pass_k}"] for r in runs]
        at_least = (
            f"{sum(round(p, 2) >= round(g[f'final_pass@{pass_k}'], 2) for p, g in zip(passk, grpo, strict=True))}"
            f"/{len(runs)}"
            if grpo
            else "–"
        )
        tracked = [r for r in runs if "target_rms" in r]
        tracking = (
            f"{_mean([r['target_bias'] for r in tracked]):+.3f}, {_mean([r['target_rms'] for r in tracked]):.3f}"
            if tracked
            else "–"
        )
        pass1 = _mean([r["final_pass@1"] for r in runs])
        lines.append(
            f"| {mode} | {_mean(entropy):.3f} | {worst} | {mean_ratio} | {pass1:.3f} | {_mean(passk):.3f} "
            f"| {at_least} | {tracking} |"
        )
    return "\n".join(lines)


def by_mode(summaries: dict[str, dict]) -> dict[str, list[dict]]:
    """Each mode's per-run summaries, in the runs' order."""
    modes = next(iter(summaries.values()))["modes"]
    return {mode: [summary["modes"][mode] for summary in summaries.values()] for mode in modes}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def table(summaries: dict[str, dict], pass_k: int) -> str:
    """Markdown: the modes side by side, then end-of-run entropy and its ratio to GRPO's per run, then held-out
    pass@k per run."""
    labels, row = list(summaries), by_mode(summaries)
    modes = list(row)
    grpo = [r["end_entropy"] for r in row["grpo"]] if "grpo" in row else []
    runs = ", ".join(labels)
    lines = [
        f"Side by side over {len(labels)} runs:",
        "",
        side_by_side(summaries, pass_k),
        "",
        f"End-of-run entropy, nats per token (runs {runs}):",
        "",
        "| mode | end-of-run entropy per run | × GRPO per run | × GRPO worst | × GRPO mean |",
        "|---|---|---|---|---|",
    ]
    for mode in modes:
        entropy = [r["end_entropy"] for r in row[mode]]
        lines.append(
            f"| {mode} | {', '.join(f'{e:.3f}' for e in entropy)} | {' | '.join(_ratio_cells(entropy, grpo))} |"
        )
    lines += [
        "",
        f"Held-out pass@{pass_k} per run, and the means of pass@1 and pass@{pass_k}:",
        "",
        f"| mode | pass@{pass_k} per run | pass@1 (mean) | pass@{pass_k} (mean) |",
        "|---|---|---|---|",
    ]
    for mode in modes:
        passk = [r[f"final_pass@{pass_k}"] for r in row[mode]]
        pass1 = _mean([r["final_pass@1"] for r in row[mode]])
        lines.append(f"| {mode} | {', '.join(f'{p:.2f}' for p in passk)} | {pass1:.3f} | {_mean(passk):.3f} |")
    if grpo:
        start = [r["start_entropy"] for r in row["grpo"] if "start_entropy" in r]
        if start:
            lines.append(
                f"\nGRPO's collapse: entropy {min(start):.2f}–{max(start):.2f} at step 1, "
                f"{min(grpo):.3f}–{max(grpo):.3f} at the end of the run."
            )
        top = [r["cov_top_mean"] for r in row["grpo"]]
        every = [r["cov_all_mean"] for r in row["grpo"]]
        lines.append(
            f"\nCovariance concentration (GRPO, first third of the run): the top {TOP_SHARE:.1%} of a step's "
            f"tokens average Cov {_mean(top):.2f}, all tokens {_mean(every):.4f}."
        )
    return "\n".join(lines)


def _ratio_cells(entropy: list[float], grpo: list[float]) -> tuple[str, str, str]:
    """Per-run, worst and mean ratios to GRPO's end-of-run entropy; "–" without a GRPO run (or one at 0)."""
    if not grpo or not all(g > 0 for g in grpo):
        return "–", "–", "–"
    ratios = [e / g for e, g in zip(entropy, grpo, strict=True)]
    return ", ".join(f"{r:.1f}×" for r in ratios), f"{min(ratios):.1f}×", f"{_mean(ratios):.1f}×"
