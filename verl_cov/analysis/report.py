"""What ``verl-cov fit`` and ``verl-cov compare`` do with their arguments, and what they print.

Warnings (a reader's partial read, a fit that says little) go to stderr as ``verl-cov: warning:`` lines
and into the JSON; a bad input is one error line and exit code 2 (``UsageError``). The fit is printed
before any plotting, so a plot that cannot be written never loses it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from verl_cov.analysis.discover import read_runs
from verl_cov.analysis.keys import entropy_key, performance_keys
from verl_cov.analysis.law import LawFit, fit_run, json_safe
from verl_cov.analysis.runs import LogError, RunLog


def warn(message: str) -> None:
    print(f"verl-cov: warning: {message}", file=sys.stderr)


def warn_about(runs: list[RunLog], fits: list[LawFit | None] = (), errors: list[str] = ()) -> None:
    """What the readers skipped, the runs that could not be fitted, and each fit's caveats."""
    for run in runs:
        for message in run.warnings:
            warn(message)
    for message in errors:
        warn(f"not fitted: {message}")
    for fit in fits:
        for message in fit.warnings if fit else []:
            warn(f"{fit.run}: {message}")


def plot_path(args: argparse.Namespace) -> Path | None:
    """``--plot``'s path, checked before any reading or fitting; None without ``--plot``."""
    if not args.plot:
        return None
    from verl_cov.analysis.plots import check_plot_path

    return check_plot_path(args.plot)


def fits_of(runs: list[RunLog], args: argparse.Namespace) -> tuple[list[tuple[RunLog, LawFit]], list[str]]:
    """(run, fit) per run and validation source (``--perf-key``: that key only; a run validated on several
    sources is fitted once per source, named ``run [key]``), and the errors of the runs that could not be
    fitted (a folder of runs goes on without them)."""
    fits, errors = [], []
    for run in runs:
        try:
            scores = [args.perf_key] if args.perf_key else performance_keys(run)
            for score in scores:
                fit = fit_run(run, score, args.entropy_key, args.keep_base, args.fit_until, args.predict_until)
                if len(scores) > 1:
                    fit.run = f"{run.name} [{score}]"
                fits.append((run, fit))
        except LogError as error:
            if len(runs) == 1:
                raise
            errors.append(f"{run.name}: {error}")
    if not fits:
        raise LogError("no run could be fitted: " + "; ".join(errors))
    return fits, errors


def print_fit(fit: LawFit) -> None:
    print(f"run:         {fit.run}")
    print(f"keys:        entropy {fit.entropy_key}, score {fit.perf_key}")
    print(f"fit:         {fit.formula()}   (a = {fit.a:.4g} ± {fit.a_se:.2g}, b = {fit.b:.4g} ± {fit.b_se:.2g})")
    print(f"points:      {fit.n_points} fitted, R^2 {fit.r2:.4f}, RMSE {fit.rmse:.4g}")
    print(f"ceiling:     {fit.ceiling:.4g} ± {fit.ceiling_se:.2g}   (the score once entropy is spent, H = 0)")
    for item in fit.left_out:
        print(f"left out:    step {item['step']}: {item['reason']}")
    if fit.fit_until is not None:
        until = f" to step {fit.predict_until}" if fit.predict_until is not None else ""
        print(f"forecast:    fitted steps <= {fit.fit_until}; {fit.n_heldout} held out{until}")
        print(f"             held-out RMSE {fit.heldout_rmse:.4g}")
        for p in fit.predicted:
            print(f"             step {p['step']}: H {p['H']:.4g}, R {p['R']:.4g}, predicted {p['predicted']:.4g}")


def emit(fits: list[LawFit], runs: list[RunLog], errors: list[str], as_json: bool) -> None:
    """Warnings to stderr, then the fits as JSON (one object, or ``{"runs": [...]}``) or as text and a table."""
    warn_about(runs, fits, errors)
    if as_json:
        payload = (
            fits[0].as_dict()
            if len(fits) == 1 and not errors
            else {
                "runs": [fit.as_dict() for fit in fits]
                + [{"run": e.split(": ", 1)[0], "error": e.split(": ", 1)[1]} for e in errors]
            }
        )
        print(json.dumps(payload, allow_nan=False))
        return
    for index, fit in enumerate(fits):
        if index:
            print()
        print_fit(fit)
    if len(fits) > 1:
        print()
        print_table(fits)


def print_table(fits: list[LawFit]) -> None:
    width = max(len(fit.run) for fit in fits)
    print(f"{'run':<{width}}  {'points':>6}  {'R^2':>6}  {'a':>9}  {'b':>9}  {'ceiling':>15}")
    for fit in fits:
        ceiling = f"{fit.ceiling:.3g} ± {fit.ceiling_se:.2g}"
        print(f"{fit.run:<{width}}  {fit.n_points:>6}  {fit.r2:>6.3f}  {fit.a:>9.4g}  {fit.b:>9.4g}  {ceiling:>15}")


def plot(fitted: list[tuple[RunLog, LawFit]], out: Path) -> None:
    from verl_cov.analysis.plots import plot_compare, plot_fit

    if len(fitted) == 1:
        plot_fit(*fitted[0], out)
    else:
        plot_compare(
            [run for run, _ in fitted], [fit for _, fit in fitted], [fit.entropy_key for _, fit in fitted], out
        )


