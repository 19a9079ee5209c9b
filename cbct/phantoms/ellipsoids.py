"""Phantoms made of ellipsoids (and elliptic cylinders): voxel volumes and exact line integrals.

An ellipsoid is ``(density, centre (x, y, z) mm, semi-axes (a, b, c) mm, rotation about z in radians)``;
densities add where ellipsoids overlap. Line integrals are exact chord lengths times densities, so the
projections of such a phantom are free of discretisation error, for any geometry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from cbct.geometry import ConeGeometry, VolumeGrid


@dataclasses.dataclass(frozen=True)
class Ellipsoid:
    """One ellipsoid: density in mm⁻¹, centre and semi-axes in mm (world x, y, z), rotation about z (rad).

    ``cylinder=True`` makes it an elliptic cylinder of half-height ``semi_axes[2]`` instead.
    """

    density: float
    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    phi: float = 0.0
    cylinder: bool = False

    def _to_unit(self) -> tuple[np.ndarray, np.ndarray]:
        """Linear map and shift taking world points to the unit-ellipsoid frame."""
        c, s = np.cos(self.phi), np.sin(self.phi)
        rot_t = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
        lin = rot_t / np.asarray(self.semi_axes, np.float64)[:, None]
        return lin, -lin @ np.asarray(self.centre, np.float64)


def voxelize(ellipsoids: Sequence[Ellipsoid], grid: VolumeGrid, supersample: int = 1, dtype=np.float32) -> np.ndarray:
    """(nz, ny, nx) volume: the density at each voxel centre (averaged over ``supersample``³ sub-points)."""
    nz, ny, nx = grid.shape
    dz, dy, dx = grid.voxel_size
    aff = grid.index_to_world()
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    out = np.zeros(grid.shape, dtype=np.float64)
    for oz in sub:
        for oy in sub:
            for ox in sub:
                x = aff[0, 3] + (np.arange(nx) + ox) * dx
                y = aff[1, 3] + (np.arange(ny) + oy) * dy
                z = aff[2, 3] + (np.arange(nz) + oz) * dz
                for e in ellipsoids:
                    lin, shift = e._to_unit()
                    # rotation is about z only: x', y' depend on (x, y); z' on z
                    px = lin[0, 0] * x[None, :] + lin[0, 1] * y[:, None] + shift[0]
                    py = lin[1, 0] * x[None, :] + lin[1, 1] * y[:, None] + shift[1]
                    pz = lin[2, 2] * z + shift[2]
                    if e.cylinder:
                        inside = (px**2 + py**2 <= 1.0)[None, :, :] & (np.abs(pz) <= 1.0)[:, None, None]
                    else:
                        inside = (px**2 + py**2)[None, :, :] + (pz**2)[:, None, None] <= 1.0
                    out += e.density * inside
    return (out / supersample**3).astype(dtype)


def line_integrals(ellipsoids: Sequence[Ellipsoid], geom: ConeGeometry, dtype=np.float32) -> np.ndarray:
    """(n_views, nv, nu) exact line integrals through the phantom along every detector ray of ``geom``."""
    nv, nu = geom.detector_shape
    out = np.zeros(geom.projection_shape, dtype=np.float64)
    iu = np.arange(nu) - (nu - 1) / 2
    iv = np.arange(nv) - (nv - 1) / 2
    for view in range(geom.n_views):
        src = geom.sources[view]
        pix = (
            geom.detector_centres[view][None, None, :]
            + iu[None, :, None] * geom.u_vectors[view][None, None, :]
            + iv[:, None, None] * geom.v_vectors[view][None, None, :]
        )
        direction = pix - src  # (nv, nu, 3), t in [0, 1] from source to pixel
        length = np.linalg.norm(direction, axis=-1)
        for e in ellipsoids:
            lin, shift = e._to_unit()
            q0 = lin @ src + shift
            d = direction @ lin.T
            out[view] += e.density * length * _chord_parameter(q0, d, e.cylinder)
    return out.astype(dtype)


def _chord_parameter(q0: np.ndarray, d: np.ndarray, cylinder: bool) -> np.ndarray:
    """Length in ray parameter t of the chord of ``q0 + t d`` through the unit sphere (or unit cylinder)."""
    if not cylinder:
        a = np.sum(d * d, axis=-1)
        b = 2 * d @ q0
        c = q0 @ q0 - 1.0
        disc = b * b - 4 * a * c
        return np.where(disc > 0, np.sqrt(np.maximum(disc, 0)) / a, 0.0)
    # infinite cylinder x² + y² <= 1 intersected with the slab |z| <= 1
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = 2 * (d[..., 0] * q0[0] + d[..., 1] * q0[1])
    c = q0[0] ** 2 + q0[1] ** 2 - 1.0
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        sq = np.sqrt(np.maximum(disc, 0))
        t_in = np.where(a > 0, (-b - sq) / (2 * a), -np.inf)
        t_out = np.where(a > 0, (-b + sq) / (2 * a), np.inf)
        hit_side = (a > 0) & (disc > 0) | (a == 0) & (c <= 0)
        tz1 = np.where(d[..., 2] != 0, (-1.0 - q0[2]) / d[..., 2], -np.inf)
        tz2 = np.where(d[..., 2] != 0, (1.0 - q0[2]) / d[..., 2], np.inf)
    in_slab = (d[..., 2] != 0) | (np.abs(q0[2]) <= 1.0)
    lo = np.maximum(t_in, np.minimum(tz1, tz2))
    hi = np.minimum(t_out, np.maximum(tz1, tz2))
    return np.where(hit_side & in_slab & (hi > lo), hi - lo, 0.0)
