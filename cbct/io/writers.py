"""Array-first shortcuts to the volume writers: ``write_*(path, volume, grid)`` with a NumPy array and its grid.

``volume`` may also be a :class:`~cbct.volume.Volume` (then ``grid`` is not needed). Without a grid, a volume
array is taken as 1 mm voxels centred on the origin. All writes are atomic.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np

from cbct.geometry import VolumeGrid
from cbct.volume import Volume

__all__ = ["as_volume", "write_hdf5_volume", "write_nifti", "write_dicom_series", "write_png_preview"]


def as_volume(volume: Any, grid: VolumeGrid | None = None, metadata: dict[str, Any] | None = None) -> Volume:
    """A :class:`Volume` from a Volume or a (z, y, x) array (NumPy, CuPy or torch) and its grid."""
    if isinstance(volume, Volume):
        return volume
    from cbct.pipeline.stages import to_host

    data = np.asarray(to_host(volume), dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"volume must be a 3-D (z, y, x) array, got shape {data.shape}")
    return Volume(data, grid if grid is not None else VolumeGrid(data.shape), {"units": "mm^-1", **(metadata or {})})


def write_hdf5_volume(path: str | os.PathLike, volume: Any, grid: VolumeGrid | None = None, **options: Any) -> pathlib.Path:
    from cbct.io.hdf5 import write_volume

    return write_volume(as_volume(volume, grid), path, **options)


def write_nifti(path: str | os.PathLike, volume: Any, grid: VolumeGrid | None = None, **options: Any) -> pathlib.Path:
    from cbct.io.nifti import write_nifti as _write

    return _write(as_volume(volume, grid), path, **options)


def write_dicom_series(path: str | os.PathLike, volume: Any, grid: VolumeGrid | None = None, **options: Any) -> pathlib.Path:
    from cbct.io.dicom import write_dicom_series as _write

    return _write(as_volume(volume, grid), path, **options)


def write_png_preview(path: str | os.PathLike, volume: Any, grid: VolumeGrid | None = None, **options: Any) -> pathlib.Path:
    from cbct.io.png import write_png_preview as _write

    return _write(as_volume(volume, grid), path, **options)
