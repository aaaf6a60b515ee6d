"""CSV exported from a Weights & Biases panel: a step column, then ``<run> - <key>`` columns with
``__MIN`` / ``__MAX`` companions. A panel of several runs gives one run per run, never a merge: W&B
names columns by the runs' display names, so two runs named alike show as the same column twice, and
the second is read as a run of its own (``name #2``) with a warning. A plain CSV (``step`` plus metric
columns) is one run. Steps must be whole numbers: a fractional step (a panel plotted against another
axis) would collide with its neighbours when rounded, so such an export is refused."""

from __future__ import annotations

import csv
from pathlib import Path

from verl_cov.analysis.run_log import MAX_LINE, LogError, RunLog, Unreadable

STEP_COLUMNS = ("Step", "_step", "step", "global_step", "trainer/global_step")
RUN_SEPARATOR = " - "  # W&B joins the run's display name and the metric key with it


def _column_owner(column: str) -> tuple[str | None, str]:
    """(run name, metric key) of a column; verl's keys never hold " - ", run names may."""
    if RUN_SEPARATOR in column:
        run, key = column.rsplit(RUN_SEPARATOR, 1)
        return run, key
    return None, column


def _owners(header: list[str]) -> tuple[list[tuple[str | None, str]], dict[str, str | None]]:
    """(run, key) of each column, and the runs renamed: the n-th column of the same run and key belongs to
    the n-th run of that display name, ``name #n``."""
    owners, seen, renamed = [], {}, {}
    for column in header:
        run, key = _column_owner(column)
        count = seen[run, key] = seen.get((run, key), 0) + 1
        if count > 1:
            alias = f"{run if run is not None else ''} #{count}".lstrip()
            renamed[alias], run = run, alias
        owners.append((run, key))
    return owners, renamed


def _step(text: str, path: Path, number: int) -> int | None:
    """The row's step, None for an empty cell; ``LogError`` for a fractional one."""
    try:
        step = float(text)
    except ValueError:
        return None
    if not step.is_integer():
        raise LogError(
            f"{path}:{number}: step {text} is not a whole number; verl's steps are, so rounding would merge rows "
            "(export the panel against Step)"
        )
    return int(step)


def read_wandb_csv(path: Path, name: str) -> list[RunLog]:
    csv.field_size_limit(MAX_LINE)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as error:
        raise Unreadable(path, error) from None
    try:
        with handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise LogError(f"{path} is empty")
            step_column = next((i for i, column in enumerate(header) if column in STEP_COLUMNS), None)
            if step_column is None:
                raise LogError(f"{path} has no step column (one of {', '.join(STEP_COLUMNS)}); not a W&B CSV export")
            owners, renamed = _owners(header)
            runs: dict[str | None, RunLog] = {}
            for number, row in enumerate(reader, 2):
                if len(row) != len(header):
                    raise LogError(f"{path}:{number} has {len(row)} cells for {len(header)} columns")
                step = _step(row[step_column], path, number)
                if step is None:
                    continue
                for index, (run_name, key) in enumerate(owners):
                    if index == step_column or key.endswith(("__MIN", "__MAX")) or not row[index]:
                        continue
                    try:
                        value = float(row[index])
                    except ValueError:
                        continue
                    run = runs.setdefault(run_name, RunLog(name if run_name is None else f"{name}/{run_name}"))
                    run.add(key, step, value)
    except csv.Error as error:
        raise LogError(f"{path}: not a readable CSV ({error})") from None
    except UnicodeDecodeError as error:
        raise LogError(f"{path}: not UTF-8 text ({error.reason})") from None
    for run_name, original in renamed.items():
        if run_name in runs:
            runs[run_name].warnings.append(
                f"{path}: several runs are named {original or name!r} (W&B names columns by display name); read the "
                f"repeated columns as the run {runs[run_name].name!r}, not merged"
            )
    return list(runs.values())
