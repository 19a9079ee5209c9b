"""Motion correction of a scan: estimate the rigid motion, decide whether the patient moved, declare the pose.

:func:`correct_motion` runs :func:`cbct.motion_estimation.estimate_motion` and then a gate that keeps the nominal
geometry unless both tests say the scan moved:

- the estimate is large: some point on the rim of the field of view (the grid's inscribed cylinder) moves by at
  least ``gate_mm`` between views;
- the image gets sharper: the gradient entropy of the (binned) FDK image in the field of view
  (:mod:`cbct.motion_sharpness`) drops by at least the fraction ``gate_gain`` from the nominal geometry to the
  compensated one. The compensated geometry is the estimate times the factor among 0.25, 0.5, …, ``max_scale``
  that gives the sharpest image (a one-parameter autofocus: the registration underestimates a jerk). This test does
  not use the estimation's own criterion (a reprojection residual, which a truncated scan can fool), and a wrong
  geometry makes the image less sharp.

An estimate that is large enough for the gate and looks enough like a step is also refined as a jerk (one change
point, two poses: :mod:`cbct.motion_jerk`); the sharper of the two images (scaled estimate, jerk) goes to the gate.

A still scan therefore comes back with ``geometry is geom`` and a bit-identical reconstruction. A moving one is
reconstructed in a declared pose: ``"first"`` (the patient's pose at view 0, so that a still start stays still),
``"mean"`` (the mean pose over the scan) or a view index.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np

from cbct.geometry import ConeGeometry
from cbct.motion_estimation import MotionEstimationConfig, bin_scan, estimate_motion
from cbct.motion_jerk import refine_jerk
from cbct.motion_sharpness import sharpness_of_motions
from cbct.simulation.motion import RigidMotion

log = logging.getLogger(__name__)

__all__ = ["MotionCorrection", "correct_motion", "fov_points", "relative_to_pose"]


@dataclasses.dataclass(frozen=True)
class MotionCorrection:
    """What :func:`correct_motion` decided.

    Attributes:
        moved: the gate's decision.
        motion: per-view motion relative to the declared pose (identity for every view when not moved).
        geometry: the geometry to reconstruct with (the input geometry itself when not moved).
        pose: the declared output pose: ``"first view"``, ``"mean"`` or ``"view N"``.
        report: JSON-able record: the decision and its statistics, per-view rotation (degrees, rotation-vector
            components about world x, y, z) and translation (mm), the jerk refinement (``"jerk"``: whether used,
            its step fit, change view and pose), the seconds taken.
    """

    moved: bool
    motion: RigidMotion
    geometry: ConeGeometry
    pose: str
    report: dict[str, Any]


def fov_points(geom: ConeGeometry) -> np.ndarray:
    """(16, 3) world points on the rim of the grid's inscribed cylinder (8 at its top, 8 at its bottom), mm."""
    grid = geom.volume
    centre = np.asarray(grid.offset[::-1], np.float64)
    radius = min(grid.size[1:]) / 2
    phi = np.arange(8) * np.pi / 4
    ring = np.stack([radius * np.cos(phi), radius * np.sin(phi), np.zeros(8)], axis=1)
    half = np.array([0.0, 0.0, grid.size[0] / 2])
    return np.concatenate([ring + half, ring - half]) + centre


def _pose_index(pose: str | int, n_views: int) -> tuple[int | None, str]:
    """View index of the declared pose (``None``: the mean pose) and its label."""
    if isinstance(pose, (bool, np.bool_)):
        raise ValueError(f"pose must be 'first', 'mean' or a view index, got {pose!r}")
    if isinstance(pose, (int, np.integer)):
        if not -n_views <= int(pose) < n_views:
            raise ValueError(f"pose: view index {pose} outside the scan's {n_views} views")
        index = int(pose) % n_views
        return index, "first view" if index == 0 else f"view {index}"
    if pose == "first":
        return 0, "first view"
    if pose == "mean":
        return None, "mean"
    raise ValueError(f"pose must be 'first', 'mean' or a view index, got {pose!r}")


def relative_to_pose(motion: RigidMotion, pose: str | int = "first") -> tuple[RigidMotion, str]:
    """The motion re-expressed relative to the patient's pose at a view (``pose`` an index or ``"first"``) or
    left relative to its own reference (``"mean"``: :func:`estimate_motion` returns motion about the mean pose).

    With ``T_i(x) = R_i (x - p) + p + t_i`` the pose of view ``i``, the motion relative to view ``k`` is
    ``T_i ∘ T_k⁻¹``: rotation ``R_i R_kᵀ``, translation ``t_i − R_i R_kᵀ t_k``, same pivot ``p``.
    """
    index, label = _pose_index(pose, motion.n_views)
    if index is None:
        return motion, label
    rot = motion.rotations @ motion.rotations[index].T
    trans = motion.translations - rot @ motion.translations[index]
    return RigidMotion(rot, trans, motion.pivot), label


def _per_view(motion: RigidMotion) -> dict[str, list]:
    return {
        "rotation_deg": np.round(np.degrees(motion.rotation_vectors()), 5).tolist(),
        "translation_mm": np.round(motion.translations, 5).tolist(),
    }


