"""SBP-MAC training data that looks like a clinical dental scan: anatomy larger than the field of view.

A sample (:func:`simulate_truncated_sample`, a pure function of its :class:`~cbct.sbp_mac.data.SampleSpec` and the
:class:`TruncatedScanConfig`) is made as follows; every random draw comes from the spec's streams:

1. the object on a large *outer* grid (about 200 mm across, ``outer_voxel_factor`` times coarser than the field of
   view) around the field of view: ``"dental"``, the project's procedural dental phantom at a random adult scale,
   whose soft tissue fills the outer grid (the face, cheeks and neck overflow the field of view), or
   ``"ellipsoids"``, the random ellipsoid dental head (:func:`cbct.sbp_mac.objects.ellipsoid_head`) of radius
   ``head_radius_mm`` (also larger than the field of view);
   randomly mirrored front to back, and multiplied by an attenuation scale drawn in ``attenuation_scale``;
2. the field of view: a (z, y, x) grid of ``volume_shape`` voxels of a size drawn in ``voxel_size``, centred on the
   rotation axis; a detector whose half fan covers ``detector_margin`` (drawn) times the field of view's radius, so
   the projections of the wider anatomy are truncated laterally (and in z by the cone);
3. the *residual* motion a compensation leaves (simulated, not estimated: running the estimation on every training
   scan is too slow for the CPU budget): with probability ``still_fraction`` none (a still scan); otherwise a motion
   of the spec's waveform with the patient at the static pose at view 0 (``reference="first"``, the declared output
   pose), amplitudes drawn in ``[min_motion_fraction, 1]`` times ``max_rotation_deg`` / ``max_translation_mm``;
4. Joseph projection (cbct's) of the outer grid along the moving views, Poisson noise (``i0`` drawn log-uniformly),
   FDK filtering (with cbct's truncation handling) and the K-segment backprojection with the nominal geometry: the
   network's input, as after a compensation with that residual error;
5. the reference: FDK of the noise-free still scan of the same object.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pathlib
import time
from collections.abc import Sequence

import numpy as np

from cbct.fdk import fdk, fdk_filter
from cbct.geometry import ConeGeometry, VolumeGrid
from cbct.operators import project, segmented_backproject
from cbct.phantoms.dental import dental_phantom
from cbct.sbp_mac.cache import Sample, SplitArrays, content_key, load_split, write_split
from cbct.sbp_mac.data import SampleSpec, _streams
from cbct.sbp_mac.objects import ellipsoid_head
from cbct.sbp_mac.scan_base import MotionBounds, SimulatedScanner
from cbct.simulation.motion import RigidMotion, evaluate_motion
from cbct.simulation.noise import add_noise

log = logging.getLogger(__name__)

__all__ = ["TRUNCATED_SOURCES", "TruncatedScanConfig", "cached_truncated_split", "fov_geometry", "simulate_truncated_sample"]

TRUNCATED_SOURCES = ("dental", "ellipsoids")


def _pair(name: str, value: Sequence[float], lowest: float = 0.0) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not lowest <= lo <= hi:
        raise ValueError(f"{name} must be (low, high) with {lowest} <= low <= high, got {tuple(value)}")
    return lo, hi


@dataclasses.dataclass(frozen=True)
class TruncatedScanConfig(SimulatedScanner):
    """The simulated acquisitions of truncated training scans (ranges are ``(low, high)``, drawn per scan); from
    :class:`~cbct.sbp_mac.scan_base.SimulatedScanner`: ``n_views``, ``dso``, ``dsd``, ``filter`` and the ``motion``
    bounds of the residual motion (smaller than the held-out motion: what estimation leaves).

    Attributes:
        volume_shape: ``(nz, ny, nx)`` voxels of the field of view (centred on the rotation axis).
        voxel_size: range of the isotropic voxel edge, mm.
        n_segments: K angular segments.
        i0: range of photons per unattenuated pixel (log-uniform).
        attenuation_scale: range of the factor on the object's attenuation.
        detector_margin: range of the detector's half fan over the field of view's radius (lateral truncation of
            the wider anatomy always; ``< 1`` also cuts into the field of view).
        head_radius_mm: range of the radius of the random ellipsoid heads.
        dental_scale: range of the dental phantom's size relative to an adult.
        outer_half_width_mm: half width (x, y) of the outer grid the object lives on, mm.
        outer_voxel_factor: outer voxel edge over the field of view's.
        still_fraction: probability of a scan without motion.
        fov_margin_mm: the metrics' disc is this much inside the grid's inscribed circle.
    """

    motion: MotionBounds = MotionBounds(max_rotation_deg=1.0, max_translation_mm=1.0, min_motion_fraction=0.1,
                                        pivot=(0.0, 60.0, -40.0))
    volume_shape: tuple[int, int, int] = (48, 96, 96)
    voxel_size: tuple[float, float] = (0.75, 0.95)
    n_segments: int = 8
    i0: tuple[float, float] = (5e4, 1e6)
    attenuation_scale: tuple[float, float] = (0.7, 1.4)
    detector_margin: tuple[float, float] = (0.95, 1.3)
    head_radius_mm: tuple[float, float] = (60.0, 90.0)
    dental_scale: tuple[float, float] = (0.85, 1.15)
    outer_half_width_mm: float = 100.0
    outer_voxel_factor: float = 1.5
    still_fraction: float = 0.25
    fov_margin_mm: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        set_ = object.__setattr__
        set_(self, "volume_shape", tuple(int(s) for s in self.volume_shape))
        if len(self.volume_shape) != 3 or min(self.volume_shape) < 4:
            raise ValueError(f"volume_shape must be 3 integers >= 4 (nz, ny, nx), got {self.volume_shape}")
        for name in ("voxel_size", "i0", "attenuation_scale", "detector_margin", "head_radius_mm", "dental_scale"):
            set_(self, name, _pair(name, getattr(self, name)))
        if self.voxel_size[0] <= 0 or self.i0[0] <= 0 or self.attenuation_scale[0] <= 0 or self.detector_margin[0] <= 0:
            raise ValueError("voxel_size, i0, attenuation_scale and detector_margin must be positive ranges")
        if not 1 <= self.n_segments <= self.n_views:
            raise ValueError(f"need 1 <= n_segments <= n_views, got {self.n_segments}, {self.n_views}")
        if not 0.0 <= self.still_fraction <= 1.0 or self.fov_margin_mm < 0:
            raise ValueError("still_fraction must lie in [0, 1] and fov_margin_mm be >= 0")
        if self.outer_voxel_factor < 1 or self.outer_half_width_mm <= 0:
            raise ValueError("outer_voxel_factor must be >= 1 and outer_half_width_mm > 0")

    def fov_radius_voxels(self) -> float:
        """Radius of the metrics' disc in voxels (at the largest voxel size: the margin is at least as wide)."""
        return min(self.volume_shape[1:]) / 2 - self.fov_margin_mm / self.voxel_size[0]


