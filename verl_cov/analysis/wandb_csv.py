"""CSV exported from a Weights & Biases panel: a step column, then ``<run> - <key>`` columns with
``__MIN`` / ``__MAX`` companions. A panel of several runs gives one run per run name, never a merge; a
plain CSV (``step`` plus metric columns) is one run."""

from __future__ import annotations

import csv
from pathlib import Path

from verl_cov.analysis.runs import MAX_LINE, LogError, RunLog

STEP_COLUMNS = ("Step", "_step", "step", "global_step", "trainer/global_step")
RUN_SEPARATOR = " - "  # W&B joins the run's display name and the metric key with it


def _column_owner(column: str) -> tuple[str | None, str]:
    """(run name, metric key) of a column; verl's keys never hold " - ", run names may."""
    if RUN_SEPARATOR in column:
        run, key = column.rsplit(RUN_SEPARATOR, 1)
        return run, key
    return None, column


def read_wandb_csv(path: Path, name: str) -> list[RunLog]:
    csv.field_size_limit(MAX_LINE)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise LogError(f"{path} is empty")
            step_column = next((i for i, column in enumerate(header) if column in STEP_COLUMNS), None)
            if step_column is None:
                raise LogError(f"{path} has no step column (one of {', '.join(STEP_COLUMNS)}); not a W&B CSV export")
            owners = [_column_owner(column) for column in header]
            runs: dict[str | None, RunLog] = {}
            for number, row in enumerate(reader, 2):
                if len(row) != len(header):
                    raise LogError(f"{path}:{number} has {len(row)} cells for {len(header)} columns")
                try:
                    step = int(float(row[step_column]))
                except ValueError:
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
    return list(runs.values())