def _scaled(motion: RigidMotion, factor: float) -> RigidMotion:
    """The motion with its rotation vectors and translations (about its own reference) times ``factor``."""
    return RigidMotion.from_vectors(motion.rotation_vectors() * factor, motion.translations * factor, motion.pivot)


def correct_motion(
    projections, geom: ConeGeometry, *, config: MotionEstimationConfig | None = None, pose: str | int = "first"
) -> MotionCorrection:
    """Estimate the patient's rigid motion, gate it, and give the geometry to reconstruct with.

    Args:
        projections: (n_views, nv, nu) float32 line integrals in acquisition order (NumPy, or CuPy: the estimation
            then runs on the GPU).
        geom: the nominal geometry of the scan (its volume grid is the field of view).
        config: estimation and gate settings (default :class:`MotionEstimationConfig`).
        pose: the pose of the output: ``"first"`` (default), ``"mean"`` or a view index.

    Returns:
        A :class:`MotionCorrection`; when not moved, ``geometry is geom``.
    """
    cfg = (config or MotionEstimationConfig()).for_scan(geom)
    index, label = _pose_index(pose, geom.n_views)  # checked before the work
    needed = cfg.views_needed()
    if needed > geom.n_views:  # never worse than doing nothing: a scan too sparse to estimate is left as it is
        log.warning("motion correction skipped: %d views, the estimation needs at least %d; nominal geometry kept",
                    geom.n_views, needed)
        none = RigidMotion.none(geom.n_views)
        report = {"moved": False, "pose": label, "skipped": f"{geom.n_views} views, the estimation needs {needed}",
                  **_per_view(none)}
        return MotionCorrection(False, none, geom, label, report)
    t0 = time.perf_counter()
    estimate, stats = estimate_motion(projections, geom, cfg)
    scales = np.arange(0.25, cfg.max_scale + 1e-9, 0.25) if cfg.max_scale > 0 else np.array([1.0])
    candidates = [_scaled(estimate, a) for a in scales]
    small, small_geom = bin_scan(projections, geom, cfg.binning)
    rim, truncation = fov_points(geom), "on" if stats["truncation"] else "off"
    entropy = sharpness_of_motions(small, small_geom, [None, *candidates], filter=cfg.filter, truncation=truncation)
    best = int(np.argmin(entropy[1:]))
    estimate, before, after = candidates[best], entropy[0], entropy[1 + best]
    spread = float(estimate.displacement_mm(rim).max())
    jerk: dict[str, Any] = {"used": False}
    if spread >= cfg.gate_mm and cfg.jerk_min_fit <= 1:  # a still scan's small estimate is never refined
        refined, info = refine_jerk(projections, geom, estimate, cfg, stats["truncation"])
        jerk.update(info)
        if refined is not None:
            sharpness = sharpness_of_motions(small, small_geom, [refined], filter=cfg.filter, truncation=truncation)[0]
            refined_spread = float(refined.displacement_mm(rim).max())
            jerk["entropy"] = round(sharpness, 6)
            if sharpness < after and refined_spread >= cfg.gate_mm:  # the sharper of the two goes to the gate
                estimate, after, spread, jerk["used"] = refined, sharpness, refined_spread, True
    gain = (before - after) / before
    moved = spread >= cfg.gate_mm and gain >= cfg.gate_gain
    relative, label = relative_to_pose(estimate, "mean" if index is None else index)
    largest = float(relative.displacement_mm(rim).max())
    seconds = time.perf_counter() - t0
    report: dict[str, Any] = {
        "moved": bool(moved),
        "pose": label,
        "gate": {
            "displacement_mm": round(spread, 4), "displacement_threshold_mm": cfg.gate_mm,
            "entropy_nominal": round(before, 6), "entropy_compensated": round(after, 6),
            "relative_gain": round(gain, 6), "gain_threshold": cfg.gate_gain, "scale": float(scales[best]),
            "criterion_nominal": stats["criterion_nominal"], "criterion_compensated": stats["criterion_compensated"],
            "criterion_relative_gain": round(stats["relative_gain"], 5),
        },
        "estimate": {"largest_displacement_mm": round(largest, 4), **_per_view(relative)}, "jerk": jerk,
        "truncation": stats["truncation"], "binning": cfg.binning, "view_step": cfg.view_step,
        "seconds": round(seconds, 3),
    }
    if moved:
        motion, geometry = relative, relative.apply(geom)
    else:
        motion, geometry = RigidMotion.none(geom.n_views, relative.pivot), geom
    report.update(_per_view(motion))
    log.info("motion correction: %s (largest displacement %.2f mm, entropy drop %.3f %%; thresholds %.2f mm, %.3f %%), "
             "pose %s, %.1f s", "moved" if moved else "still: nominal geometry kept", spread, 100 * gain, cfg.gate_mm,
             100 * cfg.gate_gain, label, seconds)
    return MotionCorrection(bool(moved), motion, geometry, label, report)
