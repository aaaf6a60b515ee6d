"""Which runs a path holds, and which reader reads each: chosen from the content, not the name.

A file is sniffed from its first 64 KB: a TensorBoard event file, verl's file-logger JSON lines, its
console text, or a CSV export. Other text goes to the console reader, which in a folder of runs gives
up after ``FOLDER_SCAN_CHARS`` characters without a step line (so a large text file of another kind is
not read to its end). A folder of runs gives one run per file (CSV: per run it holds) and per folder of
event files, named by its path relative to the folder (two files that would get the same name keep
their suffix, then ``#2``, with a warning); runs are never merged. Walking a folder, symlinked folders
are followed once (never round a loop); files with a checkpoint, array or image suffix (``SKIP_SUFFIXES``)
are not sniffed (only their first 128 bytes are checked for a renamed event file) and get one note per
folder; a file of no known format or that cannot be read (a folder
without permission) is skipped with a note naming it and why, so one stray file does not cost the other
runs. A file that is a log but fails to parse (a corrupt verl log) is an error naming it, not a note.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from verl_cov.analysis.console_log import read_console
from verl_cov.analysis.jsonl_log import read_jsonl
from verl_cov.analysis.run_log import LogError, NoRecords, RunLog, UnknownFormat, Unreadable
from verl_cov.analysis.tensorboard_log import read_tensorboard
from verl_cov.analysis.tfrecord import HEADER
from verl_cov.analysis.wandb_csv import STEP_COLUMNS, read_wandb_csv

SNIFF_BYTES = 1 << 16
FORMATS = "verl's file logger (JSON lines), its console output, TensorBoard event files, or a W&B CSV export"
# verl's file logger writes json.dumps({"step": ..., "data": ...}); a printed config also opens with "{"
FILE_LOGGER_LINE = re.compile(r'^\{\s*"(step|data)"\s*:')
TEXT_CONTROLS = "\n\r\t\b\x1b"  # line ends, tabs, progress bars' backspaces, colours
FOLDER_SCAN_CHARS = 1 << 24  # in a runs folder, console text without a step line in its first 16 M chars is skipped
# checkpoints, arrays, data sets and images: never a log, and often large; a runs folder does not open them
SKIP_SUFFIXES = frozenset(
    ".pt .pth .bin .safetensors .ckpt .npy .npz .parquet .arrow .png .jpg .jpeg .gif .svg .pdf".split()
)


@dataclass(frozen=True)
class Skipped:
    """A file or folder of a runs folder that was not read, and why (``reason`` names the path too)."""

    path: str
    reason: str


@dataclass
class Discovery:
    """The runs under a path, and what was skipped walking it."""

    runs: list[RunLog]
    skipped: list[Skipped] = field(default_factory=list)


def sniff(path: Path) -> str:
    """``tensorboard``, ``jsonl``, ``csv``, or ``console`` for other text; ``UnknownFormat`` for anything else.

    Console output often opens with tens of KB of printed config before its first step line, so text
    that is neither JSON lines nor CSV goes to the console reader, which streams the file and refuses
    it if no step line is found.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as error:
        raise Unreadable(path, error) from None
    if _opens_as_event_file(head) or "tfevents" in path.name:
        return "tensorboard"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    if not text.strip():
        raise NoRecords(f"{path} is empty: no log record in it yet")
    control = sum(1 for character in text if not (character.isprintable() or character in TEXT_CONTROLS))
    if "\x00" in text or control > len(text) // 100:  # binary, not a log
        raise UnknownFormat(f"{path} is not a known log format (read its first 64 KB): expected {FORMATS}")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if FILE_LOGGER_LINE.match(first):
        return "jsonl"
    header = [cell.strip('"') for cell in first.split(",")]
    if len(header) > 1 and any(column in STEP_COLUMNS for column in header):
        return "csv"
    return "console"


def _event_file(path: Path) -> bool:
    """Whether a file of a skipped suffix is an event file after all (renamed ``backup.bin``): 128 bytes read."""
    try:
        with path.open("rb") as handle:
            head = handle.read(128)
    except OSError:
        return False
    return _opens_as_event_file(head)


def _opens_as_event_file(head: bytes) -> bool:
    """Whether a file's first bytes are an event file's: the file_version record every event file opens
    with, or a TFRecord frame header whose length checksum holds (the first record, the one naming it,
    damaged)."""
    if b"brain.Event:" in head[:128]:
        return True
    if len(head) < HEADER:
        return False
    import numpy as np

    from verl_cov.analysis.crc32c import masked_crc32c_fixed

    data = np.frombuffer(head[:HEADER], dtype=np.uint8)
    return int(masked_crc32c_fixed(data, np.array([0]), 8)[0]) == int.from_bytes(head[8:HEADER], "little")


def _read_file(path: Path, kind: str, name: str, partial_ok: bool, scan: int | None = None) -> list[RunLog]:
    if kind == "tensorboard":
        return [read_tensorboard([path], name)]
    if kind == "jsonl":
        return [read_jsonl(path, name, partial_ok)]
    if kind == "console":
        return [read_console(path, name, scan)]
    return read_wandb_csv(path, name)


