"""TensorBoard event files (verl's ``tensorboard`` logger, torch's ``SummaryWriter``), read record by record.

Every checksum is verified (``tfrecord``): a corrupt record is skipped and reading resumes at the next
valid record, and the run's warnings say how many bytes were skipped where, so one flipped byte loses
one record, not the rest of the run. Scalars come as ``simple_value`` or as a one-element tensor
(TensorBoard 2's writer). A run's files are read in the order they were opened (the time and counter in
their names, compared as numbers), so a resumed run's later file continues the earlier one. A resume shows
when a key's step goes back below the highest step seen for that key: events without scalars (verl's
validation generations, logged as text by a second writer in the same folder) and a second file that
interleaves other keys are no resume.
"""

from __future__ import annotations

import re
import struct
from math import isfinite
from pathlib import Path

import numpy as np

from verl_cov.analysis.run_log import LogError, RunLog, Unreadable
from verl_cov.analysis.tfrecord import frame


def _event_class():
    try:
        from tensorboard.compat.proto.event_pb2 import Event
    except ImportError as error:
        raise LogError(f"reading TensorBoard files needs tensorboard (pip install 'verl-cov[cli]'): {error}") from None
    return Event


def _tensor_scalar(value) -> float | None:
    tensor = value.tensor
    if value.HasField("tensor") and not tensor.tensor_shape.dim:
        for values in (tensor.float_val, tensor.double_val, tensor.int_val, tensor.int64_val):
            if len(values) == 1:
                return float(values[0])
        if tensor.tensor_content and len(tensor.tensor_content) in (4, 8):
            return struct.unpack("<f" if len(tensor.tensor_content) == 4 else "<d", tensor.tensor_content)[0]
    return None


def _byte(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return data[np.minimum(offsets, len(data) - 1)].astype(np.int64)


def _plain_scalars(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray):
    """Decode, all at once, the events laid out as torch's ``SummaryWriter.add_scalar`` writes them: wall
    time, step, and a summary of one ``simple_value``. Protobuf decoding costs microseconds per event, 3× a
    JSON line's share; the others are left to protobuf. Returns (decoded, steps, tag starts, tag ends,
    values), the first a boolean mask."""
    plain = (lengths >= 20) & (_byte(data, starts) == 0x09) & (_byte(data, starts + 9) == 0x10)  # wall_time, step
    steps, position, going = np.zeros(len(starts), dtype=np.uint64), starts + 10, plain.copy()
    for index in range(10):  # the step's varint, 7 bits a byte
        byte = _byte(data, position)
        steps |= np.where(going, (byte & 0x7F).astype(np.uint64) << np.uint64(7 * index), np.uint64(0))
        position = np.where(going, position + 1, position)
        going &= byte >= 0x80
    summary, value, tag = _byte(data, position + 1), _byte(data, position + 3), _byte(data, position + 5)
    tag_start = position + 6
    plain &= ~going & (_byte(data, position) == 0x2A) & (_byte(data, position + 2) == 0x0A)  # summary, its value
    plain &= (_byte(data, position + 4) == 0x0A) & (_byte(data, tag_start + tag) == 0x15)  # tag, simple_value
    plain &= (tag < 0x80) & (value == tag + 7) & (summary == value + 2) & (position + 2 + summary == starts + lengths)
    value_at = np.where(plain, tag_start + tag + 1, 0)
    values = np.stack([_byte(data, value_at + k) for k in range(4)], axis=1).astype(np.uint8).view("<f4")[:, 0]
    return plain, steps.view(np.int64), tag_start, tag_start + tag, values.astype(float)


def _resume_check(run: RunLog, highest: dict[str, int], key: str, step: int, where: str) -> None:
    """Drop the abandoned attempt if ``key`` goes back to ``step``; keep ``highest`` (key's top step) current."""
    top = highest.get(key)
    if top is None or step > top:
        highest[key] = step
    elif step < top:
        run.last_step = top
        run.begin(step, where)  # drops every key's values from ``step`` on
        highest.clear()
        for table in (run.series, run.nonfinite):
            for name, values in table.items():
                highest[name] = max(max(values), highest.get(name, min(values)))
        highest[key] = step


def read_event_file(path: Path, run: RunLog, highest: dict[str, int] | None = None) -> None:
    """Add the scalars of one event file to ``run`` (``highest``: each key's top step so far, across files)."""
    highest = {} if highest is None else highest
    event_class = _event_class()
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise Unreadable(path, error) from None
    framing = frame(raw)
    data = np.frombuffer(raw, dtype=np.uint8)
    starts = np.array([start for start, _ in framing.bodies], dtype=np.int64)
    lengths = np.array([length for _, length in framing.bodies], dtype=np.int64)
    plain, steps, tag_starts, tag_ends, values = (column.tolist() for column in _plain_scalars(data, starts, lengths))
    view, parse, add, where, tags = memoryview(raw), event_class.FromString, run.add, str(path), {}
    series, nonfinite = run.series, run.nonfinite
    for index, (start, length) in enumerate(framing.bodies):
        if plain[index]:
            step, name = steps[index], raw[tag_starts[index] : tag_ends[index]]
            tag = tags.get(name) or tags.setdefault(name, name.decode("utf-8", errors="replace"))
            if highest.get(tag) != step:
                _resume_check(run, highest, tag, step, where)
            value = values[index]
            if isfinite(value) and tag not in nonfinite:  # RunLog.add's common case, inline: the hot loop
                table = series.get(tag)
                if table is None:
                    table = series[tag] = {}
                table[step] = value
            else:
                add(tag, step, value)
            continue
        try:
            event = parse(view[start : start + length])
        except Exception:  # checksums hold but the bytes are no Event (protobuf raises its own DecodeError)
            framing.skipped.append((start, length))
            continue
        step = event.step
        for value in event.summary.value:  # text, images, histograms: no scalar, no say in resumes
            scalar = value.simple_value if value.HasField("simple_value") else _tensor_scalar(value)
            if scalar is not None:
                if highest.get(value.tag) != step:
                    _resume_check(run, highest, value.tag, step, where)
                add(value.tag, step, scalar)
    if framing.skipped:
        skipped = sorted(framing.skipped)
        where = ", ".join(f"{length} bytes at {start}" for start, length in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        run.warnings.append(f"{path}: skipped corrupt or cut-off data ({where}{more}); read the records around it")


def read_tensorboard(files: list[Path], name: str) -> RunLog:
    """One run from its event files (a run may hold several, e.g. after a restart)."""
    run, highest = RunLog(name), {}
    for path in sorted(files, key=_opened):
        read_event_file(path, run, highest)
    return run


OPENED = re.compile(r"tfevents\.(\d+)\.(?:.*\.)?(\d+)(?:\.[^.\d][^.]*)*$")  # time, host, pid, counter[, suffix]


def _opened(path: Path) -> tuple:
    """When an event file was opened, from its name ``events.out.tfevents.<time>.<host>.<pid>.<counter>``,
    as numbers (``...9.x`` before ``...10.x``); names without it sort by name, first."""
    match = OPENED.search(path.name)
    return (int(match[1]), int(match[2]), path.name) if match else (-1, -1, path.name)
