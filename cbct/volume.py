"""A volume: the array and its voxel grid (a core type: readers, writers and the pipeline depend on it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from cbct.backend import to_host
from cbct.geometry import VolumeGrid

__all__ = ["Volume", "as_volume"]


@dataclasses.dataclass(frozen=True, eq=False)
class Volume:
    """A volume ``(z, y, x)`` on a :class:`~cbct.VolumeGrid`.

    Attributes:
        data: (nz, ny, nx) array (float32 attenuation in mm⁻¹ unless ``metadata["units"]`` says otherwise).
        grid: shape, voxel size ``(dz, dy, dx)`` mm and centre offset ``(oz, oy, ox)`` mm.
        metadata: free-form, JSON-serialisable description (units, source, ...).
    """

    data: np.ndarray
    grid: VolumeGrid
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.grid, VolumeGrid):
            raise TypeError(f"grid must be a cbct.VolumeGrid, got {type(self.grid).__name__}")
        shape = tuple(np.shape(self.data))
        if shape != self.grid.shape:
            raise ValueError(f"volume data shape {shape} does not match the grid shape {self.grid.shape} (z, y, x)")

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel edge lengths ``(dz, dy, dx)`` in mm."""
        return self.grid.voxel_size

    @property
    def origin(self) -> tuple[float, float, float]:
        """World position ``(z, y, x)`` in mm of the centre of voxel ``(0, 0, 0)``."""
        return tuple(float(o - (n - 1) / 2 * d) for o, n, d in zip(self.grid.offset, self.grid.shape, self.grid.voxel_size))

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) affine from voxel indices ``(i, j, k)`` = (x, y, z) order to world ``(x, y, z)`` mm."""
        return self.grid.index_to_world()


def as_volume(volume: Any, grid: VolumeGrid | None = None, metadata: Mapping[str, Any] | None = None) -> Volume:
    """``volume`` itself when it is a :class:`Volume`; else a Volume of the (z, y, x) array ``volume`` (NumPy, CuPy
    or torch; stored as float32 mm⁻¹ on the host) on ``grid`` (default: 1 mm voxels centred on the origin)."""
    if isinstance(volume, Volume):
        return volume
    data = np.asarray(to_host(volume), dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"volume must be a 3-D (z, y, x) array, got shape {data.shape}")
    return Volume(data, grid if grid is not None else VolumeGrid(data.shape), {"units": "mm^-1", **(metadata or {})})
