"""The RTK-projected held-out set of ``cbct eval bbc --heldout rtk``: real anatomy larger than the field of view.

Every scan is real anatomy (the real CT ``head.mha`` and TIGRE's MRI-derived head, :mod:`cbct.phantoms.real`) on its
own grid, wider than the field of view (lateral truncation, as in a dental scan), projected along 360 views by RTK's
Joseph projector (:func:`cbct.simulation.rtk_projector.rtk_project`, not the projector the networks were trained
with), at several attenuation calibrations (the loaders' mm⁻¹ times a factor), with Poisson noise. Sparse patterns
keep every 4th or 8th view, a random subset, or every 8th view with a hole; the missing views are completed to the
stated 360 angles (``target``). These scans are never used to train or to choose anything.

Settings come from a YAML file (default ``configs/bbc_heldout_rtk.yaml``)::

    scan: {dso, dsd, detector_shape, detector_pixel_size, volume_shape, voxel_size, n_views}   # DenseScanConfig
    anatomy: [{kind: head_mha, path: null}, {kind: tigre_head}]   # path: a file instead of the shared data folder
    calibrations: [1.0, 1.5]
    i0: 2.0e+5
    patterns: [{name: 4x, step: 4}, {name: 8x, step: 8}, {name: 45 random, random: 45},
               {name: 8x + 32° hole, step: 8, hole_deg: 32}]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
from typing import Any

import numpy as np
import yaml

from cbct._checks import check_fields
from cbct.bbc.data import DenseScanConfig, noisy
from cbct.phantoms import real

log = logging.getLogger(__name__)

__all__ = ["HeldoutConfig", "Pattern", "load_heldout_config", "pattern_indices", "rtk_scan"]

REAL_KINDS = ("head_mha", "tigre_head")


@dataclasses.dataclass(frozen=True)
class Pattern:
    """A sparse acquisition of a dense scan: every ``step``-th view, or ``random`` views drawn without repeats; with
    ``hole_deg`` the views in a sector of that many degrees (starting at a seeded angle) are removed as well."""

    name: str
    step: int | None = None
    random: int | None = None
    hole_deg: float = 0.0

    def __post_init__(self) -> None:
        if (self.step is None) == (self.random is None):
            raise ValueError(f"pattern {self.name!r}: give exactly one of step and random")
        if self.step is not None and int(self.step) < 2:
            raise ValueError(f"pattern {self.name!r}: step must be >= 2, got {self.step}")
        if self.random is not None and int(self.random) < 4:
            raise ValueError(f"pattern {self.name!r}: random must be >= 4 views, got {self.random}")
        if not 0.0 <= float(self.hole_deg) < 180.0:
            raise ValueError(f"pattern {self.name!r}: hole_deg must be in [0, 180), got {self.hole_deg}")


@dataclasses.dataclass(frozen=True)
class HeldoutConfig:
    """The held-out set: scan geometry, anatomy sources, calibrations, photon count and sparse patterns."""

    scan: DenseScanConfig
    anatomy: tuple[dict[str, Any], ...]
    calibrations: tuple[float, ...]
    i0: float
    patterns: tuple[Pattern, ...]


def load_heldout_config(path: str | pathlib.Path) -> HeldoutConfig:
    """Read and check a held-out set file (see the module notes)."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"held-out config not found: {p}")
    d = yaml.safe_load(p.read_text()) or {}
    for key in ("scan", "anatomy", "calibrations", "i0", "patterns"):
        if key not in d:
            raise ValueError(f"{p}: missing {key!r}")
    anatomy = tuple(dict(a) for a in d["anatomy"])
    for a in anatomy:
        if a.get("kind") not in REAL_KINDS or set(a) - {"kind", "path"}:
            raise ValueError(f"{p}: anatomy entries are {{kind: one of {REAL_KINDS}, path: optional}}, got {a}")
    cals = tuple(float(c) for c in d["calibrations"])
    if not cals or min(cals) <= 0:
        raise ValueError(f"{p}: calibrations must be positive factors, got {d['calibrations']}")
    pats = tuple(Pattern(**check_fields(Pattern, dict(q), "pattern")) for q in d["patterns"])
    return HeldoutConfig(DenseScanConfig.from_dict(d["scan"]), anatomy, cals, float(d["i0"]), pats)


def pattern_indices(pattern: Pattern, n_views: int, seed: int) -> np.ndarray:
    """Increasing indices of the kept views of a dense ``n_views`` full circle (seeded for random draws and holes)."""
    g = np.random.default_rng([int(seed), 11])
    if pattern.random is not None:
        if pattern.random >= n_views:
            raise ValueError(f"pattern {pattern.name!r}: {pattern.random} random views of a {n_views}-view scan")
        idx = np.sort(g.choice(n_views, size=int(pattern.random), replace=False))
    else:
        idx = np.arange(0, n_views, int(pattern.step))
    if pattern.hole_deg > 0:
        deg = idx * 360.0 / n_views
        start = g.uniform(0, 360.0)
        idx = idx[np.mod(deg - start, 360.0) >= pattern.hole_deg]
    if idx.size < 4:
        raise ValueError(f"pattern {pattern.name!r} keeps {idx.size} views of {n_views}; need at least 4")
    return idx.astype(np.int64)


def _anatomy(entry: dict[str, Any]) -> tuple[np.ndarray, Any]:
    vol, grid = real.load_real_head(entry["kind"], entry.get("path"))
    return np.asarray(vol, np.float32), grid


def rtk_scan(entry: dict[str, Any], scan: DenseScanConfig, calibration: float, i0: float, *, seed: int,
             cache_dir: str | pathlib.Path | None = None) -> np.ndarray:
    """Noisy line integrals (n_views, nv, nu) of the anatomy ``entry`` (``{"kind", "path"}``) times
    ``calibration``, projected by RTK along ``scan``'s full circle, Poisson noise at ``i0`` (drawn from ``seed`` and the
    calibration). Clean projections are cached (float32 ``.npy``) in ``cache_dir`` when given."""
    from cbct.simulation.rtk_projector import rtk_project

    key = hashlib.sha1(json.dumps([dataclasses.asdict(scan), entry], sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = pathlib.Path(cache_dir) / f"rtk_{entry['kind']}_{key}.npy" if cache_dir is not None else None
    if path is not None and path.exists():
        clean = np.load(path)
    else:
        vol, grid = _anatomy(entry)
        clean = rtk_project(vol, grid, scan.geometry())
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, clean)
        log.info("RTK projected %s: %s views, max line integral %.2f", entry["kind"], clean.shape[0], float(clean.max()))
    return noisy(clean * np.float32(calibration), i0, np.random.default_rng([int(seed), int(round(calibration * 1000))]))
