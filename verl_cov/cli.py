"""``verl-cov``: fit the entropy–performance law to a verl run's log, compare runs, run the CPU demo."""

from __future__ import annotations

import argparse
import json
import sys

from verl_cov.law import LawFit, fit_run
from verl_cov.logs import LogError, RunLog, read_log


def _print_fit(run: RunLog, fit: LawFit) -> None:
    print(f"run:         {run.name}")
    print(f"entropy key: {fit.entropy_key}")
    print(f"perf key:    {fit.perf_key}")
    print(f"fit:         R = -{fit.a:.6g} * exp(H) + {fit.b:.6g}   over {fit.n_points} points")
    print(f"R^2:         {fit.r2:.4f}   RMSE {fit.rmse:.4g}")
    print(f"ceiling:     {fit.ceiling:.6g}   (predicted R once entropy is spent, H = 0)")
    if fit.fit_until is not None:
        print(f"held out:    {fit.heldout_n} points after step {fit.fit_until}, prediction RMSE {fit.heldout_rmse:.4g}")


def command_fit(args: argparse.Namespace) -> None:
    run = read_log(args.log)
    if args.list_keys:
        for key in run.keys():
            print(f"{key}\t{len(run.series[key])} points")
        return
    fit = fit_run(run, args.entropy_key, args.perf_key, args.fit_until)
    if args.plot:
        from verl_cov.plots import plot_fit

        plot_fit(run, fit, args.plot)
    if args.json:
        print(json.dumps(fit.as_dict()))
    else:
        _print_fit(run, fit)
        if args.plot:
            print(f"plot:        {args.plot}")


def command_compare(args: argparse.Namespace) -> None:
    runs = [read_log(path) for path in args.logs]
    rows, fits, entropy_keys = [], [], []
    for run in runs:
        entropy_key = args.entropy_key or run.default_entropy_key()
        _, H = run.get(entropy_key)
        row = {"run": run.name, "entropy_key": entropy_key, "final_entropy": float(H[-1])}
        try:
            fit = fit_run(run, entropy_key, args.perf_key)
            _, R = run.get(fit.perf_key)
            row.update(final_perf=float(R[-1]), **{k: getattr(fit, k) for k in ("a", "b", "r2", "ceiling", "n_points")})
        except LogError as error:
            fit = None
            row["fit_error"] = str(error)
        rows.append(row)
        fits.append(fit)
        entropy_keys.append(entropy_key)
    if args.plot:
        from verl_cov.plots import plot_compare

        plot_compare(runs, fits, entropy_keys, args.plot)
    if args.json:
        print(json.dumps(rows))
        return
    columns = ["run", "final_entropy", "final_perf", "a", "b", "r2", "ceiling", "n_points"]
    print("  ".join(f"{c:>14}" for c in columns))
    for row in rows:
        cells = [row.get(c, "-") for c in columns]
        print("  ".join(f"{c:>14.4g}" if isinstance(c, float) else f"{c!s:>14}" for c in cells))
        if "fit_error" in row:
            print(f"{'':>14}  no fit: {row['fit_error']}")
    if args.plot:
        print(f"plot: {args.plot}")


def command_demo(args: argparse.Namespace) -> None:
    from pathlib import Path

    from verl_cov.demo.modes import MODE_NAMES
    from verl_cov.demo.rl import RunConfig
    from verl_cov.demo.study import format_table, run_study

    modes = tuple(args.modes.split(",")) if args.modes else MODE_NAMES
    unknown = [m for m in modes if m not in MODE_NAMES]
    if unknown:
        raise LogError(f"unknown --modes {', '.join(unknown)}; choose from {', '.join(MODE_NAMES)}")
    if args.steps < 1:
        raise LogError(f"--steps={args.steps} is out of range: must be >= 1")
    config = RunConfig(steps=args.steps, seed=args.seed, eval_every=max(1, min(RunConfig.eval_every, args.steps)))
    out = Path(args.out)
    summary = run_study(out, config, modes, progress=not args.no_progress)
    print(format_table(summary, config.pass_k))
    if "entropy_vs_grpo" in summary:
        ratios = ", ".join(f"{m} {r:.2f}x" for m, r in summary["entropy_vs_grpo"].items() if r is not None)
        print(f"final entropy relative to GRPO: {ratios}")
    print(f"logs, summary.json and plots in {out}/  (try: verl-cov fit {out}/{modes[0]}.jsonl --plot fit.png)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="verl-cov", description=__doc__)
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
        "demo", help="CPU study: GRPO vs Clip-Cov vs KL-Cov (fixed share and entropy target) on a toy task, ~2 min"
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except LogError as error:
        print(f"verl-cov: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
