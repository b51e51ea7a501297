"""IDX reading: round trips for every dtype, and a clear CnnzooError for every way a file can be broken."""

import gzip

import numpy as np
import pytest

from cnnzoo.data.idx import parse_idx, read_idx, write_idx
from cnnzoo.errors import CnnzooError


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_round_trip(tmp_path, dtype, name):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable


def test_gzip_recognised_by_content_not_name(tmp_path):
    write_idx(tmp_path / "labels", np.arange(10, dtype=np.uint8), compress=True)
    assert (tmp_path / "labels").read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), np.arange(10))


def test_header_is_big_endian(tmp_path):
    write_idx(tmp_path / "x", np.array([[1, 2]], dtype=np.int16))
    assert (tmp_path / "x").read_bytes() == bytes([0, 0, 0x0B, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 1, 0, 2])


def test_truncated_file_names_file_and_byte_counts(tmp_path):
    write_idx(tmp_path / "full", np.zeros((4, 28, 28), dtype=np.uint8))
    data = (tmp_path / "full").read_bytes()
    (tmp_path / "cut").write_bytes(data[:-100])
    with pytest.raises(
        CnnzooError, match=r"cut is truncated: shape \(4, 28, 28\) needs 3136 bytes .* found 3036"
    ):
        read_idx(tmp_path / "cut")


def test_truncated_gzipped_file_after_decompression(tmp_path):
    write_idx(tmp_path / "full", np.zeros((4, 28, 28), dtype=np.uint8))
    (tmp_path / "cut.gz").write_bytes(gzip.compress((tmp_path / "full").read_bytes()[:-1]))
    with pytest.raises(CnnzooError, match="cut.gz is truncated.*3136 bytes.*found 3135"):
        read_idx(tmp_path / "cut.gz")


def test_truncated_gzip_stream(tmp_path):
    write_idx(tmp_path / "x.gz", np.random.default_rng(0).integers(0, 255, (8, 28, 28), dtype=np.uint8))
    data = (tmp_path / "x.gz").read_bytes()
    (tmp_path / "x.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CnnzooError, match=r"corrupt gzip data in .*x\.gz"):
        read_idx(tmp_path / "x.gz")


def test_gzip_crc_mismatch(tmp_path):
    write_idx(tmp_path / "x.gz", np.arange(100, dtype=np.uint8))
    data = bytearray((tmp_path / "x.gz").read_bytes())
    data[-8] ^= 0xFF  # first byte of the CRC32 trailer
    (tmp_path / "x.gz").write_bytes(bytes(data))
    with pytest.raises(CnnzooError, match="corrupt gzip data"):
        read_idx(tmp_path / "x.gz")


def test_trailing_bytes():
    data = bytes([0, 0, 8, 1, 0, 0, 0, 2, 5, 6, 7])
    with pytest.raises(CnnzooError, match="1 unexpected bytes"):
        parse_idx(data, source="f")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "shorter than the 4-byte header"),
        (b"\x12\x34\x08\x01" + bytes(8), "magic number starts 1234"),
        (b"\x00\x00\x07\x01" + bytes(8), "unknown IDX dtype code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "header needs 16 bytes, file has 8"),
    ],
)
def test_bad_headers(data, message):
    with pytest.raises(CnnzooError, match=message):
        parse_idx(data, source="bad-file")


def test_missing_file(tmp_path):
    with pytest.raises(CnnzooError, match="cannot read IDX file .*nope"):
        read_idx(tmp_path / "nope")


def test_write_refuses_unsupported_dtype(tmp_path):
    with pytest.raises(CnnzooError, match="cannot store dtype"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.uint16))
