"""``verl-cov``: fit the entropy–performance law to verl runs' logs, compare runs, run the CPU study.

Only argparse at import: ``fit`` and ``compare`` load numpy (and matplotlib for ``--plot``), never verl
or torch; ``demo`` loads verl and torch when it runs.
"""

from __future__ import annotations

import argparse
import sys

from verl_cov import __version__
from verl_cov.errors import UsageError


def command_fit(args: argparse.Namespace) -> None:
    from verl_cov.analysis.report import fit_command

    fit_command(args)


def command_compare(args: argparse.Namespace) -> None:
    from verl_cov.analysis.report import compare_command

    compare_command(args)


def command_demo(args: argparse.Namespace) -> None:
    from verl_cov.study.command import demo_command

    demo_command(args)


def command_config_path(args: argparse.Namespace) -> None:
    from importlib.resources import files

    print(files("verl_cov") / "hydra_config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="verl-cov", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"verl-cov {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("fit", help="fit R = -a*exp(H) + b to one run's log")
    fit.add_argument("log", help="verl file-logger .jsonl, W&B CSV export, or TensorBoard event file/folder")
    fit.add_argument("--entropy-key", help="default: actor/entropy, else actor/cov/entropy_estimate")
    fit.add_argument("--perf-key", help="default: the first val-core/.../acc/... key")
    fit.add_argument("--fit-until", type=int, metavar="STEP", help="fit steps <= STEP only; score the rest")
    fit.add_argument("--plot", metavar="OUT.png", help="write the figure here")
    fit.add_argument("--json", action="store_true", help="print one JSON object")
    fit.add_argument("--list-keys", action="store_true", help="list the log's metric keys and exit")
    fit.set_defaults(handler=command_fit)

    compare = commands.add_parser("compare", help="entropy, performance and fitted ceiling of several runs")
    compare.add_argument("logs", nargs="+")
    compare.add_argument("--entropy-key")
    compare.add_argument("--perf-key")
    compare.add_argument("--plot", metavar="OUT.png")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(handler=command_compare)

    demo = commands.add_parser(
        "demo", help="CPU study: GRPO vs Clip-Cov vs KL-Cov (fixed share and entropy target) on a toy task"
    )
    demo.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--steps", type=int, default=300, help="RL steps per mode (default 300)")
    demo.add_argument(
        "--modes",
        help="comma-separated subset of grpo, clip_cov, kl_cov, clip_cov_target, kl_cov_target "
        "(default: all; the *_target modes need verl >= 0.8)",
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(handler=command_demo)

    config_path = commands.add_parser(
        "config-path", help="print the folder of the Hydra overlay, for main_ppo's --config-path"
    )
    config_path.set_defaults(handler=command_config_path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except UsageError as error:
        print(f"verl-cov: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
