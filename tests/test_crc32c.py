"""The vectorised CRC32C of TensorBoard records against TensorBoard's own (pure-Python) implementation and
the standard check value, on every length class the batching treats differently."""

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as tb_crc32c  # noqa: E402
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tb_masked  # noqa: E402

from verl_cov.analysis.crc32c import crc32c, masked_crc32c, masked_crc32c_fixed  # noqa: E402


def test_the_standard_check_value():
    data = np.frombuffer(b"123456789", dtype=np.uint8)
    assert int(crc32c(data, [0], [9])[0]) == 0xE3069283 == tb_crc32c(b"123456789")


def test_ranges_of_every_length_class_match_tensorboard():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 300_000, dtype=np.uint8)
    # 0-3 bytes (the short-range correction), one bucket, several chunks, and a range past one batch
    lengths = np.array([0, 1, 2, 3, 4, 5, 8, 15, 16, 17, 31, 100, 255, 256, 257, 1000, 4097, 70_000, 250_000])
    starts = rng.integers(0, len(data) - lengths)
    got = masked_crc32c(data, starts, lengths)
    want = [tb_masked(data[s : s + n].tobytes()) for s, n in zip(starts, lengths, strict=True)]
    assert got.tolist() == want
    plain = [tb_crc32c(data[s : s + n].tobytes()) for s, n in zip(starts, lengths, strict=True)]
    assert crc32c(data, starts, lengths).tolist() == plain


def test_fixed_width_headers_at_every_offset_match_tensorboard():
    data = np.random.default_rng(1).integers(0, 256, 600, dtype=np.uint8)
    starts = np.arange(0, 590)
    want = [tb_masked(data[s : s + 8].tobytes()) for s in starts]
    assert masked_crc32c_fixed(data, starts, 8).tolist() == want
    assert masked_crc32c_fixed(data, slice(0, 590), 8).tolist() == want