def fit_command(args: argparse.Namespace) -> None:
    out = plot_path(args)
    if args.predict_until is not None and args.fit_until is None:
        raise LogError("--predict-until needs --fit-until")
    if args.follow:
        follow(args)
        return
    runs = read_runs(args.log)
    if args.list_keys:
        warn_about(runs)
        for run in runs:
            for key in run.keys():
                print(
                    f"{run.name}\t{key}\t{len(run.series[key])} points"
                    if len(runs) > 1
                    else f"{key}\t{len(run.series[key])} points"
                )
        return
    fitted, errors = fits_of(runs, args)
    emit([fit for _, fit in fitted], runs, errors, args.json)
    if out is not None:
        plot(fitted, out)
        if not args.json:
            print(f"plot:        {out}")


def follow(args: argparse.Namespace) -> None:
    """Re-read a growing log and print the forecast again after each new validation, until interrupted."""
    path = Path(args.log)
    if not path.is_file():
        raise LogError(
            f"--follow reads one growing log file (verl's file logger or console output); {path} is not a file"
        )
    seen = None
    try:
        while True:
            runs = read_runs(path, partial_ok=True) if path.stat().st_size else []
            try:
                fitted, errors = fits_of(runs, args) if runs else ([], [])
                fits = [fit for _, fit in fitted]
            except LogError as error:  # too few validations yet: say so once, keep waiting
                state = str(error)
                if state != seen:
                    print(f"waiting: {error}", flush=True)
                    seen = state
            else:
                state = [fit.n_points + (fit.n_heldout or 0) for fit in fits]
                if fits and state != seen:
                    emit(fits, runs, errors, args.json)
                    print("", flush=True)
                    seen = state
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return


def unique_names(runs: list[RunLog], paths: list[str]) -> None:
    """Runs read from different paths but named alike get their path (then a counter) to tell them apart."""
    names = [run.name for run in runs]
    for index, run in enumerate(runs):
        if names.count(run.name) > 1:
            run.name = f"{run.name} ({paths[index]})"
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
        if seen[run.name] > 1:
            run.name = f"{run.name} #{seen[run.name]}"


def common_score_key(runs: list[RunLog], chosen: str | None) -> str:
    """The one score key every run is fitted on: ``--perf-key``, or the source all runs share."""
    if chosen:
        missing = [run.name for run in runs if chosen not in run.series]
        if missing:
            raise LogError(f"--perf-key {chosen} is not in {', '.join(missing)}")
        return chosen
    per_run = {run.name: performance_keys(run) for run in runs}
    common = set.intersection(*(set(keys) for keys in per_run.values()))
    if len(common) == 1:
        return common.pop()
    if common:
        raise LogError(
            f"the runs share several validation scores ({', '.join(sorted(common))}); pick one with --perf-key"
        )
    listing = "; ".join(f"{name}: {', '.join(keys)}" for name, keys in per_run.items())
    raise LogError(f"the runs share no validation score key ({listing}); pick one with --perf-key")


def compare_command(args: argparse.Namespace) -> None:
    out = plot_path(args)
    runs, paths = [], []
    for path in args.logs:
        found = read_runs(path)
        runs += found
        paths += [path] * len(found)
    unique_names(runs, paths)
    score = common_score_key(runs, args.perf_key)
    rows, fits = [], []
    for run in runs:
        key = args.entropy_key or entropy_key(run)
        _, H = run.get(key)
        _, R = run.get(score)
        row = {
            "run": run.name,
            "entropy_key": key,
            "perf_key": score,
            "final_entropy": float(H[-1]),
            "final_perf": float(R[-1]),
        }
        try:
            fit = fit_run(run, score, key, args.keep_base)
            row.update(fit.as_dict())
            row["run"] = run.name
        except LogError as error:
            fit = None
            row["fit_error"] = str(error)
        rows.append(row)
        fits.append(fit)
    warn_about(runs, fits)
    if args.json:
        print(json.dumps({"perf_key": score, "runs": [json_safe(row) for row in rows]}, allow_nan=False))
    else:
        print(f"score key: {score}")
        width = max(len(row["run"]) for row in rows)
        header = ("final H", "final R", "points", "R^2", "a", "b")
        print(f"{'run':<{width}}  " + "  ".join(f"{c:>8}" for c in header) + f"  {'ceiling':>15}")
        for row, fit in zip(rows, fits, strict=True):
            if fit is None:
                finals = f"{row['final_entropy']:>8.4g}  {row['final_perf']:>8.4g}"
                print(f"{row['run']:<{width}}  {finals}  no fit: {row['fit_error']}")
                continue
            ceiling = f"{fit.ceiling:.3g} ± {fit.ceiling_se:.2g}"
            cells = (row["final_entropy"], row["final_perf"], fit.n_points, fit.r2, fit.a, fit.b)
            print(f"{row['run']:<{width}}  " + "  ".join(f"{c:>8.4g}" for c in cells) + f"  {ceiling:>15}")
    if out is not None:
        from verl_cov.analysis.plots import plot_compare

        plot_compare(runs, fits, [row["entropy_key"] for row in rows], out)
        if not args.json:
            print(f"plot: {out}")
