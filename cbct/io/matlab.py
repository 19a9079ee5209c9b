"""MATLAB ``.mat`` volumes (e.g. TIGRE's head phantom): stored column-major ``(x, y, z)``, no voxel size."""

from __future__ import annotations

import os
import pathlib

import numpy as np

from cbct.geometry import VolumeGrid
from cbct.io.errors import FormatError
from cbct.volume import Volume

__all__ = ["read_mat_volume"]


def read_mat_volume(path: str | os.PathLike, *, variable: str | None = None, voxel_size: float = 1.0,
                    scale: float | None = None) -> Volume:
    """Read a 3-D array from a MATLAB v5 file as a ``(z, y, x)`` volume centred on the origin.

    Args:
        variable: name of the array; default the only 3-D array in the file.
        voxel_size: voxel edge in mm (the file does not store one).
        scale: multiply the values (e.g. 0.02 to map TIGRE's [0, 1] phantom to mm⁻¹ with 1 = water).
    """
    import scipy.io

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        content = scipy.io.loadmat(path)
    except Exception as exc:
        raise FormatError(f"{path}: cannot read MATLAB file (truncated, corrupt or v7.3?): {exc}") from None
    arrays = {k: v for k, v in content.items() if not k.startswith("__") and isinstance(v, np.ndarray) and v.ndim == 3}
    if variable is None:
        if len(arrays) != 1:
            raise FormatError(f"{path}: name the variable to read; 3-D arrays in the file: {sorted(arrays)}")
        variable = next(iter(arrays))
    if variable not in arrays:
        raise FormatError(f"{path}: no 3-D variable {variable!r}; found {sorted(arrays)}")
    data = np.ascontiguousarray(arrays[variable].transpose(2, 1, 0), dtype=np.float32)
    if scale is not None:
        data *= np.float32(scale)
    grid = VolumeGrid(data.shape, voxel_size)
    return Volume(data, grid, {"units": "mm^-1" if scale is not None else "stored", "source": str(path),
                               "variable": variable})
