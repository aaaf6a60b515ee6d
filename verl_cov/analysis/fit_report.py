"""What ``verl-cov fit`` and ``verl-cov compare`` do with their arguments, and what they print.

Warnings (a reader's partial read, a file of a runs folder skipped, a fit that says little) go to stderr
as ``verl-cov: warning:`` lines and into the JSON; a bad input is one error line and exit code 2
(``UsageError``, reported by ``verl_cov.cli``). The fit is printed before any plotting, so a plot that
cannot be written never loses it. With ``--json`` stdout holds JSON objects only.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from verl_cov.analysis.discover import Discovery, Skipped, discover
from verl_cov.analysis.keys import entropy_key, performance_keys
from verl_cov.analysis.law import LawFit, fit_run, json_safe
from verl_cov.analysis.run_log import LogError, NotYet, RunLog, TooFewPoints, Unreadable
from verl_cov.errors import UsageError


@dataclass(frozen=True)
class RunError:
    """A run of several that could not be fitted: it is reported, the others are fitted."""

    run: str
    message: str


def warn(message: str, prefix: str = "warning") -> None:
    print(f"verl-cov: {prefix}: {message}", file=sys.stderr, flush=True)


def warn_about(
    runs: list[RunLog],
    fits: list[LawFit | None] = (),
    errors: list[RunError] = (),
    skipped: list[Skipped] = (),
    shown: set[str] | None = None,
) -> None:
    """What the readers skipped, the runs that could not be fitted, and each fit's caveats; with ``shown``
    (``--follow``), only the lines not in it, which are added to it."""
    lines = [f"skipped {item.reason}" for item in skipped]
    lines += [message for run in runs for message in run.warnings]
    lines += [f"not fitted: {error.run}: {error.message}" for error in errors]
    lines += [f"{fit.run}: {message}" for fit in fits if fit for message in fit.warnings]
    for line in lines:
        if shown is None or line not in shown:
            warn(line)
    if shown is not None:
        shown.update(lines)


def skipped_json(skipped: list[Skipped]) -> dict:
    return {"skipped": [{"path": item.path, "reason": item.reason} for item in skipped]} if skipped else {}


def plot_path(args: argparse.Namespace) -> Path | None:
    """``--plot``'s path, checked before any reading or fitting; None without ``--plot``."""
    if not args.plot:
        return None
    from verl_cov.analysis.plots import check_plot_path

    return check_plot_path(args.plot)


def fits_of(runs: list[RunLog], args: argparse.Namespace) -> tuple[list[tuple[RunLog, LawFit]], list[RunError]]:
    """(run, fit) per run and validation source (``--perf-key``: that key only; a run validated on several
    sources is fitted once per source, named ``run [key]``), and the errors of the runs that could not be
    fitted (a folder of runs goes on without them)."""
    fits, errors, waiting = [], [], True
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
            errors.append(RunError(run.name, str(error)))
            waiting = waiting and isinstance(error, TooFewPoints)
    if not fits:
        raise (TooFewPoints if waiting else LogError)(
            "no run could be fitted: " + "; ".join(f"{error.run}: {error.message}" for error in errors)
        )
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


def json_payload(entries: list[dict], skipped: list[Skipped]) -> dict:
    """One entry: that object (with ``"skipped"`` when a folder's files were skipped); several:
    ``{"runs": [...]}`` (and ``"skipped"``). The shape depends on the number of runs only."""
    if len(entries) == 1:
        return {**entries[0], **skipped_json(skipped)}
    return {"runs": entries, **skipped_json(skipped)}


def emit(
    fits: list[LawFit], found: Discovery, errors: list[RunError], as_json: bool, shown: set[str] | None = None
) -> None:
    """Warnings to stderr (``shown``: see ``warn_about``), then the fits as JSON (``json_payload``; a run not
    fitted is ``{"run": ..., "error": ...}``) or as text and a table."""
    warn_about(found.runs, fits, errors, found.skipped, shown)
    if as_json:
        entries = [fit.as_dict() for fit in fits] + [{"run": error.run, "error": error.message} for error in errors]
        payload = json_payload(entries, found.skipped)
        print(json.dumps(payload, allow_nan=False), flush=True)
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


def check_interval(seconds: float) -> None:
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"--interval {seconds}: give a positive number of seconds")


