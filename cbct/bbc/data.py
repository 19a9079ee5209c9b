"""Training and evaluation data for BBC-Recon: dense simulated projection sequences and training triplets.

Sources of anatomy (``kind``):

- ``"dental_ellipsoids"``: the random ellipsoid dental head :func:`cbct.phantoms.random_head.random_head_volume`
  (head, airway, cervical spine, mandible and maxilla arches, teeth with crowns, roots and pulp, optional metal
  fillings), random per seed; voxelised on a grid that holds the whole head and forward projected.
- ``"dental"``: the project's procedural dental phantom :func:`cbct.phantoms.dental.dental_phantom`, voxelised and
  forward projected (used when that module is installed).
- ``"tigre_head"``: TIGRE's head phantom (``head_phantom.mat``, derived from MRI;
  :func:`cbct.phantoms.real.load_tigre_head`), a random axial section and orientation per seed, forward projected.
- ``"head_mha"``: the real CT of a head (VTK ``headsq``, :func:`cbct.phantoms.real.load_head_mha`), forward
  projected. Kept for evaluation.

A sequence is the clean line integrals of a full dense circular scan, ``(n_views, nv, nu)``. Noise is added when a
sample is drawn (training) or once per scan with a given seed (evaluation). Sequences are cached as float16 ``.npy``
files keyed by scan settings, kind and seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from cbct._checks import check_fields
from cbct.constants import MU_WATER
from cbct.geometry import ConeGeometry, VolumeGrid
from cbct.operators import project
from cbct.phantoms import real
from cbct.phantoms.dental import dental_phantom
from cbct.phantoms.random_head import random_head_volume
from cbct.rng import as_generator
from cbct.simulation.noise import add_noise

log = logging.getLogger(__name__)

KINDS = ("dental_ellipsoids", "dental", "tigre_head", "head_mha")

__all__ = [
    "DenseScanConfig",
    "TripletSampler",
    "dense_sequence",
    "load_sequences",
    "noisy",
]


@dataclasses.dataclass(frozen=True)
class DenseScanConfig:
    """A dense full-circle circular scan (the geometry every sequence is simulated with).

    Attributes:
        dso, dsd: source to axis and source to detector distances, mm.
        detector_shape: ``(nv, nu)`` pixels.
        detector_pixel_size: mm.
        volume_shape: ``(nz, ny, nx)`` reconstruction grid.
        voxel_size: mm.
        n_views: views of the dense (full) scan over 360 degrees.
    """

    dso: float = 500.0
    dsd: float = 700.0
    detector_shape: tuple[int, int] = (96, 128)
    detector_pixel_size: float = 2.15
    volume_shape: tuple[int, int, int] = (80, 128, 128)
    voxel_size: float = 1.5
    n_views: int = 360

    def __post_init__(self) -> None:
        object.__setattr__(self, "detector_shape", tuple(int(x) for x in self.detector_shape))
        object.__setattr__(self, "volume_shape", tuple(int(x) for x in self.volume_shape))
        if len(self.detector_shape) != 2 or len(self.volume_shape) != 3:
            raise ValueError(f"detector_shape must be (nv, nu) and volume_shape (nz, ny, nx), got {self.detector_shape}, {self.volume_shape}")
        if self.n_views < 8:
            raise ValueError(f"n_views must be at least 8, got {self.n_views}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DenseScanConfig:
        return cls(**check_fields(cls, d, "scan settings"))

    def geometry(self) -> ConeGeometry:
        return ConeGeometry.circular(
            dso=self.dso, dsd=self.dsd, detector_shape=self.detector_shape, detector_pixel_size=self.detector_pixel_size,
            volume_shape=self.volume_shape, voxel_size=self.voxel_size, n_views=self.n_views,
        )

    def fov_radius(self) -> float:
        """Radius in mm of the cylinder about the axis that every view sees (the reconstructable field of view)."""
        half_width = self.detector_shape[1] * self.detector_pixel_size / 2
        return float(self.dso * np.sin(np.arctan(half_width / self.dsd)))

    def key(self) -> str:
        return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def _fit_grid(vol: np.ndarray, grid: VolumeGrid, radius: float, g: np.random.Generator, z_shift: float) -> VolumeGrid:
    """Scale the voxel size so the object fits a cylinder of ``radius`` mm and centre it in (x, y)."""
    mask = vol > 0.25 * MU_WATER
    zz, yy, xx = np.nonzero(mask)
    dz, dy, dx = grid.voxel_size
    cy, cx = (yy.min() + yy.max()) / 2, (xx.min() + xx.max()) / 2
    r_vox = np.sqrt(((yy - cy) * dy) ** 2 + ((xx - cx) * dx) ** 2).max()
    f = min(1.0, radius / r_vox) if r_vox > 0 else 1.0
    ny, nx = vol.shape[1:]
    oy = -((cy - (ny - 1) / 2) * dy * f)
    ox = -((cx - (nx - 1) / 2) * dx * f)
    return VolumeGrid(vol.shape, (dz * f, dy * f, dx * f), (z_shift, oy, ox))


def dense_sequence(scan: DenseScanConfig, kind: str, seed: int, *, cache_dir: str | pathlib.Path | None = None,
                   object_radius: float | None = None) -> np.ndarray:
    """Clean line integrals (n_views, nv, nu) float32 of the anatomy ``kind`` number ``seed`` under ``scan``.

    Rounded to float16 precision (about 0.05 % of the value) and cached as float16 in ``cache_dir`` when given. For the voxel sources the orientation (start angle), axial section
    and mirroring are drawn from ``seed``. ``object_radius`` (mm, ``dental_ellipsoids`` only): the head's radius;
    default 0.95 × the field of view's (a head wider than the field of view is laterally truncated, as in a
    dental scan).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if object_radius is not None and (kind != "dental_ellipsoids" or not object_radius > 0):
        raise ValueError(f"object_radius must be a positive radius in mm for dental_ellipsoids, got {object_radius!r} for {kind!r}")
    path = None
    if cache_dir is not None:
        r_tag = "" if object_radius is None else f"_r{float(object_radius):g}"
        path = pathlib.Path(cache_dir) / f"seq_{scan.key()}_{kind}{r_tag}_{int(seed)}.npy"
        if path.exists():
            return np.load(path).astype(np.float32)
    g = np.random.default_rng([int(seed), KINDS.index(kind)])
    geom = scan.geometry()
    radius = 0.95 * scan.fov_radius() if object_radius is None else float(object_radius)
    if kind == "dental_ellipsoids":
        # voxelised on a grid holding the whole head (so nothing is cut off in z), then projected: ~10x faster
        # than the exact line integrals of ~150 ellipsoids, with no visible loss at this resolution
        ph_grid = VolumeGrid((int(np.ceil(240.0 / 2.0)), *geom.volume.shape[1:]), (2.0, *geom.volume.voxel_size[1:]))
        vol = random_head_volume(ph_grid, g, radius)
        proj = project(vol, geom.with_volume(ph_grid))
    elif kind == "dental":
        vol = dental_phantom(geom.volume, rng=int(seed))
        proj = project(np.ascontiguousarray(vol, dtype=np.float32), geom)
    else:
        vol, grid = real.load_real_head(kind)  # (z, y, x) float32 mm⁻¹, centred grid
        if g.random() < 0.5:
            vol = vol[:, :, ::-1]
        z_extent = grid.size[0]
        z_shift = g.uniform(-0.25, 0.25) * max(0.0, z_extent - geom.volume.size[0]) if kind == "tigre_head" else 0.0
        vgrid = _fit_grid(vol, grid, radius, g, z_shift)
        start = g.uniform(0, 2 * np.pi)
        vgeom = ConeGeometry.circular(
            dso=scan.dso, dsd=scan.dsd, detector_shape=scan.detector_shape, detector_pixel_size=scan.detector_pixel_size,
            volume_shape=vgrid.shape, voxel_size=vgrid.voxel_size, volume_offset=vgrid.offset, n_views=scan.n_views,
            start_angle=start,
        )
        proj = project(np.ascontiguousarray(vol, dtype=np.float32), vgeom)
    # rounded to float16 whether cached or not, so a first run and a cached rerun see the same numbers
    proj = np.ascontiguousarray(proj, dtype=np.float16)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _ignore_folder(path.parent)
        np.save(path, proj)
    proj = proj.astype(np.float32)
    log.info("simulated %s seed %d: %s views, max line integral %.2f", kind, seed, proj.shape[0], float(proj.max()))
    return proj


