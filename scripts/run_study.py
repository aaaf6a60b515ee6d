"""The CPU study on several seeds, one process per seed: the docs' study tables come from this command.

    python scripts/run_study.py --out runs/study [--seeds 0,1,2] [--jobs 2] [--task forking]
        [--modes grpo,clip_cov,kl_cov,clip_cov_target,kl_cov_target] [--steps 300]

Prints a markdown table (per-seed values depend on the CPU's floating-point paths; compare the means
and the bands) and writes runs/study/seed<s>/ and seeds.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from verl_cov.study.modes import MODE_NAMES
from verl_cov.study.rl import RunConfig
from verl_cov.study.seeds import run_seeds, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2: one per core)")
    parser.add_argument("--task", default="forking", choices=["forking", "pair"])
    parser.add_argument("--modes", default=",".join(MODE_NAMES))
    parser.add_argument("--steps", type=int, default=RunConfig.steps)
    args = parser.parse_args()
    config = RunConfig(task=args.task, steps=args.steps)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    summaries = run_seeds(Path(args.out), config, tuple(args.modes.split(",")), seeds, args.jobs)
    print(table(summaries, config.pass_k))


if __name__ == "__main__":
    main()
