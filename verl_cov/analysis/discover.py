"""Which runs a path holds, and which reader reads each: chosen from the content, not the suffix.

A file is sniffed from its first 64 KB (a 1 GB file of the wrong kind costs one small read): a
TensorBoard event file, verl's file-logger JSON lines, its console text, or a CSV export. A folder of
runs gives one run per file (CSV: per run it holds) and per folder of event files, named by its path
relative to the folder; runs are never merged.
"""

from __future__ import annotations

from pathlib import Path

from verl_cov.analysis.console_log import read_console
from verl_cov.analysis.jsonl_log import read_jsonl
from verl_cov.analysis.runs import LogError, RunLog
from verl_cov.analysis.tensorboard_log import read_tensorboard
from verl_cov.analysis.wandb_csv import STEP_COLUMNS, read_wandb_csv

SNIFF_BYTES = 1 << 16
TEXT_SUFFIXES = {".jsonl", ".json", ".log", ".txt", ".out", ".err", ".csv"}
FORMATS = "verl's file logger (JSON lines), its console output, TensorBoard event files, or a W&B CSV export"


def sniff(path: Path) -> str:
    """``tensorboard``, ``jsonl``, ``csv``, or ``console`` for other text; ``LogError`` for anything else.

    Console output often opens with tens of KB of printed config before its first step line, so text
    that is neither JSON lines nor CSV goes to the console reader, which streams the file and refuses
    it if no step line is found.
    """
    if not path.is_file():
        raise LogError(f"{path} is not a regular file")
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if "tfevents" in path.name or b"brain.Event:" in head[:128]:
        return "tensorboard"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    control = sum(1 for character in text if not (character.isprintable() or character in "\n\r\t\x1b"))
    if not text.strip() or "\x00" in text or control > len(text) // 100:  # binary, not a log
        raise LogError(f"{path} is not a known log format (read its first 64 KB): expected {FORMATS}")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if first.startswith("{"):
        return "jsonl"
    header = [cell.strip('"') for cell in first.split(",")]
    if len(header) > 1 and any(column in STEP_COLUMNS for column in header):
        return "csv"
    return "console"


def _read_file(path: Path, name: str, partial_ok: bool) -> list[RunLog]:
    kind = sniff(path)
    if kind == "tensorboard":
        return [read_tensorboard([path], name)]
    if kind == "jsonl":
        return [read_jsonl(path, name, partial_ok)]
    if kind == "console":
        return [read_console(path, name)]
    return read_wandb_csv(path, name)


def read_runs(path: str | Path, partial_ok: bool = False) -> list[RunLog]:
    """Every run under ``path`` (a log file, a TensorBoard folder, or a folder of runs), each non-empty."""
    path = Path(path)
    if not path.exists():
        raise LogError(f"{path} does not exist")
    if not path.is_file() and not path.is_dir():
        raise LogError(f"{path} is not a regular file or a folder")
    if path.is_file():
        runs = _read_file(path, path.stem if "tfevents" not in path.name else path.parent.name, partial_ok)
    else:
        runs = _read_folder(path, partial_ok)
    runs = [run for run in runs if run.series]
    if not runs:
        raise LogError(f"{path} holds no numeric metrics")
    return runs


def _read_folder(folder: Path, partial_ok: bool) -> list[RunLog]:
    event_dirs: dict[Path, list[Path]] = {}
    runs = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if "tfevents" in path.name:
            event_dirs.setdefault(path.parent, []).append(path)
        elif path.suffix in TEXT_SUFFIXES:
            try:
                runs += _read_file(path, _relative(path.with_suffix(""), folder), partial_ok)
            except LogError as error:
                if "not a known log format" not in str(error):
                    raise
    for directory, files in event_dirs.items():
        runs.append(read_tensorboard(files, _relative(directory, folder)))
    if not runs:
        raise LogError(f"{folder} holds no run: no file in it is {FORMATS}")
    return runs


def _relative(path: Path, folder: Path) -> str:
    relative = path.relative_to(folder).as_posix()
    return folder.name if relative in ("", ".") else relative
