"""The study: the same RL run once per mode, then a summary JSON, plots and a table of the outcome."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from verl_cov.analysis.discover import read_runs
from verl_cov.analysis.law import LawFit, fit_run
from verl_cov.analysis.run_log import LogError, RunLog
from verl_cov.study.figures import plot_study
from verl_cov.study.modes import PAPER_MODES, TARGET_ENTROPY, TARGET_MODES
from verl_cov.study.rl import PERF_KEY, RunConfig, train


def summarise(run: RunLog, pass_k: int) -> tuple[dict, LawFit | None]:
    """Final entropy and its range over the last third of the run, held-out pass@1 / pass@k, and the
    fitted law (None if it cannot be fitted) of one run."""
    _, entropy = run.get("actor/entropy")
    _, pass1 = run.get(PERF_KEY)
    _, passk = run.get(f"val-aux/sum/acc/pass@{pass_k}")
    last_third = entropy[len(entropy) * 2 // 3 :]
    first_third = slice(0, len(entropy) // 3)
    summary = {
        # the end of the run: the mean over its last tenth of steps (one step's value is noisy)
        "end_entropy": float(entropy[-max(1, len(entropy) // 10) :].mean()),
        "start_entropy": float(entropy[0]),
        "final_entropy": float(entropy[-1]),
        "entropy_last_third": [float(last_third.min()), float(last_third.max())],
        "final_pass@1": float(pass1[-1]),
        f"final_pass@{pass_k}": float(passk[-1]),
        # where the covariance sits (the paper's statistic), averaged over the first third of the run
        "cov_top_mean": float(run.get("study/cov_top_mean")[1][first_third].mean()),
        "cov_all_mean": float(run.get("study/cov_all_mean")[1][first_third].mean()),
        **tracking(run),
    }
    try:
        fit = fit_run(run, PERF_KEY, "actor/entropy")
    except LogError as error:
        return {**summary, "fit_error": str(error)}, None
    law = {"a": fit.a, "b": fit.b, "r2": fit.r2, "ceiling": fit.ceiling, "n_points": fit.n_points}
    return {**summary, **law, "warnings": fit.warnings}, fit


def tracking(run: RunLog) -> dict:
    """A controlled run's tracking of H* over the last third of its steps: the mean of Ĥ − H* (its bias) and
    the root mean square of Ĥ − H*, with Ĥ the controller's measured entropy; {} for a run without a target."""
    if "actor/cov/target_error" not in run.keys():
        return {}
    _, error = run.get("actor/cov/target_error")
    last_third = error[len(error) * 2 // 3 :]
    return {"target_bias": float(last_third.mean()), "target_rms": float(np.sqrt((last_third**2).mean()))}


def train_modes(out: Path, config: RunConfig, modes: tuple[str, ...], jobs: int, progress: bool) -> list[Path]:
    """``out/<mode>.jsonl`` for each mode; with ``jobs`` > 1, in a pool of ``jobs`` processes, each with this
    process's torch thread count (the runs are independent: the same logs as one after another)."""
    bar = tqdm(total=config.steps * len(modes), desc="verl-cov demo", unit="step", disable=not progress)
    paths = [out / f"{mode}.jsonl" for mode in modes]
    if jobs == 1:
        for mode, path in zip(modes, paths, strict=True):
            bar.set_postfix_str(mode)
            train(mode, config, path, on_step=lambda: bar.update())
    else:
        for path in paths:  # a previous run's log in ``out`` would count as progress
            path.unlink(missing_ok=True)
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no state of this one's torch
        threads = (torch.get_num_threads(),)
        with ProcessPoolExecutor(jobs, spawn, initializer=torch.set_num_threads, initargs=threads) as pool:
            pending = {pool.submit(train, mode, config, path) for mode, path in zip(modes, paths, strict=True)}
            while pending:  # the bar counts the steps the runs have logged
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                failed = next((future for future in done if future.exception() is not None), None)
                if failed is not None:  # stop the study with its error; the queued runs never start
                    bar.close()
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise failed.exception()
                bar.update(sum(_logged_steps(path) for path in paths) - bar.n)
    bar.close()
    return paths


def _logged_steps(path: Path) -> int:
    """Training steps logged so far (line 0 is the evaluation before training)."""
    try:
        return max(0, len(path.read_bytes().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def run_study(
    out: Path, config: RunConfig, modes: tuple[str, ...] = PAPER_MODES, progress: bool = True, jobs: int = 1
) -> dict:
    """Train every mode with the same seed and budget (``jobs`` processes at a time); write logs,
    ``summary.json`` and PNG plots to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    results, runs, fits = {}, [], []
    for mode, log_path in zip(modes, train_modes(out, config, modes, jobs, progress), strict=True):
        runs.extend(read_runs(log_path))
        results[mode], fit = summarise(runs[-1], config.pass_k)
        results[mode]["log"] = str(log_path)
        fits.append(fit)
    # the CPU kernel path torch runs (ATEN_CPU_CAPABILITY): per-run numbers depend on it
    summary = {"config": asdict(config), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "modes": results}
    if "grpo" in results:
        base = results["grpo"]["end_entropy"]
        summary["entropy_vs_grpo"] = {m: r["end_entropy"] / base if base > 0 else None for m, r in results.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    targets = {mode: TARGET_ENTROPY[config.task] for mode in modes if mode in TARGET_MODES}
    plot_study(out, runs, fits, config.pass_k, targets)
    return summary


def format_table(summary: dict, pass_k: int) -> str:
    columns = ["mode", "end_entropy", "entropy_last_third", "final_pass@1", f"final_pass@{pass_k}", "a", "b", "r2"]
    lines = ["  ".join(f"{c:>18}" for c in columns)]
    for mode, row in summary["modes"].items():
        cells = [mode] + [row.get(c, "-") for c in columns[1:]]
        cells[2] = "{:.3g}-{:.3g}".format(*row["entropy_last_third"])
        lines.append("  ".join(f"{c:>18.4g}" if isinstance(c, float) else f"{c!s:>18}" for c in cells))
    for mode, row in summary["modes"].items():  # the law's own caveats: where a row's a, b, R² mean little
        lines += [f"warning: {mode}: {warning}" for warning in row.get("warnings", [])]
    return "\n".join(lines)
