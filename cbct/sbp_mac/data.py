"""SBP-MAC data: motion-corrupted scans, their FDK images, K-segment tensors and motion-free references.

One sample is made from a :class:`SampleSpec` (object source, seed, motion waveform) and a :class:`InGridScanConfig`:

1. an object volume (mm⁻¹) on the scan's grid, from one of :data:`SOURCES`:
   ``"dental"`` (the project's procedural dental phantom, ``cbct.phantoms.dental``), ``"ellipsoids"`` (the random
   ellipsoid dental head, :mod:`cbct.phantoms.random_head`: jaw arches, teeth with pulp, airway, spine, sinus,
   random inclusions), ``"tigre_head"`` (TIGRE's MRI-derived head phantom, randomly rotated,
   scaled and shifted) and ``"head_mha"`` (a real CT of a head, VTK's ``headsq``, scaled to fit the field of view;
   kept for evaluation);
2. a random rigid motion (:mod:`cbct.simulation.motion`, the static pose being the mean pose) applied through the
   geometry; the moving object is projected (Joseph) and Poisson noise added (``i0`` drawn log-uniformly);
3. FDK filtering of the noisy scan, segmented backprojection into K contiguous angular segments (the
   ``(K, z, y, x)`` tensor) and their sum, the FDK image. With the nominal, motion-free geometry by default; with
   ``motion_estimation`` set, with the geometry compensated by the rigid motion estimated from the noisy
   projections (:mod:`cbct.motion_estimation`), the FDK of the nominal geometry being kept as ``fdk_uncorrected``;
4. the reference: FDK of the noise-free, motion-free scan of the same object (same filter and grid).

Every random draw comes from ``numpy.random.SeedSequence([seed, crc32(source)])``, split into independent streams
for the object, the motion and the noise, so a sample is a pure function of its spec and the scan config. Splits are
cached to HDF5 (float16 arrays, which keeps their error below 1e-4 of water) under a name that hashes everything
that defines them.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import pathlib
import time
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from cbct._checks import check_fields
from cbct.fdk import fdk, fdk_filter
from cbct.geometry import ConeGeometry, VolumeGrid
from cbct.motion_estimation import MotionEstimationConfig, estimate_rigid_motion
from cbct.operators import project, segment_starts, segmented_backproject
from cbct.sbp_mac.cache import Sample, SplitArrays, content_key, load_split, write_split
from cbct.sbp_mac.objects import SOURCES, source_volume
from cbct.sbp_mac.scan_base import SimulatedScanner
from cbct.simulation.motion import (
    COMPONENT_KINDS,
    WAVEFORMS,
    MotionParameters,
    RigidMotion,
    evaluate_motion,
    rotation_matrices,
    rotation_vectors,
)
from cbct.simulation.noise import add_noise

log = logging.getLogger(__name__)

__all__ = [
    "SOURCES",
    "Sample",
    "SampleSpec",
    "InGridScanConfig",
    "MovingScan",
    "SplitArrays",
    "SplitConfig",
    "build_split",
    "cached_split",
    "displacement_field",
    "iter_samples",
    "load_split",
    "object_radius",
    "sample_geometry",
    "segment_motion",
    "simulate_sample",
    "simulate_moving_scan",
    "source_volume",
    "split_key",
    "split_specs",
]


# ---------------------------------------------------------------------------------------------- configuration
@dataclasses.dataclass(frozen=True)
class InGridScanConfig(SimulatedScanner):
    """The simulated acquisition (and, from :class:`~cbct.sbp_mac.scan_base.SimulatedScanner`, ``n_views``, ``dso``,
    ``dsd``, ``filter`` and the ``motion`` bounds; here the pivot is behind and below the field of view).

    Attributes:
        volume_shape: ``(nz, ny, nx)`` voxels of the reconstruction grid (centred on the rotation axis).
        voxel_size: isotropic voxel edge, mm.
        n_segments: K, angular segments of the segmented backprojection.
        i0: ``(low, high)`` photons per unattenuated pixel, drawn log-uniformly per scan.
        fov_margin_mm: the object is cut to a cylinder this much inside the grid, so motion keeps it in the grid.
        motion_estimation: ``None`` (reconstruct with the nominal geometry) or the settings of
            :class:`cbct.motion_estimation.MotionEstimationConfig` (``{}``: its defaults): estimate the rigid motion
            from the noisy projections and reconstruct FDK image and segments with the compensated geometry.
    """

    volume_shape: tuple[int, int, int] = (64, 96, 96)
    voxel_size: float = 1.0
    n_segments: int = 8
    i0: tuple[float, float] = (1e5, 1e6)
    fov_margin_mm: float = 4.0
    motion_estimation: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.motion_estimation is not None:
            est = MotionEstimationConfig.from_dict(dict(self.motion_estimation))
            object.__setattr__(self, "motion_estimation", est.to_dict())
        object.__setattr__(self, "volume_shape", tuple(int(s) for s in self.volume_shape))
        object.__setattr__(self, "i0", tuple(float(v) for v in self.i0))
        if len(self.volume_shape) != 3 or min(self.volume_shape) < 4:
            raise ValueError(f"volume_shape must be 3 integers >= 4 (nz, ny, nx), got {self.volume_shape}")
        if self.voxel_size <= 0 or not 1 <= self.n_segments <= self.n_views:
            raise ValueError(f"need voxel_size > 0 and 1 <= n_segments <= n_views, got {self.voxel_size}, "
                             f"{self.n_segments}, {self.n_views}")
        if len(self.i0) != 2 or not 0 < self.i0[0] <= self.i0[1]:
            raise ValueError(f"i0 must be (low, high) with 0 < low <= high, got {self.i0}")
        if self.fov_margin_mm < 0:
            raise ValueError(f"fov_margin_mm must be >= 0, got {self.fov_margin_mm}")

    @property
    def grid(self) -> VolumeGrid:
        return VolumeGrid(self.volume_shape, self.voxel_size)

    def fov_radius_voxels(self) -> float:
        """Radius in voxels of the disc the metrics are computed in (``fov_margin_mm`` inside the grid)."""
        return min(self.volume_shape[1:]) / 2 - self.fov_margin_mm / self.voxel_size


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """One sample: object ``source`` (see :data:`SOURCES`), ``seed``, motion ``waveform`` and the component kinds a
    ``"mixed"`` waveform may draw (leave one out to hold it out)."""

    source: str
    seed: int
    waveform: str
    mixed_kinds: tuple[str, ...] = COMPONENT_KINDS

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.waveform not in WAVEFORMS:
            raise ValueError(f"waveform must be one of {sorted(WAVEFORMS)}, got {self.waveform!r}")
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "mixed_kinds", tuple(self.mixed_kinds))


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """A set of samples: ``n`` specs cycling through ``sources`` and ``waveforms`` (every pair appears when
    their counts are coprime), seeds ``seed, seed + 1, ...``."""

    sources: tuple[str, ...]
    waveforms: tuple[str, ...]
    n: int
    seed: int
    mixed_kinds: tuple[str, ...] = COMPONENT_KINDS

    def __post_init__(self) -> None:
        for name in ("sources", "waveforms", "mixed_kinds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.sources or not self.waveforms or self.n < 1:
            raise ValueError("a split needs at least one source, one waveform and n >= 1")

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str = "split") -> SplitConfig:
        return cls(**check_fields(cls, d, f"{name} config keys"))


def split_specs(split: SplitConfig) -> list[SampleSpec]:
    """The sample specs of a split."""
    return [
        SampleSpec(split.sources[i % len(split.sources)], split.seed + i, split.waveforms[i % len(split.waveforms)], split.mixed_kinds)
        for i in range(split.n)
    ]


# ---------------------------------------------------------------------------------------------- geometry
def sample_geometry(cfg: InGridScanConfig) -> ConeGeometry:
    """A full-circle scan whose detector sees the whole grid (with 5 % and the motion margin to spare)."""
    grid = cfg.grid
    bounds = cfg.motion
    margin = bounds.max_translation_mm + math.radians(bounds.max_rotation_deg) * float(np.linalg.norm(bounds.pivot) + grid.bounding_radius())
    radius = float(np.hypot(grid.size[1], grid.size[2]) / 2) + margin
    half_height = grid.size[0] / 2 + margin
    if radius >= 0.9 * cfg.dso:
        raise ValueError(f"the volume (radius {radius:.1f} mm) does not fit inside the {cfg.dso} mm orbit")
    width = 1.05 * 2 * cfg.dsd * radius / math.sqrt(cfg.dso**2 - radius**2)
    height = 1.05 * 2 * half_height * cfg.dsd / (cfg.dso - radius)
    pixel = cfg.dsd / cfg.dso * cfg.voxel_size
    detector = (math.ceil(height / pixel), math.ceil(width / pixel))
    return ConeGeometry.circular(
        dso=cfg.dso, dsd=cfg.dsd, detector_shape=detector, detector_pixel_size=pixel,
        volume_shape=grid.shape, voxel_size=grid.voxel_size, n_views=cfg.n_views,
    )


# ---------------------------------------------------------------------------------------------- samples
def _streams(spec: SampleSpec) -> list[np.random.Generator]:
    seq = np.random.SeedSequence([spec.seed, zlib.crc32(spec.source.encode())])
    return [np.random.default_rng(s) for s in seq.spawn(3)]


@dataclasses.dataclass(frozen=True)
class MovingScan:
    """The acquisition of one sample, before reconstruction.

    Attributes:
        volume: (z, y, x) float32 object, mm⁻¹.
        geometry: the nominal (motion-free) scan geometry.
        params: the drawn motion parameters; motion: their per-view :class:`~cbct.simulation.motion.RigidMotion`.
        i0: photons per unattenuated pixel.
        projections: (n_views, nv, nu) float32 noisy line integrals of the moving object.
    """

    volume: np.ndarray
    geometry: ConeGeometry
    params: MotionParameters
    motion: RigidMotion
    i0: float
    projections: np.ndarray


def _motion_parameters(spec: SampleSpec, cfg: InGridScanConfig, rng: np.random.Generator) -> MotionParameters:
    return cfg.motion.draw(spec.waveform, rng, reference="mean", mixed_kinds=spec.mixed_kinds)


def object_radius(cfg: InGridScanConfig) -> float:
    """Radius in mm of the cylinder the objects are cut to."""
    return min(cfg.grid.size[1:]) / 2 - cfg.fov_margin_mm


def simulate_moving_scan(spec: SampleSpec, cfg: InGridScanConfig, *, augment: bool = True) -> MovingScan:
    """Object, motion and noisy projections of one sample (a pure function of ``spec`` and ``cfg``)."""
    geom = sample_geometry(cfg)
    obj_rng, motion_rng, noise_rng = _streams(spec)
    vol = source_volume(spec.source, cfg.grid, obj_rng, radius_mm=object_radius(cfg), augment=augment)
    params = _motion_parameters(spec, cfg, motion_rng)
    motion = evaluate_motion(params, geom.n_views)
    i0 = float(math.exp(noise_rng.uniform(math.log(cfg.i0[0]), math.log(cfg.i0[1]))))
    moving = add_noise(project(vol, motion.apply(geom)), i0=i0, rng=noise_rng)
    return MovingScan(vol, geom, params, motion, i0, moving)


def simulate_sample(spec: SampleSpec, cfg: InGridScanConfig, *, augment: bool = True) -> Sample:
    """Simulate and reconstruct one sample (a pure function of ``spec`` and ``cfg``)."""
    t0 = time.perf_counter()
    scan = simulate_moving_scan(spec, cfg, augment=augment)
    geom, vol, motion, moving, radius = scan.geometry, scan.volume, scan.motion, scan.projections, object_radius(cfg)
    filtered, fgeom = fdk_filter(moving, geom, filter=cfg.filter)
    segments = segmented_backproject(filtered, fgeom, cfg.n_segments)
    uncorrected = segments.sum(axis=0)
    extra: dict[str, Any] = {}
    if cfg.motion_estimation is not None:
        t_est = time.perf_counter()
        estimated = estimate_rigid_motion(moving, geom, MotionEstimationConfig.from_dict(cfg.motion_estimation))
        extra["motion_estimation_seconds"] = time.perf_counter() - t_est
        filtered, fgeom = fdk_filter(moving, estimated.apply(geom), filter=cfg.filter)
        segments = segmented_backproject(filtered, fgeom, cfg.n_segments)
    reference = fdk(project(vol, geom), geom, filter=cfg.filter)
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    corners *= np.array([radius, radius, cfg.grid.size[0] / 2])
    meta = {
        **dataclasses.asdict(spec),
        "i0": scan.i0,
        "max_rotation_deg": float(motion.rotation_angles_deg().max()),
        "max_displacement_mm": float(motion.displacement_mm(corners).max()),
        "components": [c.kind for c in scan.params.components],
        **extra,
        "seconds": time.perf_counter() - t0,
    }
    return Sample(segments.sum(axis=0), segments, reference, meta, uncorrected)


def segment_motion(spec: SampleSpec, cfg: InGridScanConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean pose during each of the K segments of a sample's scan: rotation vectors (K, 3) in radians,
    translations (K, 3) in mm and the pivot (3,) (recomputed from the spec's motion stream, no images needed)."""
    _, motion_rng, _ = _streams(spec)
    motion = evaluate_motion(_motion_parameters(spec, cfg, motion_rng), cfg.n_views)
    starts = segment_starts(cfg.n_views, cfg.n_segments)
    rotvecs = rotation_vectors(motion.rotations)
    w = np.stack([rotvecs[a:b].mean(axis=0) for a, b in itertools.pairwise(starts)])
    t = np.stack([motion.translations[a:b].mean(axis=0) for a, b in itertools.pairwise(starts)])
    return w, t, np.asarray(motion.pivot)


