"""verl's console logger, as saved from stdout: ``step:12 - actor/entropy:0.41 - val-core/...:0.83``.

What people share and what verl writes when stdout goes to a file: lines wrapped in ANSI colours and
Ray's actor prefix ``(TaskRunner pid=…)``, progress bars joined by ``\\r``, values like
``np.float64(0.5)``, and a long step cut into several lines, each with its own prefix. Built with verl's
own ``concat_dict_to_str`` format: ``step:N`` then `` - ``-separated ``key:value`` pairs.
"""

from __future__ import annotations

import re
from pathlib import Path

from verl_cov.analysis.run_log import LogError, NoRecords, RunLog, UnknownFormat, read_lines

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
RAY_PREFIX = re.compile(r"^\s*\([^()]*?pid=\d+[^()]*\) ?")
STEP = re.compile(r"(?:^|\s)step:(\d+) - (.*)$")
PAIR = re.compile(r"^[^\s:]+:\S+$")
BARS = re.compile(r"[\r\b]+")  # progress bars redraw with carriage returns or backspaces
WRAPPED = re.compile(r"^[A-Za-z_][\w.]*\((.*)\)$")  # np.float64(0.5), tensor(0.5, dtype=...)


def parse_number(text: str) -> float | None:
    """A logged value as a float: ``0.5``, ``np.float64(0.5)``, ``np.int64(2)``, ``tensor(0.5)``, ``nan``."""
    match = WRAPPED.match(text)
    if match:
        text = match.group(1).split(",")[0]
    try:
        return float(text)
    except ValueError:
        return None


def _payloads(path: Path):
    """(line number, text) of each console line without colours and Ray's prefix; a progress bar's
    ``\\r`` or ``\\b`` separates lines too."""
    for line_number, line, _ in read_lines(path):
        for piece in BARS.split(line):
            yield line_number, RAY_PREFIX.sub("", ANSI.sub("", piece), count=1)


def _continues(payload: str) -> bool:
    """A piece of a step line that Ray's log forwarding cut off: ``key:value`` pairs joined by " - ", the
    first and last of which may be cut, and no other whitespace."""
    tokens = payload.split(" - ")
    return (
        bool(payload.strip())
        and "step:" not in payload
        and not any(character.isspace() for token in tokens for character in token)
        and all(PAIR.match(token) for token in tokens[1:-1])
    )


def _parse(run: RunLog, record: str, where: str) -> None:
    match = STEP.search(record)
    step = int(match.group(1))
    run.begin(step, where)
    for pair in match.group(2).split(" - "):
        key, _, value = pair.partition(":")
        parsed = parse_number(value.strip())
        if key and parsed is not None:
            run.add(key.strip(), step, parsed)


def read_console(path: Path, name: str, scan: int | None = None) -> RunLog:
    """One run from a saved console log; lines that are not verl's step lines are skipped. With ``scan``, a
    file without a step line in its first ``scan`` characters is refused there, not read to its end."""
    run = RunLog(name)
    record, where, records, scanned = None, "", 0, 0
    payloads = _payloads(path)
    while True:
        try:
            line_number, payload = next(payloads)
        except StopIteration:
            break
        except LogError as error:  # not UTF-8, a line of 16 MiB: before any step line, text of another kind
            if records:
                raise
            raise UnknownFormat(str(error)) from None
        if scan is not None and not records:
            scanned += len(payload) + 1
            if scanned > scan:
                break
        if STEP.search(payload):
            if record is not None:
                _parse(run, record, where)
            record, where, records = payload, f"{path}:{line_number}", records + 1
        elif record is not None and _continues(payload):
            record += payload  # the cut falls anywhere, inside a key or a value: join the pieces as they were
        elif record is not None:
            _parse(run, record, where)
            record = None
    if record is not None:
        _parse(run, record, where)
    if not records:
        within = f"its first {scan} characters" if scan is not None and scanned > scan else "it"
        raise NoRecords(
            f"{path} is not a known log format: no verl step line ('step:N - key:value - ...') in {within}, and it is "
            "not JSON lines, a CSV export or a TensorBoard file"
        )
    return run
