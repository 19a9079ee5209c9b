"""Refinement of a motion estimate that looks like a jerk: one change point, two rigid poses.

The groupwise registration (:mod:`cbct.motion_estimation`) smears a sudden jerk over its group width and
underestimates it (its reference volume is a blur of both poses, and its priors pull towards the mean pose). When the
estimate is step-like enough, :func:`refine_jerk` replaces it with an exact two-pose motion:

1. the change point ``k`` and how step-like the estimate is (:func:`step_fit`: the share of the estimate's variance
   that one step explains);
2. the pose of the views after ``k`` relative to those before (binned ``2 × jerk_binning``, then ``jerk_binning``),
   by two registrations that do not see their own views: the views after ``k`` against the FDK image of the views
   before ``k`` alone, and the views before ``k`` against the image of the views after ``k`` (same high-pass,
   field-of-view-restricted residual and Levenberg–Marquardt as the estimator, no priors). The two relative poses
   are averaged (on the training heads more accurate than either alone). A segment shorter than a third of the
   scan gives too poor an image and serves only as the moving side;
3. the change point again, view by view (all views, also those a ``view_step`` skips): each view near ``k`` takes
   the pose under which it matches the image of the whole scan (reconstructed with the refined motion) better; if
   ``k`` moved, step 2 is repeated once.

The result is a motion about the mean pose (the convention of :func:`cbct.motion_estimation.estimate_motion`).
:func:`cbct.motion_correction.correct_motion` runs it only on estimates large enough for its gate and uses it only
where the gradient entropy says its image is sharper than the (scaled) groupwise estimate's. Measurements:
``docs/motion_correction.md``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from cbct.backend import array_module, to_host
from cbct.fdk import fdk
from cbct.geometry import ConeGeometry
from cbct.motion_estimation import (
    MotionEstimationConfig, _highpass, _motion, _radius, _register_groups, bin_scan, detector_weights,
)
from cbct.operators import project
from cbct.simulation.motion import RigidMotion, rotation_matrices, rotation_vectors

log = logging.getLogger(__name__)

TOLERANCE_MM = 0.01  # a registration stops once a step moves no parameter by more (mm; 0.013° at 45 mm)

__all__ = ["about_mean_pose", "motion_parameters", "refine_jerk", "step_fit", "step_motion"]


def motion_parameters(motion: RigidMotion, radius: float, pivot: np.ndarray) -> np.ndarray:
    """(n_views, 6) poses ``(rotation vector × radius, translation about pivot)`` in mm of a motion (any pivot)."""
    trans = np.einsum("nij,j->ni", motion.rotations, pivot - motion.pivot) + motion.pivot + motion.translations - pivot
    return np.concatenate([motion.rotation_vectors() * radius, trans], axis=1)


def step_fit(params: np.ndarray, min_segment: int) -> tuple[int, float]:
    """The change point of the best one-step (piecewise-constant) fit to (n_views, 6) poses and its coefficient of
    determination (1: an exact step; 0.75: a linear drift).

    Args:
        params: per-view poses, mm (:func:`motion_parameters`).
        min_segment: fewest views on either side of the change point.

    Returns:
        ``(k, r2)``: the first view after the step and the share of the poses' variance the step explains.
    """
    n = len(params)
    total = float(((params - params.mean(axis=0)) ** 2).sum())
    if total <= 0 or n < 2 * min_segment:
        return n // 2, 0.0
    csum, csq = np.cumsum(params, axis=0), np.cumsum(params * params, axis=0)
    ks = np.arange(min_segment, n - min_segment + 1)
    before = (csq[ks - 1] - csum[ks - 1] ** 2 / ks[:, None]).sum(axis=1)
    after_sum, after_sq = csum[-1] - csum[ks - 1], csq[-1] - csq[ks - 1]
    after = (after_sq - after_sum**2 / (n - ks)[:, None]).sum(axis=1)
    best = int(np.argmin(before + after))
    return int(ks[best]), float(1.0 - (before[best] + after[best]) / total)


def step_motion(after: np.ndarray, k: int, n_views: int, radius: float, pivot: np.ndarray) -> RigidMotion:
    """The motion that is the identity before view ``k`` and the pose ``after`` (6, mm) from view ``k`` on."""
    params = np.zeros((n_views, 6))
    params[k:] = after
    return _motion(params, radius, pivot)


def about_mean_pose(motion: RigidMotion, radius: float) -> RigidMotion:
    """The motion re-expressed relative to its mean pose ``M`` (mean rotation vector and translation about the
    pivot): ``T_i ∘ M⁻¹``. Relative to any view it is unchanged (``relative_to_pose`` gives the same motion)."""
    rot_m = rotation_matrices(motion.rotation_vectors().mean(axis=0)[None])[0]
    rot = motion.rotations @ rot_m.T
    trans = motion.translations - rot @ motion.translations.mean(axis=0)
    return RigidMotion(rot, trans, motion.pivot)


def _relative(before: np.ndarray, after: np.ndarray, radius: float) -> np.ndarray:
    """The pose (6, mm) ``T_after ∘ T_before⁻¹`` of two poses (6, mm) about the same pivot."""
    rb, ra = rotation_matrices(before[None, :3] / radius)[0], rotation_matrices(after[None, :3] / radius)[0]
    rot = ra @ rb.T
    return np.concatenate([rotation_vectors(rot[None])[0] * radius, after[3:] - rot @ before[3:]])


class _Scan:
    """The binned scan (every ``view_step``-th view) the refinement works on, with its high-pass target."""

    def __init__(self, projections, geom: ConeGeometry, cfg: MotionEstimationConfig, truncation: bool, binning: int,
                 iterations: int):
        kept = np.arange(0, geom.n_views, cfg.view_step)
        self.full, self.full_geom, self.binning = projections, geom, binning
        small, self.geom = bin_scan(projections[kept].astype(np.float32, copy=False), geom[kept], binning)
        xp = array_module(small)
        self.projections = xp.ascontiguousarray(small)
        self.kept, self.n_full = kept, geom.n_views
        self.weights = tuple(xp.asarray(w) for w in detector_weights(self.geom))
        self.target = _highpass(self.projections, self.weights)
        self.truncation, self.filter = bool(truncation), cfg.filter
        self.radius, self.pivot = _radius(geom), np.asarray(geom.volume.offset[::-1], np.float64)
        self.cfg = dataclasses.replace(cfg, prior=0.0, smoothness=0.0, iterations=iterations, max_step_mm=1.0)

    def image(self, views: slice, motion: RigidMotion | None = None):
        geom = self.geom[views] if motion is None else motion[views].apply(self.geom[views])
        return fdk(self.projections[views], geom, filter=self.filter, truncation=self.truncation, short_scan=False)

    def register(self, volume, views: slice, start: np.ndarray) -> np.ndarray:
        """The pose (6, mm) under which the views ``views`` best match ``volume``, from ``start``."""
        n = len(range(*views.indices(self.geom.n_views)))
        return _register_groups(volume, self.geom[views], self.target[views], self.weights, np.array([0, n]),
                                start[None], self.radius, self.pivot, self.cfg, tolerance_mm=TOLERANCE_MM)[0]

    def view_costs(self, volume, views: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """(len(views),) sum of squares of the high-pass residual against ``volume`` under ``pose`` of each of the
        scan's views ``views`` (indices into all its views, kept or not), binned as the kept ones."""
        measured, geom = bin_scan(self.full[views].astype(np.float32, copy=False), self.full_geom[views], self.binning)
        moved = _motion(np.broadcast_to(pose, (len(views), 6)), self.radius, self.pivot).apply(geom)
        r = _highpass(project(volume, moved), self.weights) - _highpass(measured, self.weights)
        return to_host((r * r).sum(axis=1)).astype(np.float64)


