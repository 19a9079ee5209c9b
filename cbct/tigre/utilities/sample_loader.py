"""TIGRE's ``sample_loader``: its head phantom at any grid size, from the copy the project ships beside itself.

The phantom (``head_phantom.mat``, TIGRE's ``head.mat``, BSD-3) is not inside the package: it is read from
:func:`cbct.phantoms.real.data_dir` (``$CBCT_DATA_DIR`` or ``../shared/data``); without it the loader raises
``FileNotFoundError`` saying where it looked.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
from scipy import ndimage

from cbct.io.matlab import read_mat_volume
from cbct.phantoms.real import ENV_VAR, data_dir

__all__ = ["load_head_phantom"]


def load_head_phantom(number_of_voxels=None, path: str | os.PathLike | None = None) -> np.ndarray:
    """TIGRE's head phantom resampled to ``number_of_voxels`` ``(z, y, x)`` (default 128³), float32 in TIGRE's units
    (0 air … 1 densest bone), as TIGRE's loader gives it (``img.transpose(2, 1, 0)`` zoomed by cubic splines).

    Args:
        number_of_voxels: 3 positive integers (TIGRE passes ``geo.nVoxel``).
        path: the ``.mat`` file; default ``head_phantom.mat`` in the shared data folder.
    """
    n = np.asarray((128, 128, 128) if number_of_voxels is None else number_of_voxels)
    if n.shape != (3,) or np.any(n != np.round(n)) or np.any(n <= 0):
        raise ValueError(f"number_of_voxels must be 3 positive integers (z, y, x), got {n.tolist()}")
    p = data_dir() / "head_phantom.mat" if path is None else pathlib.Path(path).expanduser()
    if not p.is_file():
        hint = f" (set {ENV_VAR} to the folder holding it; see ../shared/data/README.md)" if path is None else ""
        raise FileNotFoundError(f"TIGRE's head phantom head_phantom.mat not found at {p}{hint}")
    image = np.asarray(read_mat_volume(p, variable="img", voxel_size=1.0, scale=1.0).data, dtype=np.float32)
    zoom = tuple(int(k) / s for k, s in zip(n, image.shape))
    out = ndimage.zoom(image, zoom, order=3, prefilter=False, output=np.float32)
    if out.shape != tuple(int(k) for k in n):  # zoom rounds the output size; pad or crop to the exact shape
        fixed = np.zeros(tuple(int(k) for k in n), dtype=np.float32)
        sl = tuple(slice(0, min(a, b)) for a, b in zip(out.shape, fixed.shape))
        fixed[sl] = out[sl]
        out = fixed
    return np.ascontiguousarray(out)
