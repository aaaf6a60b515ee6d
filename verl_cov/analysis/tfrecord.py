"""The TFRecord framing of TensorBoard event files: which byte ranges are records whose checksums hold.

A record is its length (uint64), the masked CRC32C of the length, the body, the masked CRC32C of the
body. The file is walked optimistically, record after record, and each stretch of records is checked
at once (``crc32c``); at a record that fails, reading resumes at the next offset where a whole record
checks out, found by checking the header checksum at every offset of the bad stretch together. So one
flipped byte loses one record, and a megabyte of garbage costs a few vectorised passes, not a Python
loop per byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from verl_cov.analysis.crc32c import masked_crc32c, masked_crc32c_fixed

HEADER = 12  # length (uint64) + its masked CRC
FOOTER = 4
FIRST_STRETCH = 64  # records checked together after a resync; doubles while they hold
MAX_STRETCH = 1 << 16
FIRST_WINDOW = 1 << 12  # bytes searched for the next record at once; doubles while none is found
MAX_WINDOW = 1 << 22


@dataclass
class Framing:
    """(start, length) of every record body whose checksums hold, and of every stretch of bytes skipped."""

    bodies: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[tuple[int, int]] = field(default_factory=list)


def _uint32_at(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    offsets = np.asarray(offsets, dtype=np.int64)
    return (
        data[offsets].astype(np.uint32)
        | data[offsets + 1].astype(np.uint32) << 8
        | data[offsets + 2].astype(np.uint32) << 16
        | data[offsets + 3].astype(np.uint32) << 24
    )


def _walk(raw: bytes, offset: int, count: int) -> tuple[list[int], list[int], int]:
    """Up to ``count`` frames from ``offset`` as their lengths say, unchecked: (offsets, lengths, where the
    walk stopped). It stops early where a length runs past the end of the file."""
    offsets, lengths = [], []
    last = len(raw) - HEADER - FOOTER  # the furthest a frame can start and end, minus its length
    unpack = struct.Struct("<Q").unpack_from
    for _ in range(count):
        if offset > last:
            break
        (length,) = unpack(raw, offset)
        if offset + length > last:
            break
        offsets.append(offset)
        lengths.append(length)
        offset += HEADER + length + FOOTER
    return offsets, lengths, offset


def _holds(data: np.ndarray, offsets: list[int], lengths: list[int]) -> np.ndarray:
    """Whether both checksums of each frame hold."""
    starts, sizes = np.array(offsets, dtype=np.int64), np.array(lengths, dtype=np.int64)
    header = masked_crc32c_fixed(data, starts, 8) == _uint32_at(data, starts + 8)
    body = masked_crc32c(data, starts + HEADER, sizes) == _uint32_at(data, starts + HEADER + sizes)
    return header & body


def _next_record(raw: bytes, data: np.ndarray, start: int) -> int:
    """The first offset at or after ``start`` where a whole record checks out, else the end of the data."""
    size = len(data)
    window = FIRST_WINDOW
    while start + HEADER <= size:
        stop = min(start + window, size - HEADER + 1)
        crcs = masked_crc32c_fixed(data, slice(start, stop), 8)
        stored = _uint32_at(data, np.arange(start + 8, stop + 8))
        for offset in (start + np.flatnonzero(crcs == stored)).tolist():
            (length,) = struct.unpack_from("<Q", raw, offset)
            if offset + HEADER + length + FOOTER <= size and _holds(data, [offset], [length])[0]:
                return offset
        start, window = stop, min(window * 2, MAX_WINDOW)
    return size


def frame(raw: bytes) -> Framing:
    """The records of an event file's bytes, and the stretches skipped as corrupt or cut off."""
    data = np.frombuffer(raw, dtype=np.uint8)
    framing = Framing()
    offset, stretch = 0, FIRST_STRETCH
    while offset < len(raw):
        offsets, lengths, stopped = _walk(raw, offset, stretch)
        holds = _holds(data, offsets, lengths) if offsets else np.zeros(0, dtype=bool)
        good = int(np.argmin(holds)) if not holds.all() else len(offsets)
        framing.bodies += [
            (start + HEADER, length) for start, length in zip(offsets[:good], lengths[:good], strict=True)
        ]
        if good == len(offsets) and (len(offsets) == stretch or stopped == len(raw)):
            offset, stretch = stopped, min(stretch * 2, MAX_STRETCH)
            continue
        bad = offsets[good] if good < len(offsets) else stopped
        offset, stretch = _next_record(raw, data, bad + 1), FIRST_STRETCH
        framing.skipped.append((bad, offset - bad))
    return framing
