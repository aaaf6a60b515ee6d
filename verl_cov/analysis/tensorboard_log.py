"""TensorBoard event files (verl's ``tensorboard`` logger, torch's ``SummaryWriter``), read record by record.

An event file is a sequence of TFRecords: length (8 bytes), masked CRC32C of the length, an ``Event``
protobuf, its masked CRC32C. Every checksum is verified: a corrupt record is skipped and reading
resumes at the next valid record, and the run's warnings say how many bytes were skipped where, so one
flipped byte loses one record, not the rest of the run. Scalars come as ``simple_value`` or as a
one-element tensor (TensorBoard 2's writer).
"""

from __future__ import annotations

import struct
from pathlib import Path

from verl_cov.analysis.runs import LogError, RunLog

HEADER = 12  # length (uint64) + its masked CRC
FOOTER = 4


def _load_protocol():
    try:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    except ImportError as error:
        raise LogError(f"reading TensorBoard files needs tensorboard (pip install 'verl-cov[cli]'): {error}") from None
    return event_pb2, masked_crc32c


def _record_at(data: bytes, offset: int, masked_crc32c) -> bytes | None:
    """The record starting at ``offset`` if both of its checksums hold, else None."""
    if offset + HEADER > len(data):
        return None
    header = data[offset : offset + 8]
    (length,) = struct.unpack("<Q", header)
    (length_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
    if masked_crc32c(header) != length_crc or offset + HEADER + length + FOOTER > len(data):
        return None
    body = data[offset + HEADER : offset + HEADER + length]
    (body_crc,) = struct.unpack("<I", data[offset + HEADER + length : offset + HEADER + length + FOOTER])
    return body if masked_crc32c(body) == body_crc else None


def _scalar(value) -> float | None:
    if value.HasField("simple_value"):
        return value.simple_value
    tensor = value.tensor
    if value.HasField("tensor") and not tensor.tensor_shape.dim:
        for values in (tensor.float_val, tensor.double_val, tensor.int_val, tensor.int64_val):
            if len(values) == 1:
                return float(values[0])
        if tensor.tensor_content and len(tensor.tensor_content) in (4, 8):
            return struct.unpack("<f" if len(tensor.tensor_content) == 4 else "<d", tensor.tensor_content)[0]
    return None


def read_event_file(path: Path, run: RunLog) -> None:
    """Add the scalars of one event file to ``run``."""
    event_pb2, masked_crc32c = _load_protocol()
    data = path.read_bytes()
    offset, skipped = 0, []
    while offset < len(data):
        body = _record_at(data, offset, masked_crc32c)
        if body is None:  # find the next offset where a whole record checks out
            start = offset
            offset += 1
            while offset < len(data) and _record_at(data, offset, masked_crc32c) is None:
                offset += 1
            skipped.append((start, offset - start))
            continue
        offset += HEADER + len(body) + FOOTER
        event = event_pb2.Event()
        try:
            event.ParseFromString(body)
        except Exception:  # a record whose checksum holds but whose bytes are no Event: skip it too
            skipped.append((offset - len(body) - FOOTER, len(body)))
            continue
        for value in event.summary.value:
            scalar = _scalar(value)
            if scalar is not None:
                run.add(value.tag, event.step, scalar)
    if skipped:
        where = ", ".join(f"{length} bytes at {start}" for start, length in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        run.warnings.append(f"{path}: skipped corrupt or cut-off data ({where}{more}); read the records around it")


def read_tensorboard(files: list[Path], name: str) -> RunLog:
    """One run from its event files (a run may hold several, e.g. after a restart)."""
    run = RunLog(name)
    for path in sorted(files):
        read_event_file(path, run)
    return run
