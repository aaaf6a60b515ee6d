"""The one structure every log reader returns: a run's scalar series, ``series[key][step] = value``,
with the warnings about what the reader could not read."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

import numpy as np

from verl_cov.errors import UsageError

MAX_LINE = 1 << 24  # 16 MiB: no log line of verl's comes near it


class LogError(UsageError):
    """A log that cannot be read, or a key it does not hold; the message is meant for the user."""


@dataclass
class RunLog:
    """Scalar series of one run. ``warnings`` says what a reader skipped (a partial read keeps the rest)."""

    name: str
    series: dict[str, dict[int, float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def keys(self) -> list[str]:
        return list(self.series)

    def add(self, key: str, step: int, value: object) -> None:
        """Keep finite numbers; a later value for the same (key, step) replaces the earlier one."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        value = float(value)
        if math.isfinite(value):
            self.series.setdefault(key, {})[int(step)] = value

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of ``key``, sorted by step; ``LogError`` naming close keys if it is absent."""
        if key not in self.series:
            close = difflib.get_close_matches(key, self.keys(), n=5, cutoff=0.4)
            hint = f" Close keys: {', '.join(close)}." if close else ""
            raise LogError(f"key {key!r} is not in {self.name}.{hint} Use --list-keys to see all keys.")
        steps = sorted(self.series[key])
        return np.array(steps), np.array([self.series[key][s] for s in steps])


def read_lines(path, handle):
    """Numbered text lines of an open file, each at most ``MAX_LINE`` characters. A last line without its
    newline (a run still writing, or cut off) is returned with ``complete=False``."""
    number = 0
    while True:
        try:
            line = handle.readline(MAX_LINE + 1)
        except UnicodeDecodeError as error:
            raise LogError(f"{path}: not UTF-8 text after line {number} ({error.reason})") from None
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE:
            raise LogError(f"{path}:{number} is longer than {MAX_LINE >> 20} MiB; not a log line")
        yield number, line.rstrip("\n"), line.endswith("\n")