def list_keys(found: Discovery, as_json: bool) -> None:
    warn_about(found.runs, skipped=found.skipped)
    runs = found.runs
    if as_json:
        entries = [{"run": run.name, "keys": {key: len(run.series[key]) for key in run.keys()}} for run in runs]
        print(json.dumps(json_payload(entries, found.skipped)))
        return
    for run in runs:
        for key in run.keys():
            prefix = f"{run.name}\t" if len(runs) > 1 else ""
            print(f"{prefix}{key}\t{len(run.series[key])} points")


def fit_command(args: argparse.Namespace) -> None:
    out = plot_path(args)
    if args.predict_until is not None and args.fit_until is None:
        raise LogError("--predict-until needs --fit-until")
    if args.follow:
        check_interval(args.interval)
        follow(args, out)
        return
    found = discover(args.log)
    if args.list_keys:
        list_keys(found, args.json)
        return
    fitted, errors = fits_of(found.runs, args)
    emit([fit for _, fit in fitted], found, errors, args.json)
    if out is not None:
        plot(fitted, out)
        if not args.json:
            print(f"plot:        {out}")


def poll(path: Path, args: argparse.Namespace) -> tuple[Discovery, list[tuple[RunLog, LawFit]], list[RunError]]:
    """One read and fit of a followed log; ``NotYet`` says what it waits for: the log missing (rotated, not
    created yet), no record in it yet, too few points. Any other ``LogError`` (permission denied, a malformed
    line, an unknown key, binary content) will not clear by waiting and ends the command."""
    try:
        found = discover(path, partial_ok=True)
    except Unreadable as error:
        if not error.missing:
            raise
        raise NotYet(f"{path} does not exist (yet, or it is being rotated)") from None
    chosen = args.perf_key
    if chosen and all(
        chosen not in run.series and not any(k.startswith("val") for k in run.series) for run in found.runs
    ):
        raise TooFewPoints(f"{path}: no validation logged yet (--perf-key {chosen})")
    fitted, errors = fits_of(found.runs, args)
    return found, fitted, errors


def follow(args: argparse.Namespace, out: Path | None) -> None:
    """Re-read a growing log and print the forecast again after each new validation, until interrupted
    (Ctrl-C ends it normally). It waits, saying for what, until the log exists and the first validations
    pair, and through a rotation; with ``--json`` stdout gets one object per refit and nothing else."""
    path = Path(args.log)
    if path.is_dir():
        raise LogError(
            f"--follow reads one growing log file (verl's file logger or console output); {path} is a folder"
        )
    seen, waiting, shown = None, None, set()
    with ctrl_c_between_polls() as stop:
        while not stop.pressed:
            try:
                found, fitted, errors = poll(path, args)
            except NotYet as error:  # too few validations, no step line, the file gone for now
                if str(error) != waiting:
                    warn(str(error), prefix="waiting")
                    waiting, seen = str(error), None
            else:
                waiting = None
                state = [(fit.run, fit.n_points, fit.n_heldout) for _, fit in fitted]
                if state != seen:
                    emit([fit for _, fit in fitted], found, errors, args.json, shown)
                    if out is not None:
                        plot(fitted, out)
                    if not args.json:
                        print(f"plot:        {out}\n" if out is not None else "", flush=True)
                    seen = state
            stop.sleep(args.interval)


class CtrlC:
    """Whether Ctrl-C was pressed; set by a signal handler, so a plain attribute (a lock taken in a handler
    can deadlock the main thread it interrupts)."""

    pressed = False

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, ending within 0.1 s of a Ctrl-C."""
        deadline = time.monotonic() + seconds
        while not self.pressed and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))


@contextmanager
def ctrl_c_between_polls() -> Iterator[CtrlC]:
    """The first Ctrl-C lets the poll under way finish (a KeyboardInterrupt raised inside matplotlib's
    drawing ended the command with a ValueError traceback; once, CI saw --follow still running 30 s after a
    Ctrl-C); a second one goes to the handler that was there before (Python's: KeyboardInterrupt, exit code
    130). Left alone where Python does not own SIGINT: an ignored SIGINT (``nohup``, a background job), a
    handler set outside Python, a thread other than the main one (which signals never reach)."""
    stop = CtrlC()
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield stop
        return

    def first(*_) -> None:
        stop.pressed = True
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, first)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


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
    runs, paths, skipped = [], [], []
    for path in args.logs:
        found = discover(path)
        runs += found.runs
        paths += [path] * len(found.runs)
        skipped += found.skipped
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
    warn_about(runs, fits, skipped=skipped)
    if args.json:
        payload = {"perf_key": score, "runs": [json_safe(row) for row in rows], **skipped_json(skipped)}
        print(json.dumps(payload, allow_nan=False))
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
