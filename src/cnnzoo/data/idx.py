"""Read and write IDX files, the format of MNIST and its look-alikes (Fashion-MNIST, KMNIST).

An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the number of dimensions), one big-endian
uint32 per dimension, then the values in C order, big-endian. The files usually travel gzip-compressed; the
reader recognises gzip by its first two bytes, not by the file name. Every way a file can be wrong (bad magic,
unknown dtype, too few or too many bytes, broken gzip) is a `CnnzooError` that names the file.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from cnnzoo.errors import CnnzooError

__all__ = ["read_idx", "parse_idx", "write_idx"]

# dtype code (third byte of the magic number) -> big-endian numpy dtype
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a writable native-endian numpy array."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CnnzooError(f"cannot read IDX file {path}: {e.strerror or e}") from e
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise CnnzooError(f"corrupt gzip data in {path}: {e}") from e
    return parse_idx(data, source=str(path))


def parse_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file; `source` names it in error messages."""
    if len(data) < 4:
        raise CnnzooError(f"{source} is not an IDX file: {len(data)} bytes, shorter than the 4-byte header")
    if data[0] != 0 or data[1] != 0:
        raise CnnzooError(f"{source} is not an IDX file: magic number starts {data[:2].hex()}, expected 0000")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise CnnzooError(f"{source}: unknown IDX dtype code 0x{code:02x}")
    if ndim == 0:
        raise CnnzooError(f"{source}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CnnzooError(f"{source} is truncated: header needs {header} bytes, file has {len(data)}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _DTYPES[code]
    expected = int(np.prod(dims, dtype=object)) * dtype.itemsize
    actual = len(data) - header
    if actual < expected:
        raise CnnzooError(
            f"{source} is truncated: shape {dims} needs {expected} bytes after the header, found {actual}"
        )
    if actual > expected:
        raise CnnzooError(
            f"{source}: {actual - expected} unexpected bytes after the {expected} bytes of data"
        )
    array = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(dims)
    # astype copies: the result is writable (torch.from_numpy wants that) and native-endian
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write `array` as an IDX file; gzip-compressed when `compress` is True, or None and the name ends .gz."""
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        raise CnnzooError(f"IDX cannot store dtype {array.dtype}; use one of {sorted(map(str, _CODES))}")
    if array.ndim == 0 or array.ndim > 255:
        raise CnnzooError(f"IDX stores 1 to 255 dimensions, got an array with {array.ndim}")
    code = _CODES[native]
    head = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = head + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