def fov_geometry(
    volume_shape: Sequence[int], voxel_size: float, *, n_views: int, dso: float, dsd: float, detector_margin: float
) -> ConeGeometry:
    """A full circle whose detector's half fan covers ``detector_margin`` times the radius of the field of view
    (the inscribed circle of the grid) laterally and the whole grid in z."""
    nz, ny, nx = (int(s) for s in volume_shape)
    radius = min(ny, nx) * voxel_size / 2
    reach = detector_margin * radius
    if reach >= 0.9 * dso:
        raise ValueError(f"the field of view (radius {reach:.1f} mm) does not fit inside the {dso} mm orbit")
    pixel = dsd / dso * voxel_size
    width = 2 * dsd * reach / math.sqrt(dso**2 - reach**2)
    height = 1.02 * nz * voxel_size * dsd / (dso - radius)
    return ConeGeometry.circular(
        dso=dso, dsd=dsd, detector_shape=(math.ceil(height / pixel), math.ceil(width / pixel)),
        detector_pixel_size=pixel, volume_shape=(nz, ny, nx), voxel_size=voxel_size, n_views=n_views,
    )


def _outer_grid(geom: ConeGeometry, cfg: TruncatedScanConfig, voxel: float) -> VolumeGrid:
    """The grid of the object: ``outer_half_width_mm`` about the axis, in z as far as any ray within it reaches."""
    half_height = geom.detector_shape[0] * float(np.median(geom.pixel_sizes()[:, 0])) / 2
    z_half = half_height * (cfg.dso + cfg.outer_half_width_mm) / cfg.dsd + voxel
    outer = voxel * cfg.outer_voxel_factor
    n_xy = int(math.ceil(2 * cfg.outer_half_width_mm / outer))
    return VolumeGrid((int(math.ceil(2 * z_half / outer)), n_xy, n_xy), outer)


