"""What ``verl-cov fit`` and ``verl-cov compare`` print: a fit per run as text or JSON, a table of runs."""

from __future__ import annotations

import argparse
import json

from verl_cov.analysis.law import LawFit, fit_run
from verl_cov.analysis.logs import LogError, RunLog, read_log


def _print_fit(run: RunLog, fit: LawFit) -> None:
    print(f"run:         {run.name}")
    print(f"entropy key: {fit.entropy_key}")
    print(f"perf key:    {fit.perf_key}")
    print(f"fit:         R = -{fit.a:.6g} * exp(H) + {fit.b:.6g}   over {fit.n_points} points")
    print(f"R^2:         {fit.r2:.4f}   RMSE {fit.rmse:.4g}")
    print(f"ceiling:     {fit.ceiling:.6g}   (predicted R once entropy is spent, H = 0)")
    if fit.fit_until is not None:
        print(f"held out:    {fit.heldout_n} points after step {fit.fit_until}, prediction RMSE {fit.heldout_rmse:.4g}")


def fit_command(args: argparse.Namespace) -> None:
    run = read_log(args.log)
    if args.list_keys:
        for key in run.keys():
            print(f"{key}\t{len(run.series[key])} points")
        return
    fit = fit_run(run, args.entropy_key, args.perf_key, args.fit_until)
    if args.plot:
        from verl_cov.analysis.plots import plot_fit

        plot_fit(run, fit, args.plot)
    if args.json:
        print(json.dumps(fit.as_dict()))
    else:
        _print_fit(run, fit)
        if args.plot:
            print(f"plot:        {args.plot}")


def compare_command(args: argparse.Namespace) -> None:
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
        from verl_cov.analysis.plots import plot_compare

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
