"""The 3D modified Shepp–Logan phantom (Toft's contrast, Kak & Slaney's ellipsoids): volume and exact projections."""

from __future__ import annotations

import numpy as np

from cbct.geometry import ConeGeometry, VolumeGrid
from cbct.phantoms.ellipsoids import Ellipsoid, line_integrals, voxelize

# density, centre (x, y, z), semi-axes (a, b, c) in units of the phantom half-size, rotation about z in degrees
_TABLE = (
    (1.0, (0.0, 0.0, 0.0), (0.69, 0.92, 0.81), 0.0),
    (-0.8, (0.0, -0.0184, 0.0), (0.6624, 0.874, 0.78), 0.0),
    (-0.2, (0.22, 0.0, 0.0), (0.11, 0.31, 0.22), -18.0),
    (-0.2, (-0.22, 0.0, 0.0), (0.16, 0.41, 0.28), 18.0),
    (0.1, (0.0, 0.35, -0.15), (0.21, 0.25, 0.41), 0.0),
    (0.1, (0.0, 0.1, 0.25), (0.046, 0.046, 0.05), 0.0),
    (0.1, (0.0, -0.1, 0.25), (0.046, 0.046, 0.05), 0.0),
    (0.1, (-0.08, -0.605, 0.0), (0.046, 0.023, 0.05), 0.0),
    (0.1, (0.0, -0.606, 0.0), (0.023, 0.023, 0.02), 0.0),
    (0.1, (0.06, -0.605, 0.0), (0.023, 0.046, 0.02), 0.0),
)


def shepp_logan(half_size: float = 100.0, mu: float = 0.02) -> list[Ellipsoid]:
    """The phantom's ellipsoids, scaled to ``half_size`` mm (the outer skull spans ±0.92 of it along y) with
    density 1 mapped to ``mu`` mm⁻¹ (0.02 mm⁻¹ is roughly water at 70 keV)."""
    if half_size <= 0 or mu <= 0:
        raise ValueError(f"half_size and mu must be positive, got {half_size}, {mu}")
    return [
        Ellipsoid(rho * mu, tuple(half_size * np.asarray(c)), tuple(half_size * np.asarray(ax)), np.radians(phi))
        for rho, c, ax, phi in _TABLE
    ]


def shepp_logan_volume(grid: VolumeGrid, half_size: float | None = None, mu: float = 0.02, supersample: int = 1) -> np.ndarray:
    """(nz, ny, nx) float32 phantom on ``grid``; ``half_size`` defaults to half the grid's smallest extent."""
    half_size = min(grid.size) / 2 if half_size is None else half_size
    return voxelize(shepp_logan(half_size, mu), grid, supersample)


def shepp_logan_projections(geom: ConeGeometry, half_size: float | None = None, mu: float = 0.02) -> np.ndarray:
    """(n_views, nv, nu) float32 exact line integrals of the phantom (same defaults as the volume)."""
    half_size = min(geom.volume.size) / 2 if half_size is None else half_size
    return line_integrals(shepp_logan(half_size, mu), geom)