def _ignore_folder(folder: pathlib.Path) -> None:
    """Keep a cache folder out of git (a ``.gitignore`` of ``*`` inside it)."""
    top = folder
    while top.parent != top and top.name != ".cache":
        top = top.parent
    target = top if top.name == ".cache" else folder
    gi = target / ".gitignore"
    if not gi.exists():
        gi.write_text("*\n")


def load_sequences(scan: DenseScanConfig, sources: Sequence[dict[str, Any]], *, cache_dir: str | pathlib.Path | None = None) -> list[np.ndarray]:
    """Sequences for ``sources``: dicts ``{"kind": ..., "seeds": [first, stop]}`` (seeds ``range(first, stop)``)
    or ``{"kind": ..., "seed_list": [...]}``; optional ``"scan"`` (settings that override ``scan``'s, e.g. another
    detector) and ``"object_radius"`` (mm, see :func:`dense_sequence`)."""
    out = []
    for src in sources:
        unknown = set(src) - {"kind", "seeds", "seed_list", "scan", "object_radius"}
        if unknown:
            raise ValueError(f"data source {src}: unknown keys {sorted(unknown)}")
        kind = src.get("kind")
        src_scan = DenseScanConfig.from_dict({**dataclasses.asdict(scan), **src["scan"]}) if "scan" in src else scan
        if "seed_list" in src:
            seeds = [int(s) for s in src["seed_list"]]
        elif "seeds" in src:
            a, b = src["seeds"]
            seeds = list(range(int(a), int(b)))
        else:
            raise ValueError(f"a data source needs 'seeds: [first, stop]' or 'seed_list', got {src}")
        for seed in seeds:
            out.append(dense_sequence(src_scan, kind, seed, cache_dir=cache_dir, object_radius=src.get("object_radius")))
    return out


