"""MetaImage (``.mha``/``.mhd``) volumes, e.g. VTK's ``headsq`` head CT: uncompressed, axis-aligned."""

from __future__ import annotations

import os
import pathlib

import numpy as np

from cbct.geometry import VolumeGrid
from cbct.io.errors import FormatError
from cbct.volume import Volume

__all__ = ["read_metaimage"]

_TYPES = {"MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_USHORT": "u2", "MET_SHORT": "i2", "MET_UINT": "u4",
          "MET_INT": "i4", "MET_FLOAT": "f4", "MET_DOUBLE": "f8"}


def read_metaimage(path: str | os.PathLike, *, scale: float | None = None) -> Volume:
    """Read an uncompressed 3-D MetaImage as a ``(z, y, x)`` :class:`Volume`.

    Args:
        path: ``.mha`` (header and data in one file) or ``.mhd`` (data file named by ``ElementDataFile``).
        scale: multiply the stored values (e.g. to turn scanner units into mm⁻¹); ``None`` keeps them, and the
            volume's ``metadata["units"]`` says ``"stored"``.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    raw = path.read_bytes()
    header: dict[str, str] = {}
    pos = 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise FormatError(f"{path}: MetaImage header has no ElementDataFile line")
        line = raw[pos:end].decode("latin-1").strip()
        pos = end + 1
        if "=" in line:
            key, value = (s.strip() for s in line.split("=", 1))
            header[key] = value
            if key == "ElementDataFile":
                break
    try:
        dims = [int(v) for v in header["DimSize"].split()]
        dtype = np.dtype(_TYPES[header["ElementType"]])
    except KeyError as exc:
        raise FormatError(f"{path}: MetaImage header lacks or has an unknown {exc}") from None
    if len(dims) != 3:
        raise FormatError(f"{path}: expected a 3-D image, DimSize is {dims}")
    if header.get("CompressedData", "False").lower() == "true":
        raise FormatError(f"{path}: compressed MetaImage data is not supported")
    big = header.get("BinaryDataByteOrderMSB", header.get("ElementByteOrderMSB", "False")).lower() == "true"
    dtype = dtype.newbyteorder(">" if big else "<")
    spacing = [float(v) for v in header.get("ElementSpacing", header.get("ElementSize", "1 1 1")).split()]
    offset = [float(v) for v in header.get("Offset", header.get("Position", "0 0 0")).split()]
    matrix = [float(v) for v in header.get("TransformMatrix", "1 0 0 0 1 0 0 0 1").split()]
    if not np.allclose(matrix, np.eye(3).ravel()):
        raise FormatError(f"{path}: rotated MetaImage (TransformMatrix {matrix}) is not supported")
    data_file = header["ElementDataFile"]
    if data_file == "LOCAL":
        buf = raw[pos:]
    else:
        buf = (path.parent / data_file).read_bytes()
    n = int(np.prod(dims))
    if len(buf) < n * dtype.itemsize:
        raise FormatError(f"{path}: data holds {len(buf)} bytes, {n * dtype.itemsize} expected (truncated file?)")
    data = np.frombuffer(buf[: n * dtype.itemsize], dtype=dtype).reshape(dims[::-1]).astype(np.float32)
    if scale is not None:
        data = data * np.float32(scale)
    spacing_zyx = tuple(spacing[::-1])
    centre_xyz = np.asarray(offset) + (np.asarray(dims) - 1) / 2 * np.asarray(spacing)
    grid = VolumeGrid(data.shape, spacing_zyx, tuple(centre_xyz[::-1]))
    return Volume(np.ascontiguousarray(data), grid, {"units": "mm^-1" if scale is not None else "stored",
                                                     "source": str(path)})
