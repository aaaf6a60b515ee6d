"""``verl-cov``: fit the entropy–performance law to verl runs' logs, compare runs, run the CPU study.

Only argparse at import: ``fit`` and ``compare`` load numpy (and matplotlib for ``--plot``), never verl
or torch; ``demo`` loads verl and torch when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from verl_cov import __version__
from verl_cov.errors import UsageError

FIT_HELP = """Fit R = -a*exp(H) + b (Cui et al. 2025) to a verl run and forecast its ceiling b - a.

Reads, by content: verl's file logger (JSON lines), its console output (ANSI colours, Ray prefixes
and progress bars are skipped), TensorBoard event files, and W&B CSV exports (one run per run in the
export). A folder gives one fit per run in it, named by its path.

Pairing: verl logs actor/entropy at step N before update N, and the validation at step N after it;
so a validation at step N pairs with the entropy logged at the next step after N that has one. The
final validation has none and is left out; validations before the first entropy (val_before_train:
the base policy) are left out unless --keep-base. The output names every point left out and why.

--fit-until F fits the validations at steps <= F and forecasts those in (F, --predict-until]: the
held-out RMSE and each predicted point. Warnings (stderr and JSON) when fewer than 5 points are
fitted, R^2 < 0.5, a <= 0, a is undetermined by the entropy range, the ceiling leaves [0, 1] or lies
below the best score seen, or the forecast error is over 3x the fit's residual."""


def command_fit(args: argparse.Namespace) -> None:
    from verl_cov.analysis.fit_report import fit_command

    fit_command(args)


def command_compare(args: argparse.Namespace) -> None:
    from verl_cov.analysis.fit_report import compare_command

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

    fit = commands.add_parser(
        "fit",
        help="fit R = -a*exp(H) + b to a run's log, or to each run of a folder",
        description=FIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("log", help="a log file (any of the formats below) or a folder of runs")
    fit.add_argument(
        "--entropy-key", help="default: actor/entropy, else actor/entropy_loss, else actor/cov/entropy_estimate"
    )
    fit.add_argument("--perf-key", help="default: each val-core/<source>/<metric>/mean@N (or val/test_score/<source>)")
    fit.add_argument("--fit-until", type=int, metavar="STEP", help="fit the validations at steps <= STEP only")
    fit.add_argument("--predict-until", type=int, metavar="STEP", help="with --fit-until: forecast those up to STEP")
    fit.add_argument("--keep-base", action="store_true", help="keep validations logged before the first entropy")
    fit.add_argument("--plot", metavar="OUT.png", help="write the figure here (format from the suffix)")
    fit.add_argument(
        "--json",
        action="store_true",
        help='print JSON: one fit, an object; several, {"runs": [...]}; {"error": ...} on failure',
    )
    fit.add_argument("--list-keys", action="store_true", help="list the log's metric keys and exit")
    fit.add_argument(
        "--follow", action="store_true", help="re-read a growing log (waiting for it to start); print each new forecast"
    )
    fit.add_argument("--interval", type=float, default=5.0, metavar="SECONDS", help="--follow's polling period")
    fit.set_defaults(handler=command_fit)

    compare = commands.add_parser("compare", help="entropy, score and fitted ceiling of several runs, one score key")
    compare.add_argument("logs", nargs="+", help="log files or folders of runs")
    compare.add_argument("--entropy-key")
    compare.add_argument("--perf-key", help="default: the validation score every run has")
    compare.add_argument("--keep-base", action="store_true", help="keep validations logged before the first entropy")
    compare.add_argument("--plot", metavar="OUT.png")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(handler=command_compare)

    demo = commands.add_parser("demo", help="CPU study: GRPO vs Clip-Cov vs KL-Cov on a verifiable toy task")
    demo.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--steps", type=int, default=300, help="RL steps per mode (default 300)")
    demo.add_argument(
        "--modes",
        help="comma-separated subset of grpo, clip_cov, kl_cov, clip_cov_target, kl_cov_target "
        "(default: the paper's grpo, clip_cov, kl_cov; the *_target modes hold an entropy target, verl >= 0.8)",
    )
    demo.add_argument(
        "--task",
        choices=["forking", "pair"],
        default="forking",
        help="forking: 8-token answers, 2 of them decisions (default); pair: two-token answers",
    )
    demo.add_argument("--threads", type=int, default=1, help="torch threads (default 1: tiny models gain nothing)")
    demo.add_argument(
        "--jobs", type=int, help="modes trained at once in a pool of processes (default: cores + 1; 1: in this process)"
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(handler=command_demo)

    config_path = commands.add_parser(
        "config-path", help="print the folder of the Hydra overlay, for main_ppo's --config-path"
    )
    config_path.set_defaults(handler=command_config_path)
    return parser


def fail(message: str, args: argparse.Namespace) -> int:
    """One line on stderr and exit code 2; with ``--json`` also ``{"error": ...}`` on stdout, so a script
    reading stdout sees the failure."""
    try:
        print(f"verl-cov: error: {message}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"error": message}), flush=True)
    except BrokenPipeError:  # the reader of stdout is gone (``| head``): nobody to tell, no second traceback
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would raise again
        except (OSError, ValueError):  # stdout is no file (captured): nothing left to flush at exit
            pass
    return 2


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done (also ``--follow`` ended by Ctrl-C), 2 bad input or an unreadable path, 130
    interrupted otherwise."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except UsageError as error:
        return fail(str(error), args)
    except OSError as error:  # a path no reader opened (the demo's folder, a pipe): still one line, not a traceback
        where = f"{error.filename}: " if error.filename is not None else ""
        return fail(f"{where}{error.strerror or error}", args)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