def noisy(projections: np.ndarray, i0: float, rng: np.random.Generator | int) -> np.ndarray:
    """Poisson-noisy line integrals at ``i0`` photons per pixel (``i0 <= 0``: no noise)."""
    if i0 <= 0:
        return np.asarray(projections, np.float32)
    return add_noise(projections, i0=i0, rng=rng)


class TripletSampler:
    """Training triplets ``(view a, view b, target at t)`` from dense full-circle sequences.

    Each sample picks a sequence, a gap ``g`` in ``[gap_min, gap_max]`` views, a first view ``i`` (the pair may
    wrap around the end of the circle), and ``k`` in ``1..g-1``: ``a = seq[i]``, ``b = seq[i + g]``,
    target ``seq[i + k]``, ``t = k / g``. Augmentations: random crop, mirror along u and v, time reversal
    (``a``/``b`` swapped, ``t -> 1 - t``), an attenuation calibration (the triplet times a factor drawn
    log-uniformly in ``scale_range``). The two inputs get Poisson noise at an ``i0`` drawn log-uniformly in
    ``i0_range``; the target stays clean. Sequences may have different detector sizes (each at least ``crop``).
    """

    def __init__(
        self,
        sequences: Sequence[np.ndarray],
        *,
        crop: tuple[int, int] = (64, 64),
        gap_range: tuple[int, int] = (2, 12),
        i0_range: tuple[float, float] = (5e4, 5e5),
        scale_range: tuple[float, float] = (1.0, 1.0),
        rng: np.random.Generator | int,
    ) -> None:
        if not sequences:
            raise ValueError("sequences must not be empty")
        self.sequences = list(sequences)
        self.crop = (int(crop[0]), int(crop[1]))
        for seq in self.sequences:
            if self.crop[0] > seq.shape[1] or self.crop[1] > seq.shape[2]:
                raise ValueError(f"crop {self.crop} is larger than a sequence's detector {seq.shape[1:]}")
        if not 0 < float(scale_range[0]) <= float(scale_range[1]):
            raise ValueError(f"scale_range must satisfy 0 < min <= max, got {scale_range}")
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        lo, hi = int(gap_range[0]), int(gap_range[1])
        if not 2 <= lo <= hi:
            raise ValueError(f"gap_range must satisfy 2 <= min <= max, got {gap_range}")
        self.gap_range = (lo, hi)
        self.i0_range = (float(i0_range[0]), float(i0_range[1]))
        self.rng = as_generator(rng)

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(a, b, target, t)``: (batch, 1, h, w) float32 ×3 and (batch,) float32."""
        g = self.rng
        h, w = self.crop
        a_out = np.empty((batch, 1, h, w), np.float32)
        b_out = np.empty_like(a_out)
        y_out = np.empty_like(a_out)
        t_out = np.empty(batch, np.float32)
        for n in range(batch):
            seq = self.sequences[int(g.integers(len(self.sequences)))]
            nviews, nv, nu = seq.shape
            gap = int(g.integers(self.gap_range[0], self.gap_range[1] + 1))
            i = int(g.integers(nviews))
            k = int(g.integers(1, gap))
            y0 = int(g.integers(nv - h + 1))
            x0 = int(g.integers(nu - w + 1))
            win = (slice(y0, y0 + h), slice(x0, x0 + w))
            a, b, y = (np.asarray(seq[(i + j) % nviews][win], np.float32) for j in (0, gap, k))
            t = k / gap
            if g.random() < 0.5:
                a, b, t = b, a, 1.0 - t
            if g.random() < 0.5:
                a, b, y = a[:, ::-1], b[:, ::-1], y[:, ::-1]
            if g.random() < 0.5:
                a, b, y = a[::-1], b[::-1], y[::-1]
            i0 = float(np.exp(g.uniform(np.log(self.i0_range[0]), np.log(self.i0_range[1]))))
            c = np.float32(np.exp(g.uniform(np.log(self.scale_range[0]), np.log(self.scale_range[1]))))
            a_out[n, 0] = noisy(c * a, i0, g)
            b_out[n, 0] = noisy(c * b, i0, g)
            y_out[n, 0] = c * y
            t_out[n] = t
        return a_out, b_out, y_out, t_out
