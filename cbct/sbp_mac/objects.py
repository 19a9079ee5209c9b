"""The objects of simulated SBP-MAC scans (z, y, x) in mm⁻¹: the dental phantom, random ellipsoid dental heads and
the real heads (resampled, randomly posed, for training views of TIGRE's head), cut to a cylinder about the axis."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from cbct.geometry import VolumeGrid
from cbct.phantoms import real
from cbct.phantoms.dental import dental_phantom
from cbct.phantoms.ellipsoids import Ellipsoid, voxelize

__all__ = ["AIR_FLOOR", "SOURCES", "WATER_MU", "random_dental_head", "source_volume"]

SOURCES = ("dental", "ellipsoids", "tigre_head", "head_mha")
WATER_MU = 0.02  # mm⁻¹, water at ~70 keV
AIR_FLOOR = 0.15  # real volumes: values below this fraction of water are air and set to 0


def random_dental_head(grid: VolumeGrid, rng: np.random.Generator, radius_mm: float | None = None) -> np.ndarray:
    """A random ellipsoid dental head (z, y, x) in mm⁻¹ that fits in a cylinder of ``radius_mm`` about the axis.

    Soft tissue, a cortical skull/jaw ring, a U-shaped arch of 10-16 teeth (enamel-dense crowns, roots along z,
    pulp canals), alveolar bone, the airway and cervical spine behind, and a few random inclusions. Anterior is +y.
    """
    radius = radius_mm if radius_mm is not None else min(grid.size[1:]) / 2
    zext = grid.size[0] / 2
    u = rng.uniform
    sc = radius / 44.0  # sizes below are for a 44 mm head radius
    a, b = radius * u(0.80, 0.95), radius * u(0.85, 0.97)
    e: list[Ellipsoid] = [Ellipsoid(WATER_MU * u(0.95, 1.05), (0.0, 0.0, 0.0), (a, b, 4 * zext))]
    # cortical ring (bone) just inside the skin: outer minus inner ellipsoid
    bone = WATER_MU * u(0.6, 0.9)
    e += [
        Ellipsoid(bone, (0.0, 0.0, 0.0), (0.92 * a, 0.92 * b, 4 * zext)),
        Ellipsoid(-bone, (0.0, 0.0, 0.0), (0.92 * a - sc * u(2.5, 4.5), 0.92 * b - sc * u(2.5, 4.5), 4 * zext)),
    ]
    # dental arch y = y0 - k x^2 (anterior +y), teeth along it
    y0 = 0.55 * b * u(0.9, 1.05)
    half_width = 0.6 * a * u(0.85, 1.0)
    k = (y0 + 0.25 * b) / half_width**2
    z_occ = u(-0.2, 0.2) * zext  # occlusal plane height
    n_teeth = int(rng.integers(10, 17))
    xs = np.linspace(-half_width, half_width, n_teeth) + rng.normal(0, 0.6, n_teeth)
    enamel = WATER_MU * u(2.2, 2.8)
    dentin = enamel * u(0.55, 0.7)
    alveolar = WATER_MU * u(0.3, 0.5)
    crowns: list[Ellipsoid] = []
    roots: list[Ellipsoid] = []
    pulps: list[Ellipsoid] = []
    for x in xs:
        y = y0 - k * x * x
        phi = math.atan2(1.0, -2 * k * x)  # tangent of the arch
        width = sc * u(2.8, 4.0)
        depth = sc * u(3.0, 4.5)
        for sign in (1.0, -1.0):  # upper and lower jaw; some teeth missing
            if rng.random() < 0.15:
                continue
            crown_z = z_occ + sign * sc * u(3.0, 5.0)
            root_z = z_occ + sign * sc * u(11.0, 15.0)
            crowns.append(Ellipsoid(1.0, (x, y, crown_z), (width, depth, sc * u(3.5, 5.0)), phi))
            roots.append(Ellipsoid(1.0, (x, y, root_z), (0.6 * width, 0.6 * depth, sc * u(6.0, 9.0)), phi))
            pulps.append(Ellipsoid(1.0, (x, y, 0.5 * (crown_z + root_z)), (0.25 * width, 0.25 * depth, sc * u(5.0, 8.0)), phi))
    # alveolar bone of both jaws along the arch (under the teeth)
    for x in np.linspace(-half_width, half_width, 9):
        y = y0 - k * x * x
        phi = math.atan2(1.0, -2 * k * x)
        for sign in (1.0, -1.0):
            e.append(Ellipsoid(alveolar, (x, y, z_occ + sign * sc * 14.0), (sc * u(6.0, 8.0), sc * u(5.0, 7.0), sc * u(8.0, 11.0)), phi))
    # airway and cervical spine, posterior
    e.append(Ellipsoid(-WATER_MU * u(0.9, 1.0), (sc * u(-3, 3), -0.35 * b, 0.0), (sc * u(5, 9), sc * u(4, 8), 4 * zext), u(-0.3, 0.3)))
    e.append(Ellipsoid(WATER_MU * u(0.5, 0.8), (0.0, -0.68 * b, 0.0), (sc * u(8, 11), sc * u(6, 9), 4 * zext)))
    # random inclusions (lesions, sinuses, implants of bone density)
    for _ in range(int(rng.integers(3, 9))):
        r = float(np.sqrt(u(0, 1)) * 0.6 * min(a, b))
        t = u(0, 2 * np.pi)
        e.append(Ellipsoid(
            WATER_MU * u(-0.5, 0.8), (r * math.cos(t), r * math.sin(t), u(-0.8, 0.8) * zext),
            (sc * u(2, 8), sc * u(2, 8), sc * u(2, 10)), u(0, np.pi),
        ))
    vol = voxelize(e, grid, supersample=2).astype(np.float64)
    # teeth replace what lies under them (no density pile-up where they touch): dentin, enamel caps, pulp
    soft = e[0].density
    for parts, density in ((crowns + roots, dentin), (crowns, enamel), (pulps, soft)):
        frac = np.minimum(voxelize(parts, grid, supersample=2, dtype=np.float64), 1.0)
        vol += frac * (density - vol)
    return np.maximum(vol, 0.0).astype(np.float32)


def _load_real(name: str) -> tuple[np.ndarray, VolumeGrid]:
    """A real-anatomy volume (mm⁻¹) and its grid, from :mod:`cbct.phantoms.real`."""
    return real.load_real_head(name)


def _resample_real(
    vol: np.ndarray, src: VolumeGrid, grid: VolumeGrid, radius_mm: float, rng: np.random.Generator | None
) -> np.ndarray:
    """``vol`` resampled onto ``grid`` (trilinear), scaled so the head's cross-section fits ``radius_mm``.

    With ``rng`` (training views): random rotation about z, a tilt of up to 5°, a scale of 0.6-1.4 times the fit
    (from a head with air around it to a zoom into the interior) and a shift of the centre; without it, the
    centred, fitted view.
    """
    mask = vol > 0.3 * WATER_MU
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    centre_idx = (lo + hi) / 2.0
    aff = src.index_to_world()
    centre = aff[:3, :3] @ centre_idx[::-1] + aff[:3, 3]  # world (x, y, z)
    extent_xy = max((hi[2] - lo[2]) * src.voxel_size[2], (hi[1] - lo[1]) * src.voxel_size[1]) / 2
    scale = radius_mm / extent_xy  # grid mm per source mm
    rot = np.eye(3)
    if rng is not None:
        scale *= rng.uniform(0.6, 1.4)
        angle, tilt_axis, tilt = rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi), math.radians(rng.uniform(0, 5))
        c, s = math.cos(angle), math.sin(angle)
        rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
        axis = np.array([math.cos(tilt_axis), math.sin(tilt_axis), 0.0])
        kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rt = np.eye(3) + math.sin(tilt) * kx + (1 - math.cos(tilt)) * kx @ kx
        rot = rt @ rz
        z_half = (hi[0] - lo[0]) * src.voxel_size[0] / 2
        centre = centre + np.array([*rng.uniform(-0.1, 0.1, 2) * extent_xy, rng.uniform(-0.4, 0.4) * z_half])
    nz, ny, nx = grid.shape
    ga = grid.index_to_world()
    kk, jj, ii = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    pts = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=0).astype(np.float64)
    world = ga[:3, :3] @ pts + ga[:3, 3:4]  # grid world (x, y, z)
    src_world = rot.T @ (world / scale) + centre[:, None]
    inv = src.world_to_index()
    src_idx = inv[:3, :3] @ src_world + inv[:3, 3:4]  # (i, j, k)
    out = ndimage.map_coordinates(vol, src_idx[::-1], order=1, mode="constant", cval=0.0).reshape(grid.shape)
    return out.astype(np.float32)


def source_volume(source: str, grid: VolumeGrid, rng: np.random.Generator, *, radius_mm: float, augment: bool = True) -> np.ndarray:
    """(z, y, x) float32 object in mm⁻¹ from ``source``, zero outside the cylinder of ``radius_mm`` about the axis."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "dental":
        vol = np.asarray(dental_phantom(grid, rng=int(rng.integers(2**31))), dtype=np.float32)
    elif source == "ellipsoids":  # augmented: sometimes smaller than the field of view, with air around it
        vol = random_dental_head(grid, rng, radius_mm * (rng.uniform(0.65, 1.0) if augment else 1.0))
    else:
        real, src_grid = _load_real(source)
        vol = _resample_real(real, src_grid, grid, radius_mm, rng if augment else None)
        # the scanned volumes carry a noise floor in air (head.mha: ~0.002 mm⁻¹); air is part of no object
        vol = np.where(vol < AIR_FLOOR * WATER_MU, 0.0, vol)
    aff = grid.index_to_world()
    x = aff[0, 3] + np.arange(grid.shape[2]) * grid.voxel_size[2]
    y = aff[1, 3] + np.arange(grid.shape[1]) * grid.voxel_size[1]
    inside = (x[None, :] ** 2 + y[:, None] ** 2) <= radius_mm**2
    return np.ascontiguousarray(vol * inside[None], dtype=np.float32)
