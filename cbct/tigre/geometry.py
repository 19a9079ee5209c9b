"""TIGRE's ``geometry`` objects: the attribute bag TIGRE users fill in, and its default constructors.

The bag is mutable (TIGRE users set attributes one by one); every operator converts it, with the angles, into an
immutable :class:`cbct.ConeGeometry` (:func:`cbct.conventions.tigre.from_tigre`) and never changes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cbct.conventions.tigre import from_tigre
from cbct.geometry import ConeGeometry

__all__ = ["Geometry", "geometry", "geometry_default", "cone_geometry"]


class Geometry:
    """TIGRE's cone-beam geometry: set ``DSD``, ``DSO``, ``nDetector``, ``dDetector``, ``sDetector``, ``nVoxel``,
    ``dVoxel``, ``sVoxel`` and optionally ``offOrigin``, ``offDetector``, ``rotDetector``, ``COR`` (TIGRE's orders:
    ``(z, y, x)`` and ``(v, u)``; mm, radians)."""

    def __init__(self) -> None:
        self.mode = "cone"
        self.accuracy = 0.5
        self.filter = None
        self.offOrigin = np.zeros(3)
        self.offDetector = np.zeros(2)
        self.rotDetector = np.zeros(3)
        self.COR = 0.0

    def check_geo(self, angles, verbose: bool = False) -> ConeGeometry:
        """Check this geometry against ``angles`` (as TIGRE's ``check_geo``); returns its :class:`ConeGeometry`."""
        return cone_geometry(self, angles)

    def __str__(self) -> str:
        rows = ["TIGRE parameters (cbct)", "-----"]
        for name, unit in (("DSD", "mm"), ("DSO", "mm"), ("nDetector", "px"), ("dDetector", "mm"), ("sDetector", "mm"),
                           ("nVoxel", "vx"), ("dVoxel", "mm"), ("sVoxel", "mm"), ("offOrigin", "mm"),
                           ("offDetector", "mm"), ("rotDetector", "rad"), ("COR", "mm"), ("accuracy", "")):
            if hasattr(self, name):
                rows.append(f"{name} = {getattr(self, name)} {unit}".rstrip())
        return "\n".join(rows)

    __repr__ = __str__


def geometry_default(high_resolution: bool = True, nVoxel=None) -> Geometry:  # noqa: N803 (TIGRE's name)
    """TIGRE's default cone beam: DSD 1536 mm, DSO 1000 mm, a 256 mm cube; 512³ voxels and 512² pixels of 0.8 mm
    (``high_resolution``), else 64³ voxels and 128² pixels of 3.2 mm; ``nVoxel`` (z, y, x) gives that grid with a
    detector of ``(nVoxel[1], nVoxel[2])`` pixels of 0.8 mm (TIGRE's choice, which sees only the centre of the cube)."""
    geo = Geometry()
    geo.DSD = 1536.0
    geo.DSO = 1000.0
    if nVoxel is not None:
        n = np.asarray(nVoxel)
        if n.shape != (3,):
            raise ValueError(f"nVoxel must be 3 numbers (z, y, x), got shape {n.shape}")
        geo.nDetector = np.array((n[1], n[2]))
        geo.dDetector = np.array((0.8, 0.8))
        geo.nVoxel = np.array(n)
    elif high_resolution:
        geo.nDetector = np.array((512, 512))
        geo.dDetector = np.array((0.8, 0.8))
        geo.nVoxel = np.array((512, 512, 512))
    else:
        geo.nDetector = np.array((128, 128))
        geo.dDetector = np.array((0.8, 0.8)) * 4
        geo.nVoxel = np.array((64, 64, 64))
    geo.sDetector = geo.nDetector * geo.dDetector
    geo.sVoxel = np.array((256.0, 256.0, 256.0))
    geo.dVoxel = geo.sVoxel / geo.nVoxel
    return geo


def geometry(mode: str = "cone", nVoxel=None, default: bool = False, high_resolution: bool = True) -> Geometry:  # noqa: N803
    """TIGRE's constructor: an empty cone-beam :class:`Geometry`, or with ``default=True`` :func:`geometry_default`.

    Only ``mode="cone"`` exists here (cbct is cone-beam only)."""
    if mode != "cone":
        raise ValueError(f"mode: {mode!r} not supported: cbct is cone-beam only (use mode='cone')")
    return geometry_default(high_resolution, nVoxel) if default else Geometry()


def cone_geometry(geo: Any, angles) -> ConeGeometry:
    """The :class:`ConeGeometry` of any TIGRE-style ``geo`` (object or dict) and ``angles``."""
    return from_tigre(geo, angles)
