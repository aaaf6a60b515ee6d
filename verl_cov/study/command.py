"""``verl-cov demo``: run the CPU study and print its table."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from verl_cov.errors import UsageError


def demo_command(args: argparse.Namespace) -> None:
    if args.steps < 1:
        raise UsageError(f"--steps={args.steps} is out of range: must be >= 1")
    if not 0 <= args.seed < 2**63:
        raise UsageError(f"--seed={args.seed} is out of range: must be in [0, 2**63)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; the demo writes a folder of logs and plots")
    if args.modes is not None and not args.modes.strip():
        raise UsageError("--modes is empty: name one or more modes, or leave it out for all")

    if args.threads < 1:
        raise UsageError(f"--threads={args.threads} is out of range: must be >= 1")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs={args.jobs} is out of range: must be >= 1")
    import torch

    # Tiny models gain nothing from intra-op threads, and several torch processes on a few cores slow
    # each other down more than tenfold when each takes every core.
    torch.set_num_threads(args.threads)
    from verl_cov.study.experiment import format_table, run_study
    from verl_cov.study.modes import MODE_NAMES, PAPER_MODES  # verl: only once the arguments hold
    from verl_cov.study.rl import RunConfig

    modes = tuple(args.modes.split(",")) if args.modes is not None else PAPER_MODES
    unknown = [m for m in modes if m not in MODE_NAMES]
    if unknown:
        raise UsageError(f"--modes {args.modes!r}: choose one or more of {', '.join(MODE_NAMES)}")
    config = RunConfig(
        task=args.task, steps=args.steps, seed=args.seed, eval_every=max(1, min(RunConfig.eval_every, args.steps))
    )
    jobs = min(args.jobs or (os.cpu_count() or 1) + 1, len(modes))  # default: one more than the cores
    summary = run_study(out, config, modes, progress=not args.no_progress, jobs=jobs)
    print(format_table(summary, config.pass_k))
    if "entropy_vs_grpo" in summary:
        ratios = ", ".join(f"{m} {r:.2f}x" for m, r in summary["entropy_vs_grpo"].items() if r is not None)
        print(f"end-of-run entropy (mean of the last tenth of steps) relative to GRPO: {ratios}")
        # a small RL run is chaotic: say what one run is, where it is read
        print(
            f"one seed ({config.seed}) on this CPU's kernel path: docs/study.md has 8 seeds x 3 kernel paths "
            "and their worst cases"
        )
    print(f"logs, summary.json and plots in {out}/  (try: verl-cov fit {out}/{modes[0]}.jsonl --plot fit.png)")
