"""Read a verl run's scalar metrics from the loggers verl writes: its ``file`` logger's JSON lines,
TensorBoard event files, or a CSV exported from Weights & Biases. Pure I/O; no verl import."""

from __future__ import annotations

import csv
import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verl_cov.errors import UsageError

STEP_COLUMNS = ("Step", "_step", "step", "global_step", "trainer/global_step")
ENTROPY_KEYS = ("actor/entropy", "actor/cov/entropy_estimate")


class LogError(UsageError):
    """A log that cannot be read, or a key it does not hold; the message is meant for the user."""


@dataclass
class RunLog:
    """Scalar series of one run: ``series[key][step] = value``."""

    name: str
    series: dict[str, dict[int, float]]

    def keys(self) -> list[str]:
        return list(self.series)

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of ``key``, sorted by step; ``LogError`` naming close keys if it is absent."""
        if key not in self.series:
            close = difflib.get_close_matches(key, self.keys(), n=5, cutoff=0.4)
            hint = f" Close keys: {', '.join(close)}." if close else ""
            raise LogError(f"key {key!r} is not in {self.name}.{hint} Use --list-keys to see all keys.")
        steps = sorted(self.series[key])
        return np.array(steps), np.array([self.series[key][s] for s in steps])

    def default_entropy_key(self) -> str:
        """verl's ``actor/entropy``, else verl-cov's sampled-token estimate (logged by every verl-cov mode)."""
        for key in ENTROPY_KEYS:
            if key in self.series:
                return key
        raise LogError(f"{self.name} has neither of {', '.join(ENTROPY_KEYS)}; pass --entropy-key.")

    def default_perf_key(self) -> str:
        """The first validation accuracy key verl logs (``val-core/<source>/acc/...``), else any ``val-core/``."""
        for wanted in (lambda k: k.startswith("val-core/") and "/acc/" in k, lambda k: k.startswith("val-core/")):
            for key in self.series:
                if wanted(key):
                    return key
        raise LogError(f"{self.name} has no validation metric (val-core/...); pass --perf-key.")


def _add(series: dict[str, dict[int, float]], key: str, step: int, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return
    series.setdefault(key, {})[int(step)] = float(value)


def read_jsonl(path: Path) -> dict[str, dict[int, float]]:
    """verl's FileLogger: one ``{"step": N, "data": {key: value}}`` object per line."""
    series: dict[str, dict[int, float]] = {}
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                step, data = record["step"], record["data"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise LogError(f"{path}:{number} is not a verl file-logger line ({error})") from None
            for key, value in data.items():
                _add(series, key, step, value)
    return series


def read_wandb_csv(path: Path) -> dict[str, dict[int, float]]:
    """A W&B CSV export: a step column, then one column per metric, possibly named ``<run> - <key>``
    with ``__MIN``/``__MAX`` companions (skipped)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    header = list(rows[0]) if rows else []
    step_column = next((c for c in STEP_COLUMNS if c in header), None)
    if step_column is None:
        raise LogError(f"{path} has no step column (one of {', '.join(STEP_COLUMNS)}); not a W&B CSV export")
    series: dict[str, dict[int, float]] = {}
    for row in rows:
        try:
            step = int(float(row[step_column]))
        except (TypeError, ValueError):
            continue
        for column, cell in row.items():
            if column == step_column or column.endswith(("__MIN", "__MAX")) or cell in (None, ""):
                continue
            try:
                value = float(cell)
            except ValueError:
                continue
            _add(series, column.split(" - ", 1)[-1], step, value)
    return series


def read_tensorboard(path: Path) -> dict[str, dict[int, float]]:
    """Scalars of every TensorBoard event file under ``path`` (a file or a directory)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = [path] if path.is_file() else sorted(path.rglob("*tfevents*"))
    if not files:
        raise LogError(f"{path} holds no TensorBoard event files")
    series: dict[str, dict[int, float]] = {}
    for file in files:
        accumulator = EventAccumulator(str(file), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                _add(series, tag, event.step, event.value)
    return series


def read_log(path: str | Path) -> RunLog:
    """Read a run's metrics, choosing the reader from the file: ``.jsonl`` (verl file logger), ``.csv``
    (W&B export), or TensorBoard event files (a ``*tfevents*`` file or a folder holding them)."""
    path = Path(path)
    if not path.exists():
        raise LogError(f"{path} does not exist")
    if path.is_dir() or "tfevents" in path.name:
        series = read_tensorboard(path)
    elif path.suffix == ".csv":
        series = read_wandb_csv(path)
    elif path.suffix in (".jsonl", ".json", ".log") or path.read_text(errors="replace").lstrip().startswith("{"):
        series = read_jsonl(path)
    else:
        raise LogError(
            f"{path} is not a known log format: expected verl's file logger (.jsonl), a W&B CSV export (.csv) "
            "or TensorBoard event files"
        )
    if not series:
        raise LogError(f"{path} holds no numeric metrics")
    return RunLog(name=path.stem if path.is_file() else path.name, series=series)
