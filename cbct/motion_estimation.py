"""Rigid patient-motion estimation from the projections of a circular cone-beam scan (2D/3D registration).

In each round the scan is cut into contiguous groups of views. Each group gets one rigid pose (a rotation vector
about the volume centre and a translation), found by Levenberg–Marquardt on the projection residual
``P(f, M(θ_g) · G_g) − p_g``: the measured views of the group against the reprojection of the current volume
estimate ``f`` through the moved geometry. ``f`` starts as the FDK image of the nominal geometry and is rebuilt from
the motion-compensated geometry after each round. The per-view motion interpolates the group poses linearly over
the group centres, and its mean pose over the scan is removed: only motion relative to the mean pose is
observable (a rigid transform of the whole volume is not), and the mean pose is the reference the SBP-MAC data uses.

Everything runs on a binned copy (detector and volume, ``binning`` × coarser; optionally every ``view_step``-th
view) for speed; the estimated motion applies to the full-resolution geometry unchanged.

Truncated scans (the rows do not fall to air at the detector's edges, :mod:`cbct.fdk.truncation`): the volume of
the field of view lacks the anatomy outside it, so its reprojection cannot match the measured views even without
motion. There the intermediate FDKs are truncation-corrected and the residual is high-pass: differences between
neighbouring detector columns and rows (which drop the smooth contribution of what lies outside), only on the rays
that cross the field of view and stay inside its z range (:func:`detector_weights`), with fewer, more regularised
poses (``truncated_groups``, ``truncated_prior``). The choice and its measurements: ``docs/motion_correction.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np

from cbct._checks import check_fields
from cbct.backend import array_module, is_cupy
from cbct.fdk import fdk
from cbct.fdk.truncation import check_truncation_mode, detect_truncation
from cbct.geometry import ConeGeometry, VolumeGrid
from cbct.operators import project, segment_starts
from cbct.simulation.motion import RigidMotion, rotation_matrices

log = logging.getLogger(__name__)

__all__ = ["MotionEstimationConfig", "bin_scan", "detector_weights", "estimate_motion", "estimate_rigid_motion",
           "interpolate_poses"]


@dataclasses.dataclass(frozen=True)
class MotionEstimationConfig:
    """Settings of :func:`estimate_rigid_motion`.

    Attributes:
        groups: one reconstruct-and-register round per entry: the number of contiguous groups of views, one rigid
            pose each, in that round (coarse first: long groups see more of the object, short ones follow a jerk).
        iterations: Levenberg–Marquardt iterations per group and round.
        binning: detector pixels and voxels merged per axis for the estimation; ``"auto"``: 2, or more so that the
            binned grid is at most 64 voxels across in x and y (:meth:`for_scan`).
        filter: FDK ramp window of the intermediate reconstructions.
        step_mm: finite-difference step of the Jacobian, mm (rotations: mm at the volume's radius).
        damping: initial Levenberg–Marquardt damping, relative to the diagonal of ``JᵀJ``.
        max_step_mm: largest pose update per iteration, mm (rotations: mm at the volume's radius).
        prior: weight of the pull of every pose towards the mean pose (relative to the mean of ``diag(JᵀJ)``).
        smoothness: weight of the pull of each group's pose towards its neighbours' (same scale).
        jump_mm: above this change of pose between neighbouring groups (mm, all six parameters together) the
            smoothness cost grows linearly instead of quadratically (Huber), so that a sudden jerk is not smeared;
            0: quadratic everywhere.
        truncation: truncation correction of the intermediate FDKs (``"auto"``, ``"on"``/``True``, ``"off"``/``False``;
            :mod:`cbct.fdk.truncation`).
        highpass: the criterion: ``True`` compares row and column differences of the views, only on rays through
            the field of view (:func:`detector_weights`), which a truncated scan can match; ``False`` the views
            themselves; ``"auto"``: high-pass when the scan is truncated.
        truncated_groups, truncated_prior: ``groups`` and ``prior`` used instead with the high-pass criterion
            (fewer, more regularised poses: the residual of a truncated scan is not zero even without motion).
        view_step: estimate from every ``view_step``-th view (poses interpolated to the others), for speed;
            ``"auto"``: one view in ``n_views // 120`` (at least 1).
        gate_mm, gate_gain: thresholds of the gate of :func:`cbct.motion_correction.correct_motion`: largest
            displacement in the field of view (mm) and relative drop of the gradient entropy of the image
            (:mod:`cbct.motion_sharpness`) from the nominal to the compensated geometry.
        max_scale: the estimate's amplitude is chosen by the same sharpness among the multiples 0, 0.25, …,
            ``max_scale`` of the estimate (the registration underestimates a jerk); 0: the estimate as it is.
        jerk_min_fit: an estimate whose best one-step fit explains at least this share of its variance is refined
            as a jerk (:mod:`cbct.motion_jerk`; used where sharper); above 1: never.
        jerk_binning: binning of the jerk refinement; ``"auto"``: 1, or more so that the binned grid is at most 64
            voxels across in x and y.
        jerk_iterations: Levenberg–Marquardt iterations of each of its registrations.
    """

    groups: tuple[int, ...] = (16, 16, 32, 32)
    iterations: int = 4
    binning: int | str = "auto"
    filter: str = "hann"
    step_mm: float = 0.1
    damping: float = 1e-2
    max_step_mm: float = 2.0
    prior: float = 0.05
    smoothness: float = 1.0
    jump_mm: float = 0.2
    truncation: str | bool = "auto"
    highpass: str | bool = "auto"
    truncated_groups: tuple[int, ...] = (8, 8, 16)
    truncated_prior: float = 0.1
    view_step: int | str = "auto"
    gate_mm: float = 0.5
    gate_gain: float = 0.001
    max_scale: float = 3.0
    jerk_min_fit: float = 0.5
    jerk_binning: int | str = "auto"
    jerk_iterations: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(int(g) for g in self.groups))
        object.__setattr__(self, "truncated_groups", tuple(int(g) for g in self.truncated_groups))
        for name in ("binning", "view_step", "jerk_binning"):
            value = getattr(self, name)
            if value != "auto" and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"{name} must be a positive integer or 'auto', got {value!r}")
        if not self.groups or min(self.groups) < 1 or self.iterations < 1:
            raise ValueError(
                f"groups must be positive integers (at least one round) and iterations >= 1; got "
                f"{self.groups}, {self.iterations}"
            )
        if self.step_mm <= 0 or self.damping <= 0 or self.max_step_mm <= 0 or min(self.prior, self.smoothness, self.jump_mm) < 0:
            raise ValueError("step_mm, damping and max_step_mm must be > 0; prior, smoothness and jump_mm >= 0")
        check_truncation_mode(self.truncation)
        if not self.truncated_groups or min(self.truncated_groups) < 1 or self.truncated_prior < 0:
            raise ValueError("truncated_groups must be positive integers and truncated_prior >= 0")
        if self.highpass not in ("auto", True, False):
            raise ValueError(f"highpass must be 'auto', True or False, got {self.highpass!r}")
        if self.jerk_min_fit < 0 or self.jerk_iterations < 1:
            raise ValueError(f"jerk_min_fit must be >= 0 and jerk_iterations >= 1, got {self.jerk_min_fit}, "
                             f"{self.jerk_iterations}")
        if self.gate_mm < 0 or self.gate_gain < 0 or self.max_scale < 0:
            raise ValueError(f"gate_mm, gate_gain and max_scale must be >= 0, got {self.gate_mm}, {self.gate_gain}, "
                             f"{self.max_scale}")

    def for_scan(self, geom: ConeGeometry) -> MotionEstimationConfig:
        """These settings with ``"auto"`` binnings and view step resolved for ``geom``."""
        fine = -(-max(geom.volume.shape[1:]) // 64)
        binning = max(2, fine) if self.binning == "auto" else int(self.binning)
        jerk_binning = max(1, fine) if self.jerk_binning == "auto" else int(self.jerk_binning)
        step = max(1, geom.n_views // 120) if self.view_step == "auto" else int(self.view_step)
        return dataclasses.replace(self, binning=binning, view_step=step, jerk_binning=jerk_binning)

    def views_needed(self) -> int:
        """The fewest views a scan needs for these settings (resolved by :meth:`for_scan`): the most groups of any
        round times the view step."""
        return max(self.groups + self.truncated_groups) * int(self.view_step)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "groups": list(self.groups), "truncated_groups": list(self.truncated_groups)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MotionEstimationConfig:
        return cls(**check_fields(cls, d, "motion estimation keys"))


def bin_scan(projections: np.ndarray, geom: ConeGeometry, factor: int) -> tuple[np.ndarray, ConeGeometry]:
    """Projections averaged over ``factor`` × ``factor`` detector pixels and a geometry with ``factor`` × larger
    pixels and voxels (rows/columns that do not fill a bin are dropped, the detector centre follows)."""
    if factor == 1:
        return projections, geom
    n, nv, nu = projections.shape
    mv, mu = nv // factor, nu // factor
    if mv < 2 or mu < 2:
        raise ValueError(f"binning {factor} leaves a detector of {mv} x {mu} pixels")
    cropped = projections[:, : mv * factor, : mu * factor]
    binned = cropped.reshape(n, mv, factor, mu, factor).mean(axis=(2, 4), dtype=np.float64).astype(projections.dtype)
    shifted = geom.with_detector_shape((mv * factor, mu * factor), shift=((mv * factor - nv) / 2, (mu * factor - nu) / 2))
    vec = shifted.vectors.copy()
    vec[:, 6:12] *= factor
    grid = geom.volume
    coarse = VolumeGrid(
        tuple(max(2, s // factor) for s in grid.shape), tuple(v * factor for v in grid.voxel_size), grid.offset
    )
    return binned, dataclasses.replace(shifted, vectors=vec, detector_shape=(mv, mu), volume=coarse)


def interpolate_poses(params: np.ndarray, centres: np.ndarray, n_views: int) -> np.ndarray:
    """(n_views, 6) per-view poses linearly interpolated from (G, 6) group poses at view positions ``centres``
    (constant beyond the first and last centre)."""
    views = np.arange(n_views, dtype=np.float64)
    return np.stack([np.interp(views, centres, params[:, j]) for j in range(params.shape[1])], axis=1)


def _motion(params: np.ndarray, radius: float, pivot: np.ndarray) -> RigidMotion:
    """Poses ``(rotation vector × radius, translation)`` in mm as a :class:`RigidMotion` about ``pivot``."""
    return RigidMotion(rotation_matrices(params[:, :3] / radius), params[:, 3:], pivot)


def _highpass(views, weights):
    """(n, M) differences of (n, nv, nu) views between neighbouring columns and between neighbouring rows, times
    the detector weights ``(wu, wv)`` of shapes (nv, nu − 1) and (nv − 1, nu) (:func:`detector_weights`)."""
    xp = array_module(views)
    n = views.shape[0]
    if weights is None:
        return views.reshape(n, -1)
    du = (views[..., 1:] - views[..., :-1]) * weights[0]
    dv = (views[..., 1:, :] - views[..., :-1, :]) * weights[1]
    return xp.concatenate([du.reshape(n, -1), dv.reshape(n, -1)], axis=1)


def detector_weights(geom: ConeGeometry, margin: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Weights (0 or 1) of the high-pass residual, (nv, nu − 1) between columns and (nv − 1, nu) between rows: the
    columns whose rays cross the grid's inscribed cylinder within ``margin`` of its radius, and the rows whose rays
    stay inside the grid's z range throughout that cylinder. Where every ray leaves the grid the row or column is
    kept (a small grid is still usable)."""
    nv, nu = geom.detector_shape
    dso = float(np.median(geom.source_origin_distances()))
    dsd = float(np.median(geom.source_detector_distances()))
    dv, du = np.median(geom.pixel_sizes(), axis=0)
    pv, pu = np.median(geom.principal_points(), axis=0)
    radius = min(geom.volume.size[1:]) / 2
    half_z = geom.volume.size[0] / 2

    def keep(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        cols = np.abs(u * du - pu) * dso / dsd <= margin * radius  # distance of the ray from the axis
        rows = np.abs(v * dv - pv) / dsd * (dso + radius) <= half_z  # height of the ray at the far side
        cols = cols if cols.sum() >= 2 else np.ones_like(cols)
        rows = rows if rows.sum() >= 2 else np.ones_like(rows)
        return (rows[:, None] & cols[None, :]).astype(np.float32)

    u, v = np.arange(nu) - (nu - 1) / 2, np.arange(nv) - (nv - 1) / 2
    return keep(u[:-1] + 0.5, v), keep(u, v[:-1] + 0.5)


def _residual(volume, geom: ConeGeometry, target, weights, params: np.ndarray, radius: float, pivot: np.ndarray):
    """Flat float64 high-pass residual of one group's views, on the device of ``volume``."""
    moved = _motion(np.broadcast_to(params, (geom.n_views, 6)), radius, pivot).apply(geom)
    return (_highpass(project(volume, moved), weights) - target).ravel().astype(np.float64)


def _normal_equations(jac, r) -> tuple[np.ndarray, np.ndarray]:
    """``(JᵀJ, Jᵀr)`` as host float64 arrays (6 × 6 and 6)."""
    a, g = jac.T @ jac, jac.T @ r
    if not isinstance(a, np.ndarray):  # CuPy: only these 42 numbers leave the device
        a, g = a.get(), g.get()
    return a, g


def _register_groups(
    volume: np.ndarray, geom: ConeGeometry, target: np.ndarray, weights, starts: np.ndarray, theta: np.ndarray,
    radius: float, pivot: np.ndarray, cfg: MotionEstimationConfig, tolerance_mm: float = 0.0,
) -> np.ndarray:
    """Joint Levenberg–Marquardt for the (G, 6) group poses (mm units), from ``theta``; stops early once an accepted
    step changes no pose parameter by more than ``tolerance_mm`` (0: runs all ``cfg.iterations``).

    The data term is separable (a group's views depend on its pose only); the priors
    ``mean(diag(JᵀJ)) · (prior · |θ|² + smoothness · Σ_g |θ_g − θ_{g−1}|²)`` couple neighbouring groups, which fixes
    the directions a short arc barely sees (translation along the beam, rotations that mimic a detector shift).
    """
    n_groups = len(theta)
    xp = array_module(target)
    views = [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]
    geoms = [geom[v] for v in views]
    diff = np.diff(np.eye(n_groups), axis=0)

    def residuals(t: np.ndarray) -> list[np.ndarray]:
        return [_residual(volume, geoms[g], target[views[g]], weights, t[g], radius, pivot) for g in range(n_groups)]

    def penalty(t: np.ndarray) -> float:
        jumps = np.linalg.norm(diff @ t, axis=1)
        d = cfg.jump_mm
        robust = np.where(jumps <= d, jumps**2, 2 * d * jumps - d * d) if d > 0 else jumps**2
        return cfg.prior * float(np.sum(t * t)) + cfg.smoothness * float(robust.sum())

    def coupling(t: np.ndarray) -> np.ndarray:
        """Hessian of the penalty, reweighted (IRLS) so that jumps beyond ``jump_mm`` cost linearly."""
        jumps = np.linalg.norm(diff @ t, axis=1)
        w = np.minimum(1.0, cfg.jump_mm / np.maximum(jumps, 1e-12)) if cfg.jump_mm > 0 else np.ones_like(jumps)
        return np.kron(cfg.smoothness * diff.T @ (w[:, None] * diff) + cfg.prior * np.eye(n_groups), np.eye(6))

    def total(rs: list[np.ndarray], t: np.ndarray) -> float:
        return sum(float(r @ r) for r in rs) + scale * penalty(t)

    theta = theta.astype(np.float64).copy()
    rs = residuals(theta)
    scale = None
    mu = cfg.damping
    for _ in range(cfg.iterations):
        a = np.zeros((6 * n_groups, 6 * n_groups))
        g = np.zeros(6 * n_groups)
        for k in range(n_groups):
            jac = xp.empty((rs[k].size, 6))
            for j in range(6):
                probe = theta[k].copy()
                probe[j] += cfg.step_mm
                jac[:, j] = (_residual(volume, geoms[k], target[views[k]], weights, probe, radius, pivot) - rs[k]) / cfg.step_mm
            a[6 * k:6 * k + 6, 6 * k:6 * k + 6], g[6 * k:6 * k + 6] = _normal_equations(jac, rs[k])
        if scale is None:  # fixed for the call, so that the cost does not change between iterations
            scale = float(np.mean(np.diag(a)))
        cost = total(rs, theta)
        c = coupling(theta)
        a += scale * c
        g += scale * c @ theta.ravel()
        diag = np.diag(a).copy() + 1e-9 * float(np.trace(a))
        for _attempt in range(4):
            delta = -np.linalg.solve(a + mu * np.diag(diag), g).reshape(n_groups, 6)
            largest = float(np.abs(delta).max())
            if largest > cfg.max_step_mm:
                delta *= cfg.max_step_mm / largest
            rs_new = residuals(theta + delta)
            if total(rs_new, theta + delta) < cost:
                theta, rs = theta + delta, rs_new
                mu = max(mu / 3, 1e-6)
                break
            mu *= 10
        else:
            break
        if float(np.abs(delta).max()) < tolerance_mm:
            break
    return theta


def estimate_rigid_motion(
    projections: np.ndarray, geom: ConeGeometry, config: MotionEstimationConfig | None = None
) -> RigidMotion:
    """Per-view rigid motion of the object during the scan, relative to its mean pose (:func:`estimate_motion`
    without its statistics)."""
    return estimate_motion(projections, geom, config)[0]


def _radius(geom: ConeGeometry) -> float:
    """Radius (mm) at which rotations are measured in mm: half the grid's smaller in-plane side."""
    return float(min(geom.volume.size[1:]) / 2)


def _criterion(volume, geom: ConeGeometry, target, weights) -> float:
    """Sum of squares of the high-pass residual of all views."""
    r = _highpass(project(volume, geom), weights) - target
    return float((r * r).sum())


def estimate_motion(
    projections: np.ndarray, geom: ConeGeometry, config: MotionEstimationConfig | None = None
) -> tuple[RigidMotion, dict[str, Any]]:
    """Per-view rigid motion of the object during the scan, relative to its mean pose, and the criterion.

    Args:
        projections: (n_views, nv, nu) float32 line integrals, views in acquisition order. NumPy runs on the CPU;
            CuPy keeps the projections, the volume and the Jacobians on the GPU (only the 6 × 6 normal equations
            of each group come to the host).
        geom: the nominal (motion-free) geometry of the scan; its grid is the field of view.
        config: estimation settings (default :class:`MotionEstimationConfig`).

    Returns:
        ``(motion, stats)``: a :class:`RigidMotion` about the volume centre (``motion.apply(geom)`` is the
        motion-compensated geometry) and a dict with the criterion (sum of squares of the high-pass residual,
        binned) of the nominal reconstruction in the nominal geometry (``criterion_nominal``) and of the final
        reconstruction in the compensated geometry (``criterion_compensated``), ``relative_gain``
        (``1 − compensated / nominal``), ``truncation`` (whether the intermediate FDKs corrected it).
    """
    cfg = (config or MotionEstimationConfig()).for_scan(geom)
    if not is_cupy(projections):
        projections = np.asarray(projections)
    if projections.ndim != 3 or projections.shape != geom.projection_shape:
        raise ValueError(f"projections must have shape {geom.projection_shape} (the geometry's), got {projections.shape}")
    if cfg.views_needed() > geom.n_views:
        raise ValueError(f"groups={cfg.groups} asks for more groups than the {geom.n_views} views (view_step {cfg.view_step})")
    if cfg.view_step > 1:
        kept = np.arange(0, geom.n_views, cfg.view_step)
        sub, stats = estimate_motion(projections[kept], geom[kept], dataclasses.replace(cfg, view_step=1))
        params = np.concatenate([sub.rotation_vectors() * _radius(geom), sub.translations], axis=1)
        per_view = interpolate_poses(params, kept.astype(np.float64), geom.n_views)
        return _motion(per_view - per_view.mean(axis=0), _radius(geom), sub.pivot), stats
    t0 = time.perf_counter()
    small, small_geom = bin_scan(projections.astype(np.float32, copy=False), geom, cfg.binning)
    xp = array_module(small)
    small = xp.ascontiguousarray(small)
    truncation = check_truncation_mode(cfg.truncation)
    if truncation == "auto":  # on the full detector: a binned edge column also holds pixels further in
        truncation = detect_truncation(projections)
    weights = tuple(xp.asarray(w) for w in detector_weights(small_geom))
    if not (truncation if cfg.highpass == "auto" else cfg.highpass):
        weights = None  # consistent data: the plain residual over the whole detector
    elif truncation:  # inconsistent data: fewer, more regularised poses
        cfg = dataclasses.replace(cfg, groups=cfg.truncated_groups, prior=cfg.truncated_prior)
    target = _highpass(small, weights)
    pivot = np.asarray(geom.volume.offset[::-1], np.float64)  # volume centre, world (x, y, z)
    radius = _radius(geom)
    per_view = np.zeros((geom.n_views, 6))

    def reconstruct(g: ConeGeometry):
        return fdk(small, g, filter=cfg.filter, truncation=truncation)

    volume = reconstruct(small_geom)
    nominal = _criterion(volume, small_geom, target, weights)
    for rnd, n_groups in enumerate(cfg.groups):
        starts = segment_starts(geom.n_views, n_groups)
        centres = (starts[:-1] + starts[1:] - 1) / 2.0
        groups = np.stack([per_view[int(a):int(b)].mean(axis=0) for a, b in zip(starts[:-1], starts[1:])])
        groups = _register_groups(volume, small_geom, target, weights, starts, groups, radius, pivot, cfg)
        per_view = interpolate_poses(groups, centres, geom.n_views)
        per_view -= per_view.mean(axis=0)  # gauge: the mean pose is the reference
        volume = reconstruct(_motion(per_view, radius, pivot).apply(small_geom))
        log.debug("motion estimation round %d (%d groups): largest pose %.3f mm", rnd + 1, n_groups, float(np.abs(groups).max()))
    motion = _motion(per_view, radius, pivot)
    compensated = _criterion(volume, motion.apply(small_geom), target, weights)
    stats = {"criterion_nominal": nominal, "criterion_compensated": compensated,
             "relative_gain": 1.0 - compensated / nominal if nominal > 0 else 0.0, "truncation": bool(truncation)}
    log.info("rigid motion estimated in %.1f s (groups per round %s; criterion %.4g -> %.4g)",
             time.perf_counter() - t0, cfg.groups, nominal, compensated)
    return motion, stats