def displacement_field(
    rotvecs: np.ndarray, translations: np.ndarray, pivot: np.ndarray, grid: VolumeGrid, z: int, rows: slice, cols: slice
) -> np.ndarray:
    """(K, 2, h, w) float32 in-plane displacement ``(dx, dy)`` in pixels of the voxels of axial slice ``z``
    (window ``rows`` × ``cols``) under each segment's mean pose: where each voxel's content lies in that segment."""
    aff = grid.index_to_world()
    ii = np.arange(grid.shape[2])[cols]
    jj = np.arange(grid.shape[1])[rows]
    x = aff[0, 3] + aff[0, 0] * ii
    y = aff[1, 3] + aff[1, 1] * jj
    zw = aff[2, 3] + aff[2, 2] * z
    pts = np.stack(np.broadcast_arrays(x[None, :], y[:, None], np.full((1, 1), zw)), axis=0)  # (3, h, w)
    rot = rotation_matrices(np.asarray(rotvecs, np.float64))
    rel = pts - np.asarray(pivot, np.float64)[:, None, None]
    moved = np.einsum("kij,jhw->kihw", rot, rel) + np.asarray(pivot)[None, :, None, None] + np.asarray(translations)[:, :, None, None]
    d = moved - pts[None]
    return np.stack([d[:, 0] / grid.voxel_size[2], d[:, 1] / grid.voxel_size[1]], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------------------- cached splits
def split_key(specs: Sequence[SampleSpec], cfg: InGridScanConfig, augment: bool) -> str:
    """A short hash of everything that defines a split's content (``version`` 6: the ellipsoid heads of
    :mod:`cbct.phantoms.random_head`)."""
    return content_key({"scan": cfg.to_dict(), "specs": [dataclasses.asdict(s) for s in specs], "augment": augment,
                        "dental": "cbct.phantoms.dental", "version": 6})


def build_split(
    specs: Sequence[SampleSpec], cfg: InGridScanConfig, path: str | os.PathLike, *, augment: bool = True
) -> pathlib.Path:
    """Simulate ``specs`` into the HDF5 file ``path`` (resumes a partly written file made by the same specs)."""
    return write_split(
        path, split_key(specs, cfg, augment), specs, lambda spec: simulate_sample(spec, cfg, augment=augment),
        shape=cfg.volume_shape, n_segments=cfg.n_segments, scan=cfg.to_dict(),
        with_uncorrected=cfg.motion_estimation is not None,
    )


def cached_split(
    specs: Sequence[SampleSpec], cfg: InGridScanConfig, cache_dir: str | os.PathLike, name: str, *, augment: bool = True
) -> SplitArrays:
    """Build (once) and load the split ``name`` of ``specs`` under ``cache_dir``."""
    path = pathlib.Path(cache_dir) / f"{name}-{split_key(specs, cfg, augment)}.h5"
    build_split(specs, cfg, path, augment=augment)
    return load_split(path)


def iter_samples(specs: Iterable[SampleSpec], cfg: InGridScanConfig, *, augment: bool = True) -> Iterable[Sample]:
    """Simulate samples on the fly, one at a time."""
    for spec in specs:
        yield simulate_sample(spec, cfg, augment=augment)
