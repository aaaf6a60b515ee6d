"""The CPU study over seeds and torch's CPU kernel paths, one process per run: the docs' study tables come
from this command.

    python scripts/run_study.py --out runs/study [--seeds 0,1,2] [--kernels native,avx2,default] [--jobs 2]
        [--task forking] [--modes grpo,clip_cov,kl_cov,clip_cov_target,kl_cov_target] [--steps 300]

Prints markdown tables (per run: end-of-run entropy, its ratio to GRPO's and the worst case, held-out
pass@k) and writes runs/study/<kernel>/seed<s>/ and seeds.json. A kernel path is a value of
ATEN_CPU_CAPABILITY ("native": unset, the widest this CPU has); a path the CPU lacks falls back.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from verl_cov.study.modes import MODE_NAMES
from verl_cov.study.rl import RunConfig
from verl_cov.study.seeds import KERNELS, run_seeds, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--kernels", default=",".join(KERNELS), help="ATEN_CPU_CAPABILITY values; native: unset")
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2: one per core)")
    parser.add_argument("--task", default="forking", choices=["forking", "pair"])
    parser.add_argument("--modes", default=",".join(MODE_NAMES))
    parser.add_argument("--steps", type=int, default=RunConfig.steps)
    args = parser.parse_args()
    config = RunConfig(task=args.task, steps=args.steps)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    kernels = tuple(args.kernels.split(","))
    summaries = run_seeds(Path(args.out), config, tuple(args.modes.split(",")), seeds, args.jobs, kernels)
    print(table(summaries, config.pass_k))


if __name__ == "__main__":
    main()
