"""verl's ``file`` logger: one ``{"step": N, "data": {key: value}}`` object per line (``VERL_FILE_LOGGER_PATH``)."""

from __future__ import annotations

import json
from pathlib import Path

from verl_cov.analysis.run_log import LogError, RunLog, read_lines


def _record(path: Path, number: int, line: str) -> tuple[int, dict]:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as error:  # bad JSON, a number too long to convert, deep nesting
        raise ValueError(f"{type(error).__name__}: {str(error)[:80]}") from None
    if not isinstance(record, dict) or "step" not in record or "data" not in record:
        raise ValueError('not an object with "step" and "data"')
    step, data = record["step"], record["data"]
    if isinstance(step, bool) or not isinstance(step, int):
        raise LogError(f'{path}:{number}: "step" must be an integer, not {step!r:.40}')
    if not isinstance(data, dict):
        raise LogError(f'{path}:{number}: "data" must be an object of metrics, not {type(data).__name__}')
    return step, data


def read_jsonl(path: Path, name: str, partial_ok: bool = False) -> RunLog:
    """One run. A last line cut off mid-write is left out with a warning (silently when ``partial_ok``:
    ``--follow`` waits for it); any other line that is not a file-logger record is an error."""
    run = RunLog(name)
    for number, line, complete in read_lines(path):
        if not line.strip():
            continue
        try:
            step, data = _record(path, number, line)
        except ValueError as error:
            if isinstance(error, LogError):
                raise
            if not complete:
                if not partial_ok:
                    run.warnings.append(
                        f"{path}:{number}: the last line is cut off (a run still writing?); read up to it"
                    )
                break
            raise LogError(f"{path}:{number} is not a verl file-logger line ({error})") from None
        run.begin(step, f"{path}:{number}")
        for key, value in data.items():
            run.add(key, step, value)
    return run
