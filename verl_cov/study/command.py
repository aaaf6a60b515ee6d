"""``verl-cov demo``: run the CPU study and print its table."""

from __future__ import annotations

import argparse
from pathlib import Path

from verl_cov.errors import UsageError


def demo_command(args: argparse.Namespace) -> None:
    from verl_cov.study.modes import MODE_NAMES
    from verl_cov.study.rl import RunConfig
    from verl_cov.study.runs import format_table, run_study

    modes = tuple(args.modes.split(",")) if args.modes else MODE_NAMES
    unknown = [m for m in modes if m not in MODE_NAMES]
    if unknown:
        raise UsageError(f"unknown --modes {', '.join(unknown)}; choose from {', '.join(MODE_NAMES)}")
    if args.steps < 1:
        raise UsageError(f"--steps={args.steps} is out of range: must be >= 1")
    config = RunConfig(steps=args.steps, seed=args.seed, eval_every=max(1, min(RunConfig.eval_every, args.steps)))
    out = Path(args.out)
    summary = run_study(out, config, modes, progress=not args.no_progress)
    print(format_table(summary, config.pass_k))
    if "entropy_vs_grpo" in summary:
        ratios = ", ".join(f"{m} {r:.2f}x" for m, r in summary["entropy_vs_grpo"].items() if r is not None)
        print(f"final entropy relative to GRPO: {ratios}")
    print(f"logs, summary.json and plots in {out}/  (try: verl-cov fit {out}/{modes[0]}.jsonl --plot fit.png)")