def _two_segment_pose(scan: _Scan, k: int, start: np.ndarray) -> np.ndarray:
    """Pose (6, mm) of the views from ``k`` on relative to those before (kept-view index ``k``), from ``start``:
    the mean of the registrations of each segment (at least a third of the scan) against the other's image."""
    n = scan.geom.n_views
    before, after = slice(0, k), slice(k, n)
    estimates = []
    if k >= n / 3:  # the image of the views before k is good enough to register the views after it
        estimates.append(scan.register(scan.image(before), after, start))
    if n - k >= n / 3:
        estimates.append(_relative(scan.register(scan.image(after), before, _relative(start, np.zeros(6), scan.radius)),
                                   np.zeros(6), scan.radius))
    return np.mean(estimates, axis=0)


def _change_point(scan: _Scan, k: int, pose: np.ndarray, window: int) -> int:
    """The change point (index into all the scan's views) within ``window`` views of the kept view ``k`` that
    assigns each view the better of the two poses against the image of the kept views with the step at ``k``."""
    n, guess = scan.geom.n_views, int(scan.kept[k])
    volume = scan.image(slice(0, n), step_motion(pose, k, n, scan.radius, scan.pivot))
    views = np.arange(max(1, guess - window), min(scan.n_full - 1, guess + window) + 1)
    still, moved = scan.view_costs(volume, views, np.zeros(6)), scan.view_costs(volume, views, pose)
    totals = [still[:j].sum() + moved[j:].sum() for j in range(len(views) + 1)]
    j = int(np.argmin(totals))
    return int(views[j]) if j < len(views) else int(views[-1]) + 1


