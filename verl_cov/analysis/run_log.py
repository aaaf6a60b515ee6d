"""The one structure every log reader returns: a run's scalar series, ``series[key][step] = value``,
with the warnings about what the reader could not read, and the errors a reader raises, one class per
way a log can fail (callers decide by type, never by message)."""

from __future__ import annotations

import difflib
import errno
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from verl_cov.errors import UsageError

MAX_LINE = 1 << 24  # 16 MiB: no log line of verl's comes near it


class LogError(UsageError):
    """A log that cannot be read, or a key it does not hold; the message is meant for the user."""


class UnknownFormat(LogError):
    """The content is none of the formats read: a runs folder skips such a file with a note."""


class NotYet(LogError):
    """A log that may still become fittable as it grows: ``--follow`` waits on these and on nothing else."""


class NoRecords(UnknownFormat, NotYet):
    """Text that holds no record yet: an empty file, console output before its first step line."""


class TooFewPoints(NotYet):
    """Too few (entropy, score) points to fit yet, or no validation logged yet."""


class Unreadable(LogError):
    """The operating system refused the path (permission denied, a name too long, gone); ``missing`` when it
    does not exist (``--follow`` waits for a rotated log to come back)."""

    def __init__(self, path: str | Path, error: OSError):
        self.missing = error.errno in (errno.ENOENT, errno.ENOTDIR)
        where = error.filename if error.filename is not None else path
        cause = "does not exist" if error.errno == errno.ENOENT else f"cannot be read: {error.strerror or error}"
        super().__init__(f"{where} {cause}")


@dataclass
class RunLog:
    """Scalar series of one run. ``warnings`` says what a reader skipped (a partial read keeps the rest)."""

    name: str
    series: dict[str, dict[int, float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # NaN and ±inf, kept apart so every series stays finite while the fit can still name them
    nonfinite: dict[str, dict[int, float]] = field(default_factory=dict)
    last_step: int | None = field(default=None, repr=False)  # of the record before: where a resume shows

    def keys(self) -> list[str]:
        return list(self.series)

    def add(self, key: str, step: int, value: object) -> None:
        """Keep numbers; a later value for the same (key, step) replaces the earlier one."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        value = float(value)
        if math.isfinite(value):
            self.series.setdefault(key, {})[int(step)] = value
            self.nonfinite.get(key, {}).pop(int(step), None)
        else:
            self.nonfinite.setdefault(key, {})[int(step)] = value
            self.series.get(key, {}).pop(int(step), None)

    def begin(self, step: int, where: str) -> None:
        """A record at ``step`` starts (``where``: its place in the file). A step below the highest seen is a
        resumed run: the abandoned attempt's values from ``step`` on are dropped for every key, so a key the
        resumed attempt has not re-logged yet (a validation) does not survive from it."""
        if self.last_step is not None and step < self.last_step:
            for table in (self.series, self.nonfinite):
                for key in list(table):
                    kept = {s: v for s, v in table[key].items() if s < step}
                    if kept:
                        table[key] = kept
                    else:
                        del table[key]
            self.warnings.append(
                f"{where}: the steps go back from {self.last_step} to {step} (a resumed run): kept the latest "
                f"attempt from step {step} on, for every key"
            )
        self.last_step = step

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of ``key``, sorted by step; ``LogError`` naming close keys if it is absent."""
        if key not in self.series:
            close = difflib.get_close_matches(key, self.keys(), n=5, cutoff=0.4)
            hint = f" Close keys: {', '.join(close)}." if close else ""
            raise LogError(f"key {key!r} is not in {self.name}.{hint} Use --list-keys to see all keys.")
        steps = sorted(self.series[key])
        return np.array(steps), np.array([self.series[key][s] for s in steps])


def read_lines(path: Path):
    """Numbered text lines of the UTF-8 file ``path``, each at most ``MAX_LINE`` characters; ``Unreadable``
    if the OS refuses it. A last line without its newline (a run still writing, or cut off) is returned
    with ``complete=False``."""
    try:
        handle = path.open(encoding="utf-8-sig")
    except OSError as error:
        raise Unreadable(path, error) from None
    with handle:
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
