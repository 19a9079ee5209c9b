"""Projection preprocessing: dark/flat correction, ``-log``, and completing a parallel-beam half scan.

Raw detector counts ``I`` become line integrals ``p = -log((I - D) / (F - D))`` with the dark field ``D`` (no
beam) and the flat field ``F`` (beam, no object). Several dark or flat frames are averaged. Raw counts at or below
the dark level (``I <= D``, a transmission of zero or less: dead pixels, wrong dark frames, total photon starvation)
are refused with an error naming how many and where, unless ``clip_counts=True``; then, like small positive
transmissions, they are clipped to ``min_transmission`` before the log (a large but finite line integral).
Line integrals clearly below zero (:func:`check_line_integrals`: a missing ``-log`` or a flipped sign) are refused.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from cbct.geometry import ConeGeometry

log = logging.getLogger(__name__)

__all__ = ["check_line_integrals", "NEGATIVE_TOLERANCE", "average_frames", "flat_dark_correct", "log_transform", "counts_to_line_integrals", "complete_parallel_half_scan",
           "is_near_parallel"]

DEFAULT_MIN_TRANSMISSION = 1e-6
NEGATIVE_TOLERANCE = 0.5
"""Line integrals below ``-NEGATIVE_TOLERANCE`` (a transmission above e^0.5 = 1.65) are not noise."""


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_line_integrals(projections, *, tolerance: float = NEGATIVE_TOLERANCE, name: str = "projections") -> None:
    """Refuse line integrals that are clearly below zero (``ValueError`` naming how many, where and the minimum).

    Noise in air makes a few values slightly negative; refused are values below ``-tolerance``, or data that is
    mostly negative (more than half the pixels below -0.01 and a negative mean): a missing ``-log``, a flipped sign,
    or raw intensities read as line integrals.
    """
    xp = np if isinstance(projections, np.ndarray) else __import__(type(projections).__module__.split(".")[0])
    low = projections < -tolerance
    n_low = int(xp.count_nonzero(low))
    n_neg = int(xp.count_nonzero(projections < -0.01))
    size = int(projections.size)
    mostly = size > 0 and n_neg > size // 2 and float(projections.mean()) < 0
    if n_low or mostly:
        mask = low if n_low else projections < -0.01
        first = _first(np.asarray(mask.get() if hasattr(mask, "get") else mask))
        count = n_low if n_low else n_neg
        raise ValueError(f"{name}: {count} of {size} line integrals ({100.0 * count / size:.3g} %) are "
                         f"{'below -' + format(tolerance, 'g') if n_low else 'negative'} (minimum "
                         f"{float(projections.min()):.4g}, first at (view, v, u) = {first}); line integrals "
                         "-log(I/I0) are >= 0 up to noise: is the -log missing or its sign flipped? Set the "
                         "preprocess parameter clip_negative: true only if the negatives are known to be harmless")


def _finite(name: str, x: np.ndarray) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        first = _first(bad)
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or infinite values (first at index {first})")


def average_frames(frames, name: str, detector_shape: tuple[int, int]) -> np.ndarray:
    """Mean of dark or flat ``frames``: (n, nv, nu) or (nv, nu) → (nv, nu) float64."""
    arr = np.asarray(frames, dtype=np.float64)
    if arr.ndim == 3:
        if arr.shape[0] == 0:
            raise ValueError(f"{name} holds no frames")
        arr = arr.mean(axis=0)
    if arr.shape != tuple(detector_shape):
        raise ValueError(f"{name} must have shape (n, {detector_shape[0]}, {detector_shape[1]}) or "
                         f"({detector_shape[0]}, {detector_shape[1]}) to match the projections, got {np.shape(frames)}")
    _finite(name, arr)
    return arr


def flat_dark_correct(counts, *, dark=None, flat) -> np.ndarray:
    """Transmission ``(I - D) / (F - D)`` of raw ``counts`` (n_views, nv, nu), float32.

    Args:
        counts: raw detector counts.
        dark: dark frames (n, nv, nu) or (nv, nu); ``None`` means zero.
        flat: flat (open beam) frames (n, nv, nu) or (nv, nu).

    Raises:
        ValueError: for non-finite input, mismatched shapes or pixels where the flat field does not exceed the dark.
    """
    counts = np.asarray(counts)
    if counts.ndim != 3:
        raise ValueError(f"counts must have shape (n_views, nv, nu), got {counts.shape}")
    det = counts.shape[1:]
    flat_m = average_frames(flat, "flat", det)
    dark_m = np.zeros(det) if dark is None else average_frames(dark, "dark", det)
    gain = flat_m - dark_m
    dead = gain <= 0
    if dead.any():
        first = tuple(int(i) for i in np.argwhere(dead)[0])
        raise ValueError(f"flat field does not exceed the dark field at {int(dead.sum())} detector pixels "
                         f"(first at (v, u) = {first}): check the dark/flat frames")
    out = np.empty(counts.shape, dtype=np.float32)
    inv_gain = (1.0 / gain).astype(np.float32)
    dark32 = dark_m.astype(np.float32)
    for i in range(counts.shape[0]):  # view by view: no float64 copy of the whole scan
        view = counts[i].astype(np.float32, copy=False)
        _finite(f"counts (view {i})", view)
        np.multiply(view - dark32, inv_gain, out=out[i])
    return out


def log_transform(transmission, *, min_transmission: float = DEFAULT_MIN_TRANSMISSION, clip_negative: bool = False,
                  clip_counts: bool = False) -> np.ndarray:
    """Line integrals ``-log(max(transmission, min_transmission))``, float32.

    Args:
        transmission: (n_views, nv, nu) flat/dark corrected intensities.
        min_transmission: floor applied before the log (photon starvation), in (0, 1).
        clip_negative: set negative line integrals (transmission above 1, e.g. noise in air) to 0.
        clip_counts: clip transmissions at or below zero (counts at or below the dark level) to ``min_transmission``
            instead of refusing them.

    Raises:
        ValueError: non-finite values, or transmissions at or below zero without ``clip_counts``.
    """
    if not 0 < min_transmission < 1:
        raise ValueError(f"min_transmission must be in (0, 1), got {min_transmission}")
    t = np.asarray(transmission, dtype=np.float32)
    _finite("transmission", t)
    dead = t <= 0
    n_dead = int(np.count_nonzero(dead))
    if n_dead and not clip_counts:
        views = np.unique(np.nonzero(dead)[0])
        raise ValueError(f"{n_dead} pixels ({100.0 * n_dead / t.size:.3g} %) in {views.size} of {t.shape[0]} views have raw "
                         f"counts at or below the dark level (transmission <= 0), first at (view, v, u) = {_first(dead)}: "
                         "dead detector pixels, wrong dark frames or total photon starvation. Reconstructing them would "
                         "streak the volume; set the preprocess parameter clip_counts: true to clip them instead")
    n_clipped = int(np.count_nonzero(t < min_transmission))
    if n_clipped:
        log.warning("%d pixels (%.3g %%) had a transmission below %g and were clipped before -log",
                    n_clipped, 100.0 * n_clipped / t.size, min_transmission)
    out = -np.log(np.maximum(t, np.float32(min_transmission)))
    if clip_negative:
        np.maximum(out, 0.0, out=out)
    return out.astype(np.float32, copy=False)


def counts_to_line_integrals(counts, *, dark=None, flat, min_transmission: float = DEFAULT_MIN_TRANSMISSION,
                             clip_negative: bool = False, clip_counts: bool = False) -> np.ndarray:
    """Raw counts with dark/flat frames to (n_views, nv, nu) float32 line integrals (see the module notes)."""
    return log_transform(flat_dark_correct(counts, dark=dark, flat=flat), min_transmission=min_transmission,
                         clip_negative=clip_negative, clip_counts=clip_counts)


def is_near_parallel(geom: ConeGeometry, tolerance: float = 1e-3) -> bool:
    """Whether every ray of ``geom`` is within ``tolerance`` radians of its view's central ray (a parallel beam
    represented by a very distant source)."""
    nv, nu = geom.detector_shape
    half_extent = 0.5 * np.hypot(nv * geom.pixel_sizes()[:, 0], nu * geom.pixel_sizes()[:, 1])
    offset = np.linalg.norm(geom.principal_points(), axis=1)
    return bool(np.all(np.arctan((half_extent + offset) / geom.source_detector_distances()) < tolerance))


def complete_parallel_half_scan(projections, geom: ConeGeometry) -> tuple[np.ndarray, ConeGeometry]:
    """Turn a parallel-beam scan over about 180 degrees into the equivalent full-circle scan.

    In a parallel beam, view ``theta + pi`` measures the same lines as view ``theta`` (in the opposite direction).
    Each view is therefore repeated with source and detector reflected through the plane that contains the rotation
    axis and the detector's u and v directions: every detector pixel keeps its ray, and the angle grows by ``pi``.
    The full-circle scan is what FDK's full-scan weights expect; Parker weights are not needed.

    Returns:
        ``(projections, geometry)`` with twice the views (the same array repeated).
    """
    if not is_near_parallel(geom):
        raise ValueError("complete_parallel_half_scan needs a (near-)parallel beam geometry: the fan angle of this "
                         "geometry exceeds 1 mrad; use FDK's short-scan (Parker) weights instead")
    vec = geom.vectors.copy()
    normal = geom.detector_normals()  # the ray direction of each view
    for part in (slice(0, 3), slice(3, 6)):
        pos = vec[:, part]
        vec[:, part] = pos - 2 * np.einsum("ij,ij->i", pos, normal)[:, None] * normal
    vectors = np.concatenate([geom.vectors, vec])
    angles = np.concatenate([geom.angles, geom.angles + np.pi])
    full = dataclasses.replace(geom, vectors=vectors, angles=angles)
    xp_cat = type(projections).__module__.split(".")[0]
    if xp_cat == "cupy":
        import cupy

        return cupy.concatenate([projections, projections]), full
    return np.concatenate([projections, projections]), full