def discover(path: str | Path, partial_ok: bool = False) -> Discovery:
    """Every run under ``path`` (a log file, a TensorBoard folder, or a folder of runs), each non-empty."""
    if str(path) == "":
        raise LogError("the log path is empty; give a log file or a folder of runs")
    path = Path(path)
    try:
        is_file, is_dir = path.is_file(), path.is_dir()
        if not is_file and not is_dir:
            path.stat()  # raises the reason: does not exist, permission denied, name too long
    except OSError as error:
        raise Unreadable(path, error) from None
    if is_file:
        kind = sniff(path)
        name = path.parent.name if kind == "tensorboard" and "tfevents" in path.name else path.stem  # name says nothing
        found = Discovery(_read_file(path, kind, name, partial_ok))
    elif is_dir:
        found = _read_folder(path, partial_ok)
    else:
        raise LogError(f"{path} is not a regular file or a folder")
    found.runs = [run for run in found.runs if run.series]
    if not found.runs:
        raise NoRecords(f"{path} holds no numeric metrics")
    return found


def read_runs(path: str | Path, partial_ok: bool = False) -> list[RunLog]:
    """The runs of ``discover``; what it skipped in a folder is left out (``discover`` says)."""
    return discover(path, partial_ok).runs


def _cannot_read(path: Path, error: OSError) -> Skipped:
    return Skipped(str(path), f"{path}: cannot read it ({error.strerror or type(error).__name__})")


def _walk(folder: Path, skipped: list[Skipped]):
    """Regular files under ``folder`` in name order, through symlinked folders and files, each real file and
    folder once; unreadable folders and broken links go to ``skipped``."""
    seen_dirs, seen_files = set(), set()

    def visit(directory: Path):
        try:
            status = directory.stat()
            if (status.st_dev, status.st_ino) in seen_dirs:
                skipped.append(Skipped(str(directory), f"{directory}: already read through another path (a link)"))
                return
            seen_dirs.add((status.st_dev, status.st_ino))
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as error:
            skipped.append(_cannot_read(directory, error))
            return
        for entry in entries:
            child = Path(entry.path)
            try:
                if entry.is_dir():
                    yield from visit(child)
                    continue
                if not entry.is_file():
                    reason = "a broken link" if entry.is_symlink() else "not a regular file"
                    skipped.append(Skipped(str(child), f"{child}: {reason}"))
                    continue
                status = child.stat()
            except OSError as error:
                skipped.append(_cannot_read(child, error))
                continue
            if (status.st_dev, status.st_ino) not in seen_files:
                seen_files.add((status.st_dev, status.st_ino))
                yield child

    yield from visit(folder)


def _read_folder(folder: Path, partial_ok: bool) -> Discovery:
    try:
        os.scandir(folder).close()  # a folder that cannot be listed is an error, not one that holds nothing
    except OSError as error:
        raise Unreadable(folder, error) from None
    found = Discovery([])
    event_dirs: dict[Path, list[Path]] = {}
    files: list[tuple[Path, str]] = []
    not_opened: dict[Path, list[str]] = {}
    for path in _walk(folder, found.skipped):
        if path.suffix.lower() in SKIP_SUFFIXES and "tfevents" not in path.name and not _event_file(path):
            not_opened.setdefault(path.parent, []).append(path.name)
            continue
        try:
            kind = sniff(path)
        except (UnknownFormat, Unreadable) as error:  # a stray file, an unreadable one: skip it, read the rest
            found.skipped.append(Skipped(str(path), str(error)))
            continue
        if kind == "tensorboard":
            event_dirs.setdefault(path.parent, []).append(path)
        else:
            files.append((path, kind))
    for directory, names in not_opened.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        found.skipped.append(
            Skipped(str(directory), f"{directory}: {len(names)} checkpoint/data/image files ({shown})")
        )
    names = _unique_names([_relative(path.with_suffix(""), folder) for path, _ in files], [p for p, _ in files])
    for (path, kind), (name, note) in zip(files, names, strict=True):
        try:
            runs = _read_file(path, kind, name, partial_ok, FOLDER_SCAN_CHARS)
            for run in runs if note else []:
                run.warnings.insert(0, note)
            found.runs += runs
        except (UnknownFormat, Unreadable) as error:  # console text with no step line: not a log after all
            found.skipped.append(Skipped(str(path), str(error)))
    for directory, event_files in event_dirs.items():
        try:
            found.runs.append(read_tensorboard(event_files, _relative(directory, folder)))
        except Unreadable as error:
            found.skipped.append(Skipped(str(directory), str(error)))
    if not found.runs:
        reasons = "; ".join(item.reason for item in found.skipped[:5]) if found.skipped else "it is empty"
        raise LogError(f"{folder} holds no run: no file in it is {FORMATS} ({reasons})")
    return found


def _unique_names(names: list[str], paths: list[Path]) -> list[tuple[str, str | None]]:
    """(name, note) per file: a name two files share (``a.jsonl`` and ``a.log``) keeps the file's suffix,
    then ``#n``; the note says so (None when the name was free)."""
    result, used = [], set()
    for name, path in zip(names, paths, strict=True):
        chosen = name
        if names.count(name) > 1 and path.suffix:
            chosen = name + path.suffix
        count = 1
        while chosen in used:
            count += 1
            chosen = f"{name} #{count}"
        used.add(chosen)
        note = f"{path}: another file of the folder is also run {name!r}; named this one {chosen!r}"
        result.append((chosen, note if chosen != name else None))
    return result


def _relative(path: Path, folder: Path) -> str:
    relative = path.relative_to(folder).as_posix()
    return folder.name if relative in ("", ".") else relative
