"""Simulated scans: a phantom or a volume scanned on a circular orbit, with sparse views, rigid patient motion and
noise; the one ``simulate_scan`` behind ``cbct simulate``, the manifests' ``simulate`` entries and the demo's orbit.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cbct.geometry import ConeGeometry, VolumeGrid
from cbct.io import read_volume
from cbct.volume import Volume
from cbct.memory import check_memory, simulation_bytes
from cbct.operators import project
from cbct.phantoms import dental_phantom, shepp_logan_projections, shepp_logan_volume
from cbct.scan import Scan
from cbct.simulation.motion import random_motion
from cbct.simulation.noise import add_noise
from cbct.simulation.sparse import sparse_views

log = logging.getLogger(__name__)

__all__ = ["simulate_scan", "scan_geometry", "PHANTOMS", "DEFAULT_DSO", "DEFAULT_DSD"]

PHANTOMS = ("shepp-logan", "dental")
DEFAULT_DSO = 500.0  # mm, dental CBCT source to axis
DEFAULT_DSD = 700.0  # mm, source to detector


def scan_geometry(grid: VolumeGrid, *, n_views: int, dso: float = DEFAULT_DSO, dsd: float = DEFAULT_DSD,
                  arc_deg: float = 360.0, pixel_size: float | None = None,
                  detector_shape: tuple[int, int] | None = None) -> ConeGeometry:
    """A circular scan whose detector covers ``grid`` (5 % margin); pixels default to magnified voxels."""
    radius = float(np.hypot(grid.size[1], grid.size[2]) / 2 + np.hypot(grid.offset[1], grid.offset[2]))
    half_height = grid.size[0] / 2 + abs(grid.offset[0])
    if radius >= dso:
        raise ValueError(f"the volume (radius {radius:.1f} mm in the axial plane) does not fit inside the {dso} mm orbit")
    pixel = float(pixel_size if pixel_size is not None else dsd / dso * min(grid.voxel_size))
    if detector_shape is None:
        width = 1.05 * 2 * dsd * radius / np.sqrt(dso**2 - radius**2)
        height = 1.05 * 2 * half_height * dsd / (dso - radius)
        detector_shape = (int(np.ceil(height / pixel)), int(np.ceil(width / pixel)))
    return ConeGeometry.circular(dso=dso, dsd=dsd, detector_shape=detector_shape, detector_pixel_size=pixel,
                                 volume_shape=grid.shape, voxel_size=grid.voxel_size, volume_offset=grid.offset,
                                 n_views=n_views, arc=np.radians(arc_deg))


def _check_arguments(*, size: int, fov: float, views: int, arc_deg: float, dso: float, dsd: float, downsample: int,
                     sparse: int | None, noise: float | None) -> None:
    """Refuse impossible requests before anything is allocated (each message names the argument)."""
    def whole(name: str, value: Any, low: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")

    whole("size", size, 2)
    whole("views", views, 1)
    whole("downsample", downsample, 1)
    if sparse is not None:
        whole("sparse", sparse, 1)
    for name, value in (("fov", fov), ("dso", dso), ("dsd", dsd), ("arc_deg", arc_deg)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if arc_deg > 360:
        raise ValueError(f"arc_deg must be at most 360, got {arc_deg}")
    if dsd <= dso:
        raise ValueError(f"dsd ({dsd} mm) must exceed dso ({dso} mm): the detector lies beyond the rotation axis")
    if noise is not None and (not isinstance(noise, (int, float)) or isinstance(noise, bool) or not noise > 0):
        raise ValueError(f"noise (photons per pixel, I0) must be a positive number, got {noise!r}")


def _downsample(data: np.ndarray, grid: VolumeGrid, factor: int) -> tuple[np.ndarray, VolumeGrid]:
    if factor == 1:
        return data, grid
    shape = tuple(s // factor for s in data.shape)
    if min(shape) < 1:
        raise ValueError(f"downsample factor {factor} is larger than the volume {data.shape}")
    cut = data[: shape[0] * factor, : shape[1] * factor, : shape[2] * factor]
    pooled = cut.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean(axis=(1, 3, 5))
    return pooled.astype(np.float32), VolumeGrid(shape, tuple(d * factor for d in grid.voxel_size), grid.offset)


def simulate_scan(
    *,
    phantom: str | None = "shepp-logan",
    volume: Any = None,
    volume_format: str | None = None,
    volume_options: dict[str, Any] | None = None,
    scale: float | None = None,
    flip: list[str] | tuple[str, ...] = (),
    downsample: int = 1,
    size: int = 64,
    fov: float = 80.0,
    views: int = 180,
    arc_deg: float = 360.0,
    dso: float = DEFAULT_DSO,
    dsd: float = DEFAULT_DSD,
    sparse: int | None = None,
    motion: str | None = None,
    max_rotation_deg: float = 2.0,
    max_translation_mm: float = 2.0,
    noise: float | None = None,
    electronic_sigma: float = 0.0,
    raw: bool = False,
    metal: bool = False,
    seed: int = 0,
    id: str = "simulated",
):
    """Simulate a circular cone-beam scan and return it as a :class:`cbct.Scan` (ground truth in ``reference``).

    Args:
        phantom: ``"shepp-logan"`` (exact analytic projections) or ``"dental"`` (procedural phantom, projected
            with the Joseph projector); ignored when ``volume`` is given.
        volume: a :class:`cbct.io.Volume`, or a path read with :func:`cbct.io.read_volume` (DICOM series, NIfTI,
            HDF5, MetaImage, .mat) with ``volume_format``/``volume_options``; values must be mm⁻¹ after ``scale``.
        scale: multiply the input volume (e.g. 1.9e-5 for ``head.mha`` units).
        flip: axes of the input volume to reverse (``"z"``, ``"y"``, ``"x"``), to bring it into cbct's frame
            (``+z`` towards the top of the head, face towards ``-y``); e.g. ``["z", "y"]`` for ``head.mha``.
        downsample: average ``downsample``³ blocks of the input volume first.
        size, fov: phantom grid: ``size``³ voxels over ``fov`` mm.
        views, arc_deg, dso, dsd: the circular orbit (mm, degrees); the detector is sized to cover the volume.
        sparse: keep every ``sparse``-th view (:func:`cbct.simulation.sparse.sparse_views`).
        motion: rigid patient motion waveform (``jerk``, ``drift``, ``nodding``, ``tilting``, ``tremor``,
            ``mixed``; :func:`cbct.simulation.motion.random_motion`): projections of the moving patient, nominal
            geometry saved.
        max_rotation_deg, max_translation_mm: motion amplitude.
        noise: incident photons per pixel ``I0`` (Poisson + electronic noise, :func:`cbct.simulation.noise.add_noise`).
        electronic_sigma: electronic noise in counts.
        raw: store raw counts with flat/dark frames instead of line integrals (needs ``noise``).
        metal: metal restorations in the dental phantom.
        seed: seeds every random draw (phantom, motion, noise).
        id: scan id.
    """
    _check_arguments(size=size, fov=fov, views=views, arc_deg=arc_deg, dso=dso, dsd=dsd, downsample=downsample,
                     sparse=sparse, noise=noise)
    rng = np.random.default_rng(seed)
    meta: dict[str, Any] = {"id": id, "simulated": True, "seed": seed}
    if volume is not None:
        vol = volume if isinstance(volume, Volume) else read_volume(volume, format=volume_format, **(volume_options or {}))
        data = np.asarray(vol.data, dtype=np.float32)
        if scale is not None:
            data = data * np.float32(scale)
        axes = {"z": 0, "y": 1, "x": 2}
        bad = [a for a in flip if a not in axes]
        if bad:
            raise ValueError(f"flip takes axes 'z', 'y', 'x', got {bad}")
        if flip:
            data = np.ascontiguousarray(np.flip(data, axis=tuple(axes[a] for a in flip)))
        data, grid = _downsample(data, vol.grid, int(downsample))
        grid = VolumeGrid(grid.shape, grid.voxel_size)  # centre it on the rotation axis
        if float(data.max()) > 1.0:
            log.warning("input volume reaches %.3g: attenuation in mm^-1 rarely exceeds 1 (pass scale=)", float(data.max()))
        meta["source_volume"] = str(volume) if not isinstance(volume, Volume) else vol.metadata.get("source", "array")
        kind = "volume"
    else:
        if phantom not in PHANTOMS:
            raise ValueError(f"phantom must be one of {', '.join(PHANTOMS)}, got {phantom!r}")
        grid = VolumeGrid(size, fov / size)
        plan = scan_geometry(grid, n_views=views, dso=dso, dsd=dsd, arc_deg=arc_deg)
        check_memory(simulation_bytes(grid.shape, views, plan.detector_shape),
                     f"simulating a {size}^3 {phantom} phantom scanned with {views} views of "
                     f"{plan.detector_shape[0]} x {plan.detector_shape[1]} pixels")
        kind = phantom
        if phantom == "dental":
            data = np.asarray(dental_phantom(grid, rng=seed, metal=metal), dtype=np.float32)
        else:
            data = shepp_logan_volume(grid)
    meta["phantom"] = kind
    geom = scan_geometry(grid, n_views=views, dso=dso, dsd=dsd, arc_deg=arc_deg)
    if kind == "volume":  # the volume is read; its projections are not made yet
        check_memory(simulation_bytes((1, 1, 1), views, geom.detector_shape),
                     f"projecting {meta['source_volume']} with {views} views of {geom.detector_shape[0]} x "
                     f"{geom.detector_shape[1]} pixels")
    acquired = geom
    if motion:
        moving = random_motion(geom.n_views, waveform=motion, max_rotation_deg=max_rotation_deg,
                               max_translation_mm=max_translation_mm, rng=seed)
        acquired = moving.apply(geom)
        meta["motion"] = {"waveform": motion, "max_rotation_deg": max_rotation_deg,
                          "max_translation_mm": max_translation_mm, "seed": seed,
                          "rotation_vectors": np.asarray(moving.rotation_vectors()).tolist(),
                          "translations_mm": np.asarray(moving.translations).tolist()}
    if kind == "shepp-logan":
        projections = shepp_logan_projections(acquired)  # exact line integrals (half size from the same grid)
    else:
        projections = project(data, acquired)
    if sparse:
        projections, geom, kept = sparse_views(projections, geom, step=int(sparse))
        meta["sparse_step"] = int(sparse)
        meta["sparse"] = {"step": int(sparse), "kept_indices": np.asarray(kept).tolist(), "n_views_full": views}
    reference = Volume(data, grid, {"units": "mm^-1", "phantom": kind})
    if raw:
        if noise is None:
            raise ValueError("raw counts need a photon count: give noise (I0)")
        dark_level = 100.0
        expected = noise * np.exp(-np.asarray(projections, np.float64))
        counts = rng.poisson(expected) + dark_level
        flat = rng.poisson(noise, size=(4, *geom.detector_shape)) + dark_level
        dark = np.full((4, *geom.detector_shape), dark_level)
        if electronic_sigma > 0:
            counts = counts + rng.normal(0.0, electronic_sigma, counts.shape)
            flat = flat + rng.normal(0.0, electronic_sigma, flat.shape)
            dark = dark + rng.normal(0.0, electronic_sigma, dark.shape)
        meta["noise"] = {"i0": noise, "electronic_sigma": electronic_sigma, "dark_level": dark_level}
        return Scan.from_arrays(geom, counts=counts.astype(np.float32), flat=flat.astype(np.float32),
                                dark=dark.astype(np.float32), metadata=meta, reference=reference)
    if noise is not None:
        projections = add_noise(projections, i0=noise, electronic_sigma=electronic_sigma, rng=rng)
        meta["noise"] = {"i0": noise, "electronic_sigma": electronic_sigma}
    return Scan.from_arrays(geom, projections=np.asarray(projections, np.float32), metadata=meta, reference=reference)
