"""The held-out motion scans of ``cbct eval motion``: real anatomy larger than the field of view, projected by RTK.

Each scan (:func:`heldout_scan`) is a real head (the real CT ``head.mha`` or TIGRE's MRI-derived head, from
:mod:`cbct.phantoms.real`) on its own grid, placed so that a dental-sized field of view (the reconstruction grid,
centred on the rotation axis) lies inside it: the grid is shifted so that the head's centre of attenuation, moved
``anterior_mm`` towards the face, sits on the axis. The detector's half fan covers ``detector_margin`` times the field
of view's radius, so every view is laterally truncated (the head is 150-200 mm across). The patient moves rigidly,
with the static pose at view 0 (``reference="first"``, the declared output pose "first view"), along one of the
waveforms of :mod:`cbct.simulation.motion` (``"still"``: no motion); RTK's Joseph projector
(:func:`cbct.simulation.rtk_projector.rtk_project`) projects it along the moved views and Poisson noise is added.
The reference is FDK of the noise-free still scan.

These scans are never used to train or to choose anything; they come from a different projector (RTK's), different
anatomy (real heads; training uses only the project's dental phantom and random ellipsoid heads) and, for
``tilting``, a waveform never trained on.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from cbct.constants import MU_WATER
from cbct.fdk import fdk
from cbct.geometry import ConeGeometry, VolumeGrid
from cbct.phantoms import real
from cbct.sbp_mac.objects import AIR_FLOOR
from cbct.sbp_mac.scan_base import MotionBounds, SimulatedScanner
from cbct.sbp_mac.truncated import fov_geometry
from cbct.simulation.motion import WAVEFORMS, RigidMotion, evaluate_motion
from cbct.simulation.noise import add_noise

log = logging.getLogger(__name__)

__all__ = ["HELDOUT_SOURCES", "STILL", "HeldOutConfig", "HeldOutScan", "heldout_scan", "heldout_specs", "load_heads"]

HELDOUT_SOURCES = {"head_mha": "head.mha", "tigre_head": "head_phantom.mat"}
STILL = "still"


@dataclasses.dataclass(frozen=True)
class HeldOutConfig(SimulatedScanner):
    """The held-out acquisitions; from :class:`~cbct.sbp_mac.scan_base.SimulatedScanner`: ``n_views``, ``dso``,
    ``dsd``, ``filter`` (of every reconstruction and of the reference) and the ``motion`` bounds (pivot at the neck:
    behind, ``+y``, and below the field of view).

    Attributes:
        volume_shape: ``(nz, ny, nx)`` voxels of the field of view. voxel_size: its isotropic voxel edge, mm.
        detector_margin: the detector's half fan over the field of view's radius.
        i0: photons per unattenuated pixel.
        anterior_mm: how far towards the face (``-y``) from the head's centre of attenuation the field of view sits.
        fov_margin_mm: the metrics' disc is this much inside the grid's inscribed circle.
        sources: keys of :data:`HELDOUT_SOURCES`; waveforms: keys of the motion waveforms, or ``"still"``.
        repeats: scans per source and waveform. seed: first seed.
    """

    motion: MotionBounds = MotionBounds(max_rotation_deg=2.0, max_translation_mm=2.0, min_motion_fraction=0.5,
                                        pivot=(0.0, 60.0, -40.0))
    volume_shape: tuple[int, int, int] = (64, 112, 112)
    voxel_size: float = 0.8
    detector_margin: float = 1.1
    i0: float = 3e5
    anterior_mm: float = 15.0
    fov_margin_mm: float = 2.0
    sources: tuple[str, ...] = ("head_mha", "tigre_head")
    waveforms: tuple[str, ...] = ("jerk", "drift", "nodding", "tilting", "tremor", "mixed", STILL)
    repeats: int = 1
    seed: int = 9000

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("volume_shape", "sources", "waveforms"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "volume_shape", tuple(int(s) for s in self.volume_shape))
        if len(self.volume_shape) != 3 or min(self.volume_shape) < 4:
            raise ValueError(f"volume_shape must be 3 integers >= 4 (nz, ny, nx), got {self.volume_shape}")
        if self.voxel_size <= 0 or self.n_views < 8 or self.i0 <= 0 or self.detector_margin <= 0:
            raise ValueError("voxel_size, i0 and detector_margin must be positive and n_views >= 8")
        unknown = [s for s in self.sources if s not in HELDOUT_SOURCES]
        if unknown or not self.sources:
            raise ValueError(f"sources must be some of {sorted(HELDOUT_SOURCES)}, got {list(self.sources)}")
        bad = [w for w in self.waveforms if w != STILL and w not in WAVEFORMS]
        if bad or not self.waveforms:
            raise ValueError(f"waveforms must be some of {sorted(WAVEFORMS)} or {STILL!r}, got {list(self.waveforms)}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")

    @property
    def geometry(self) -> ConeGeometry:
        """The nominal (still) scan of the field of view."""
        return fov_geometry(self.volume_shape, self.voxel_size, n_views=self.n_views, dso=self.dso, dsd=self.dsd,
                            detector_margin=self.detector_margin)

    def fov_radius_voxels(self) -> float:
        return min(self.volume_shape[1:]) / 2 - self.fov_margin_mm / self.voxel_size


def heldout_specs(cfg: HeldOutConfig) -> list[tuple[str, str, int]]:
    """``(source, waveform, seed)`` of every held-out scan."""
    specs, seed = [], cfg.seed
    for source in cfg.sources:
        for waveform in cfg.waveforms:
            for _ in range(cfg.repeats):
                specs.append((source, waveform, seed))
                seed += 1
    return specs


@dataclasses.dataclass(frozen=True)
class HeldOutScan:
    """One held-out scan: noisy ``projections`` (n_views, nv, nu) of the moving head, its nominal ``geometry``, the
    true ``motion`` (relative to view 0), the ``reference`` (FDK of the noise-free still scan, (z, y, x) mm⁻¹) and
    ``meta`` (source, waveform, seed, motion extent, how much of the head lies outside the field of view)."""

    projections: np.ndarray
    geometry: ConeGeometry
    motion: RigidMotion
    reference: np.ndarray
    meta: dict[str, Any]


def _head(source: str, data_dir: str | pathlib.Path | None) -> tuple[np.ndarray, VolumeGrid]:
    path = None if data_dir is None else pathlib.Path(data_dir) / HELDOUT_SOURCES[source]
    vol, grid = real.load_real_head(source, path)
    vol = np.where(vol < AIR_FLOOR * MU_WATER, 0.0, vol).astype(np.float32)  # the scanners' noise floor in air
    return vol, grid


def _placed(vol: np.ndarray, grid: VolumeGrid, anterior_mm: float) -> VolumeGrid:
    """The head's grid shifted so that its centre of attenuation, ``anterior_mm`` towards the face (-y), is at the
    world origin."""
    aff = grid.index_to_world()
    weights = [vol.sum(axis=tuple(a for a in range(3) if a != axis)) for axis in range(3)]  # z, y, x profiles
    centre_idx = [float(np.dot(w, np.arange(w.size)) / w.sum()) for w in weights]  # (k, j, i)
    centre = aff[:3, :3] @ np.array(centre_idx[::-1]) + aff[:3, 3]  # world (x, y, z)
    centre[1] -= anterior_mm
    offset = np.asarray(grid.offset, np.float64) - centre[::-1]  # (oz, oy, ox)
    return VolumeGrid(grid.shape, grid.voxel_size, tuple(float(o) for o in offset))


def _motion(waveform: str, seed: int, cfg: HeldOutConfig) -> RigidMotion:
    if waveform == STILL:
        return RigidMotion.none(cfg.n_views, cfg.motion.pivot)
    rng = np.random.default_rng([seed, zlib.crc32(waveform.encode())])
    params = cfg.motion.draw(waveform, rng, reference="first")
    return evaluate_motion(params, cfg.n_views)


def heldout_scan(
    source: str, waveform: str, seed: int, cfg: HeldOutConfig, *, data_dir: str | pathlib.Path | None = None,
    head: tuple[np.ndarray, VolumeGrid] | None = None,
) -> HeldOutScan:
    """Simulate one held-out scan (see the module notes); ``head``: the source's loaded volume, to load it once."""
    from cbct.simulation.rtk_projector import rtk_project

    vol, grid = head if head is not None else _head(source, data_dir)
    placed = _placed(vol, grid, cfg.anterior_mm)
    geom = cfg.geometry
    motion = _motion(waveform, seed, cfg)
    clean_still = rtk_project(vol, placed, geom)
    clean = clean_still if waveform == STILL else rtk_project(vol, placed, motion.apply(geom))
    noisy = add_noise(clean, i0=cfg.i0, rng=np.random.default_rng([seed, 7]))
    reference = fdk(clean_still, geom, filter=cfg.filter)
    half = np.array(geom.volume.size[::-1]) / 2  # x, y, z
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float) * half
    edge = clean_still[:, :, [0, -1]].max()
    meta = {
        "source": source, "waveform": waveform, "seed": int(seed),
        "max_rotation_deg": float(motion.rotation_angles_deg().max()),
        "max_displacement_mm": float(motion.displacement_mm(corners).max()),
        "edge_over_max_line_integral": float(edge / max(float(clean_still.max()), 1e-12)),
        "head_extent_mm": [float(s) for s in grid.size],
        "fov_mm": [float(s) for s in geom.volume.size],
    }
    log.info("held-out %s %s (seed %d): largest displacement %.2f mm, detector edge at %.0f %% of the largest "
             "line integral", source, waveform, seed, meta["max_displacement_mm"], 100 * meta["edge_over_max_line_integral"])
    return HeldOutScan(noisy.astype(np.float32), geom, motion, np.asarray(reference, np.float32), meta)


def load_heads(sources: Sequence[str], data_dir: str | pathlib.Path | None = None) -> dict[str, tuple[np.ndarray, VolumeGrid]]:
    """The head volumes of ``sources``, loaded once."""
    return {s: _head(s, data_dir) for s in dict.fromkeys(sources)}