def refine_jerk(projections, geom: ConeGeometry, estimate: RigidMotion, cfg: MotionEstimationConfig,
                truncation: bool) -> tuple[RigidMotion | None, dict[str, Any]]:
    """A two-pose (jerk) motion refined from ``estimate``, or ``None`` when the estimate is not step-like.

    Args:
        projections: (n_views, nv, nu) line integrals (NumPy or CuPy).
        geom: the nominal geometry.
        estimate: the groupwise estimate (any reference pose).
        cfg: settings resolved by :meth:`MotionEstimationConfig.for_scan` (``jerk_min_fit``, ``jerk_binning``,
            ``jerk_iterations``, ``view_step``, ``filter``).
        truncation: whether the scan's FDK images need truncation correction.

    Returns:
        ``(motion, info)``: the refined motion about its mean pose (``None`` if not step-like) and a JSON-able record
        (``fit``: the step's coefficient of determination, ``change_view``, ``pose_after``: rotation in degrees and
        translation in mm about the volume centre, relative to the views before).
    """
    radius, pivot = _radius(geom), np.asarray(geom.volume.offset[::-1], np.float64)
    params = motion_parameters(estimate, radius, pivot)
    k_full, fit = step_fit(params, max(2, geom.n_views // 16))
    info: dict[str, Any] = {"fit": round(fit, 4)}
    if fit < cfg.jerk_min_fit:
        return None, info
    start = params[k_full:].mean(axis=0) - params[:k_full].mean(axis=0)
    binning = int(cfg.jerk_binning)
    coarse = _Scan(projections, geom, cfg, truncation, 2 * binning, cfg.jerk_iterations)
    scan = _Scan(projections, geom, cfg, truncation, binning, cfg.jerk_iterations)
    k = int(np.searchsorted(scan.kept, k_full))
    pose = _two_segment_pose(scan, k, _two_segment_pose(coarse, k, start))  # coarse to fine
    change = _change_point(scan, k, pose, window=max(2, geom.n_views // 20))
    moved_k = int(np.searchsorted(scan.kept, change))
    if moved_k != k and 0 < moved_k < scan.geom.n_views:
        pose = _two_segment_pose(scan, moved_k, pose)
    motion = step_motion(pose, change, geom.n_views, radius, pivot)
    after = {"rotation_deg": np.round(np.degrees(pose[:3] / radius), 4).tolist(),
             "translation_mm": np.round(pose[3:], 4).tolist()}
    info.update({"change_view": change, "pose_after": after})
    log.info("jerk refinement: step fit %.3f, change at view %d, pose after: rotation %s deg, translation %s mm", fit,
             change, info["pose_after"]["rotation_deg"], info["pose_after"]["translation_mm"])
    return about_mean_pose(motion, radius), info
