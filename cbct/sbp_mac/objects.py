"""The objects of simulated SBP-MAC scans (z, y, x) in mm⁻¹: the dental phantom, the random ellipsoid dental head
(:mod:`cbct.phantoms.random_head`) and the real heads (resampled, randomly posed, for training views of TIGRE's
head), cut to a cylinder about the axis."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from cbct.constants import MU_WATER
from cbct.geometry import VolumeGrid
from cbct.phantoms import real
from cbct.phantoms.dental import dental_phantom
from cbct.phantoms.random_head import ADULT_RADIUS_MM, random_head_volume

__all__ = ["AIR_FLOOR", "SOURCES", "ellipsoid_head", "source_volume"]

SOURCES = ("dental", "ellipsoids", "tigre_head", "head_mha")
AIR_FLOOR = 0.15  # real volumes: values below this fraction of water are air and set to 0


def ellipsoid_head(grid: VolumeGrid, rng: np.random.Generator, radius_mm: float) -> np.ndarray:
    """The ``"ellipsoids"`` source (z, y, x) float32 in mm⁻¹: a random ellipsoid dental head
    (:func:`cbct.phantoms.random_head.random_head_volume`) of ``radius_mm`` (within 1.055 × it of the axis), scaled
    uniformly (heights too, so its jaw lies near z = 0 of a small grid), with random inclusions (lesions, cavities,
    bone islands), 2³ sub-points per voxel, negative sums clipped to 0."""
    return random_head_volume(grid, rng, radius_mm, height_scale=radius_mm / ADULT_RADIUS_MM, inclusions=True,
                              supersample=2, clip_at_zero=True)


def _resample_real(
    vol: np.ndarray, src: VolumeGrid, grid: VolumeGrid, radius_mm: float, rng: np.random.Generator | None
) -> np.ndarray:
    """``vol`` resampled onto ``grid`` (trilinear), scaled so the head's cross-section fits ``radius_mm``.

    With ``rng`` (training views): random rotation about z, a tilt of up to 5°, a scale of 0.6-1.4 times the fit
    (from a head with air around it to a zoom into the interior) and a shift of the centre; without it, the
    centred, fitted view.
    """
    mask = vol > 0.3 * MU_WATER
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
        vol = ellipsoid_head(grid, rng, radius_mm * (rng.uniform(0.65, 1.0) if augment else 1.0))
    else:
        head, src_grid = real.load_real_head(source)
        vol = _resample_real(head, src_grid, grid, radius_mm, rng if augment else None)
        # the scanned volumes carry a noise floor in air (head.mha: ~0.002 mm⁻¹); air is part of no object
        vol = np.where(vol < AIR_FLOOR * MU_WATER, 0.0, vol)
    aff = grid.index_to_world()
    x = aff[0, 3] + np.arange(grid.shape[2]) * grid.voxel_size[2]
    y = aff[1, 3] + np.arange(grid.shape[1]) * grid.voxel_size[1]
    inside = (x[None, :] ** 2 + y[:, None] ** 2) <= radius_mm**2
    return np.ascontiguousarray(vol * inside[None], dtype=np.float32)
