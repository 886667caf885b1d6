"""Reading idx files, the format of MNIST and Fashion-MNIST."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from cinn.data.errors import DataError

# idx type code (third byte of the magic number) → big-endian element type.
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def load_idx(path: Path, *, magic: int | None = None) -> np.ndarray:
    """The array stored in an idx file (the MNIST format), plain or gzip-compressed (``.gz``).

    The header is the magic number ``0x0000TTNN`` (``TT`` the element type, ``0x08`` for ``uint8``;
    ``NN`` the number of dimensions), then ``NN`` big-endian ``int32`` sizes, then the data. MNIST
    images have magic 2051 (``uint8``, 3-D), labels 2049 (``uint8``, 1-D); pass ``magic`` to require one.

    Shapes: returns the array with the stored dimensions, in native byte order.

    Example (a label file of three labels):
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
        >>> load_idx(path, magic=2049)
        array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as file:
                data = file.read()
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"idx file {path} does not exist; check the data root or download it again") from None
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read idx file {path} ({error}); delete it and download it again") from error
    if len(data) < 4:
        raise DataError(f"{path} is {len(data)} bytes long, too short for an idx header; "
                        "delete it and download it again")
    found = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path} is not an idx file (magic number {found} = {found:#010x}, expected 0x0000TTNN "
                        "with an idx type code TT such as 0x08 and NN dimensions); point the data root at "
                        "MNIST-format files")
    if magic is not None and found != magic:
        raise DataError(f"{path} has magic number {found} where {magic} is expected; check that the file is the "
                        "one its name says (images 2051, labels 2049) and not swapped or renamed")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{path} is truncated inside its header ({len(data)} of {header_size} bytes); "
                        "delete it and download it again")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = math.prod(dims) * dtype.itemsize
    actual = len(data) - header_size
    if actual != expected:
        raise DataError(f"{path} holds {actual} bytes of data after its header but its dimensions {dims} need "
                        f"{expected} bytes; the file is truncated or corrupt, delete it and download it again")
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header_size).reshape(dims)
    return array.astype(dtype.newbyteorder("="))