def _object(spec: SampleSpec, cfg: TruncatedScanConfig, grid: VolumeGrid, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The object (z, y, x) in mm⁻¹ on ``grid`` and the attenuation scale it was multiplied by."""
    if spec.source == "dental":
        vol = dental_phantom(grid, rng=int(rng.integers(2**31)), scale=float(rng.uniform(*cfg.dental_scale)))
    elif spec.source == "ellipsoids":
        vol = ellipsoid_head(grid, rng, float(rng.uniform(*cfg.head_radius_mm)))
    else:
        raise ValueError(f"source must be one of {TRUNCATED_SOURCES} for truncated scans, got {spec.source!r}")
    if rng.random() < 0.5:  # face towards -y or +y
        vol = vol[:, ::-1]
    scale = float(rng.uniform(*cfg.attenuation_scale))
    return np.ascontiguousarray(vol * np.float32(scale), dtype=np.float32), scale


def _residual_motion(spec: SampleSpec, cfg: TruncatedScanConfig, rng: np.random.Generator) -> RigidMotion:
    if rng.random() < cfg.still_fraction:
        return RigidMotion.none(cfg.n_views, cfg.motion.pivot)
    params = cfg.motion.draw(spec.waveform, rng, reference="first", mixed_kinds=spec.mixed_kinds)
    return evaluate_motion(params, cfg.n_views)


def simulate_truncated_sample(spec: SampleSpec, cfg: TruncatedScanConfig) -> Sample:
    """Simulate and reconstruct one truncated training scan (a pure function of ``spec`` and ``cfg``)."""
    t0 = time.perf_counter()
    obj_rng, motion_rng, noise_rng = _streams(spec)
    voxel = float(obj_rng.uniform(*cfg.voxel_size))
    margin = float(obj_rng.uniform(*cfg.detector_margin))
    geom = fov_geometry(cfg.volume_shape, voxel, n_views=cfg.n_views, dso=cfg.dso, dsd=cfg.dsd, detector_margin=margin)
    outer = _outer_grid(geom, cfg, voxel)
    vol, scale = _object(spec, cfg, outer, obj_rng)
    motion = _residual_motion(spec, cfg, motion_rng)
    i0 = float(math.exp(noise_rng.uniform(math.log(cfg.i0[0]), math.log(cfg.i0[1]))))
    moving = add_noise(project(vol, motion.apply(geom).with_volume(outer)), i0=i0, rng=noise_rng)
    filtered, fgeom = fdk_filter(moving, geom, filter=cfg.filter)
    segments = segmented_backproject(filtered, fgeom, cfg.n_segments)
    still = project(vol, geom.with_volume(outer))
    reference = fdk(still, geom, filter=cfg.filter)
    image = segments.sum(axis=0)
    meta = {
        **dataclasses.asdict(spec), "i0": i0, "voxel_size": voxel, "detector_margin": margin, "attenuation_scale": scale,
        "edge_over_max_line_integral": float(still[:, :, [0, -1]].max() / max(float(still.max()), 1e-12)),
        "detector_shape": list(geom.detector_shape), "outer_shape": list(outer.shape),
        "still": motion.is_identity(), "max_rotation_deg": float(motion.rotation_angles_deg().max()),
        "max_translation_mm": float(motion.translation_norms_mm().max()),
        "outside_fraction": 0.0, "seconds": 0.0,
    }
    meta["outside_fraction"] = _outside_fraction(vol, outer, geom.volume)
    meta["seconds"] = time.perf_counter() - t0
    return Sample(image, segments, reference, meta, image)


def _outside_fraction(vol: np.ndarray, outer: VolumeGrid, fov: VolumeGrid) -> float:
    """The fraction of the object's attenuation (integral) that lies outside the field of view's grid."""
    aff = outer.index_to_world()
    axes = [aff[a, 3] + np.arange(outer.shape[2 - a]) * aff[a, a] for a in range(3)]  # x, y, z centres
    half = [s / 2 for s in fov.size[::-1]]  # x, y, z
    inside = [np.abs(c) <= h for c, h in zip(axes, half)]
    total = float(vol.sum())
    within = float(vol[np.ix_(inside[2], inside[1], inside[0])].sum())
    return 1.0 - within / total if total > 0 else 0.0


def truncated_split_key(specs: Sequence[SampleSpec], cfg: TruncatedScanConfig) -> str:
    """A short hash of everything that defines a truncated split's content (``version`` 2: the ellipsoid heads of
    :mod:`cbct.phantoms.random_head`)."""
    return content_key({"kind": "truncated", "scan": cfg.to_dict(), "specs": [dataclasses.asdict(s) for s in specs],
                        "version": 2})


def cached_truncated_split(
    specs: Sequence[SampleSpec], cfg: TruncatedScanConfig, cache_dir: str | os.PathLike, name: str
) -> SplitArrays:
    """Build (once) and load the truncated split ``name`` of ``specs`` under ``cache_dir``."""
    key = truncated_split_key(specs, cfg)
    path = pathlib.Path(cache_dir) / f"{name}-truncated-{key}.h5"
    write_split(path, key, specs, lambda spec: simulate_truncated_sample(spec, cfg), shape=cfg.volume_shape,
                n_segments=cfg.n_segments, scan=cfg.to_dict(), with_uncorrected=False)
    return load_split(path)
