"""FDK projection weights: cosine, angular (non-uniform angles), and redundancy (short scan, offset detector).

Redundancy: every line through the object may be measured more than once (twice in a full circular scan; once or
twice in a short scan or with a displaced detector). A weight ``W`` per measured ray with ``sum W = 1`` over all
measurements of the same line makes the backprojection of a circular scan a proper FBP. Here each ray gets a
smooth confidence ``c = c_scan(beta, alpha) * c_detector(alpha)`` that falls to zero at the ends of a short scan
(Parker's sin² tapers) and across the overlap of a displaced detector (Wang's weights, as RTK), and
``W = c / (c + c_conjugate)``. For a symmetric detector this is exactly Parker's weighting, for a full scan with a
displaced detector exactly Wang's, and the two compose: a short scan with a displaced detector works.

Fan angles ``alpha`` follow Parker/RTK: the conjugate of ray ``(beta, alpha)`` is ``(beta + pi + 2 alpha, -alpha)``
with ``beta`` the gantry angle measured from the start of the scan in the direction of rotation.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from cbct.geometry import ConeGeometry

log = logging.getLogger(__name__)

SHORT_SCAN_GAP = np.pi / 9  # a largest angular gap above 20 degrees makes a short scan (as RTK)
DISPLACED_FRACTION = 0.1  # |gamma_min + gamma_max| above this fraction of the fan width: displaced detector


@dataclasses.dataclass(frozen=True)
class ScanCoverage:
    """Angular coverage of a circular scan.

    Attributes:
        beta: (n_views,) gantry angle from the start of the scan, radians, increasing with rotation.
        arc: angular range from the first to the last view, radians.
        gaps: (n_views,) angular weight of each view (half the gaps to its neighbours), radians.
        short_scan: whether the largest gap exceeds 20 degrees.
    """

    beta: np.ndarray
    arc: float
    gaps: np.ndarray
    short_scan: bool


def scan_coverage(angles: np.ndarray) -> ScanCoverage:
    """Angular coverage and per-view angular weights of views at gantry ``angles`` (radians, any order)."""
    ang = np.asarray(angles, dtype=np.float64)
    n = ang.size
    if n == 1:
        return ScanCoverage(np.zeros(1), 0.0, np.array([2 * np.pi]), False)
    steps = np.diff(np.unwrap(ang))
    direction = 1.0 if np.sum(steps) >= 0 else -1.0
    wrapped = np.mod(direction * ang, 2 * np.pi)
    order = np.argsort(wrapped, kind="stable")
    sorted_ang = wrapped[order]
    gaps_next = np.diff(np.append(sorted_ang, sorted_ang[0] + 2 * np.pi))  # gap to the next view, circularly
    largest = int(np.argmax(gaps_next))
    short = bool(gaps_next[largest] > SHORT_SCAN_GAP)
    first = (largest + 1) % n  # the scan starts after its largest gap
    beta_sorted = np.mod(sorted_ang - sorted_ang[first], 2 * np.pi)
    gaps_prev = np.roll(gaps_next, 1)
    if short:
        # the largest gap is not covered: the end views get their inner gap twice
        gaps_next = gaps_next.copy()
        gaps_next[largest] = gaps_prev[largest]
        gaps_prev[first] = gaps_next[first]
    weights_sorted = 0.5 * (gaps_prev + gaps_next)
    beta = np.empty(n)
    weights = np.empty(n)
    beta[order] = beta_sorted
    weights[order] = weights_sorted
    return ScanCoverage(beta, float(beta_sorted.max()), weights, short)


def fan_angles(geom: ConeGeometry) -> np.ndarray:
    """(n_views, nu) fan angle ``alpha`` of each detector column centre, radians, Parker/RTK sign convention."""
    nv, nu = geom.detector_shape
    pp_u = geom.principal_points()[:, 1]
    du = geom.pixel_sizes()[:, 1]
    dsd = geom.source_detector_distances()
    u_mm = (np.arange(nu) - (nu - 1) / 2)[None, :] * du[:, None] - pp_u[:, None]
    # orient: alpha > 0 on the side the source moves away from (so the conjugate is at beta + pi + 2 alpha)
    coverage_dir = 1.0 if np.sum(np.diff(np.unwrap(geom.angles))) >= 0 else -1.0
    a = geom.angles
    tangent = coverage_dir * np.stack([-np.sin(a), np.cos(a), np.zeros_like(a)], axis=1)
    u_hat = geom.u_vectors / np.linalg.norm(geom.u_vectors, axis=1, keepdims=True)
    side = np.sign(np.einsum("ij,ij->i", u_hat, tangent))
    side[side == 0] = 1.0
    return -side[:, None] * np.arctan(u_mm / dsd[:, None])


def _sin2_ramp(x: np.ndarray) -> np.ndarray:
    """sin²(pi/2 * clip(x, 0, 1))."""
    return np.sin(0.5 * np.pi * np.clip(x, 0.0, 1.0)) ** 2


def parker_confidence(beta: np.ndarray, alpha: np.ndarray, delta: float) -> np.ndarray:
    """Parker's tapers at both ends of a short scan covering ``[0, pi + 2 delta]``; 0 outside it."""
    with np.errstate(divide="ignore", invalid="ignore"):
        start = np.where(delta - alpha > 0, _sin2_ramp(beta / (2 * (delta - alpha))), (beta > 0).astype(float))
        end = np.where(
            delta + alpha > 0,
            _sin2_ramp((np.pi + 2 * delta - beta) / (2 * (delta + alpha))),
            (beta < np.pi + 2 * delta).astype(float),
        )
    inside = (beta >= 0) & (beta <= np.pi + 2 * delta)
    return np.where(inside, start * end, 0.0)


def displaced_confidence(alpha: np.ndarray, alpha_min: float, alpha_max: float) -> np.ndarray:
    """Wang's weights across the overlap of a displaced detector covering fan angles ``[alpha_min, alpha_max]``."""
    overlap = min(-alpha_min, alpha_max)
    sign = 1.0 if alpha_max + alpha_min > 0 else -1.0  # the long side of the detector
    ramp = 0.5 * (1 + np.sin(0.5 * np.pi * np.clip(sign * alpha / overlap, -1.0, 1.0)))
    on_detector = (alpha >= alpha_min - 1e-12) & (alpha <= alpha_max + 1e-12)
    return np.where(on_detector, ramp, 0.0)


def is_displaced(alpha: np.ndarray) -> bool:
    """Whether the detector columns (fan angles of one view) are displaced enough to need Wang's weights."""
    lo, hi = float(alpha.min()), float(alpha.max())
    if lo >= 0 or hi <= 0:
        raise ValueError(
            "the detector does not cover the rotation axis in every view (fan angles "
            f"{np.degrees(lo):.2f} to {np.degrees(hi):.2f} deg): FDK needs the central ray on the detector"
        )
    return abs(lo + hi) > DISPLACED_FRACTION * (hi - lo)


def uses_offset_weights(geom: ConeGeometry, offset_detector: bool | None, alpha: np.ndarray | None = None) -> bool:
    """Resolve ``offset_detector``: ``None`` means "when the detector is displaced" (any view)."""
    if offset_detector is not None:
        return bool(offset_detector)
    alpha = fan_angles(geom) if alpha is None else alpha
    return any(is_displaced(a) for a in alpha)


def redundancy_weights(geom: ConeGeometry, *, short_scan: bool | None = None, offset_detector: bool | None = None) -> np.ndarray:
    """(n_views, nu) weights ``W`` with ``sum W = 1`` over the measurements of each line (see module docs).

    ``short_scan`` and ``offset_detector`` default to what the geometry shows (largest angular gap over 20
    degrees; detector displaced by more than 5 % of its fan); ``False`` disables, ``True`` forces.
    A full scan with a centred detector gives 0.5 everywhere.
    """
    coverage = scan_coverage(geom.angles)
    alpha = fan_angles(geom)
    short = coverage.short_scan if short_scan is None else bool(short_scan)
    displaced = uses_offset_weights(geom, offset_detector, alpha)
    beta = coverage.beta[:, None]
    delta = 0.5 * (coverage.arc - np.pi)
    if short:
        if delta <= 0:
            raise ValueError(f"a short scan needs more than 180 degrees of coverage, got {np.degrees(coverage.arc):.1f}")
        half_fan = float(np.min(np.abs(alpha[:, [0, -1]])))
        if delta < half_fan:
            log.warning(
                "short scan covers %.1f deg, less than 180 deg plus the fan (%.1f deg): Parker weights are approximate",
                np.degrees(coverage.arc), np.degrees(180 + 2 * half_fan),
            )
        log.info("short scan of %.1f deg: Parker weights (delta = %.2f deg)", np.degrees(coverage.arc), np.degrees(delta))
    if displaced:
        log.info("displaced detector: offset-detector weights")

    def confidence(b: np.ndarray, a: np.ndarray, view_alpha: np.ndarray) -> np.ndarray:
        c = parker_confidence(b, a, delta) if short else np.ones(np.broadcast_shapes(b.shape, a.shape))
        if displaced:
            c = c * displaced_confidence(a, float(view_alpha.min()), float(view_alpha.max()))
        return c

    own = np.empty_like(alpha)
    conjugate = np.zeros_like(alpha)
    for i in range(geom.n_views):
        a = alpha[i]
        own[i] = confidence(beta[i], a, a)
        # the conjugate of (beta, alpha) is (beta + pi + 2 alpha, -alpha); a full circle also meets itself again
        for turns in (-1, 0, 1):
            conj_beta = beta[i] + np.pi + 2 * a + 2 * np.pi * turns
            if short:
                conjugate[i] += confidence(conj_beta, -a, a)
            elif turns == 0:
                conjugate[i] += confidence(conj_beta, -a, a)
    total = own + conjugate
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(total > 1e-12, own / total, np.where(own > 0, 1.0, 0.0))
    return weights


def cosine_weights(geom: ConeGeometry, views: slice | np.ndarray, xp=np, dtype=np.float64):
    """(len(views), nv, nu) FDK cosine weights ``DSD / sqrt(DSD² + u² + v²)``, with ``(u, v)`` measured from the
    principal point (so detector offsets are respected). ``xp``: array module of the result; ``dtype``: its dtype
    (only the small per-view offsets are computed on the host)."""
    nv, nu = geom.detector_shape
    sub = geom[views]
    dsd = sub.source_detector_distances()
    pp = sub.principal_points()
    pitch = sub.pixel_sizes()
    v_mm = (np.arange(nv) - (nv - 1) / 2)[None, :] * pitch[:, 0:1] - pp[:, 0:1]
    u_mm = (np.arange(nu) - (nu - 1) / 2)[None, :] * pitch[:, 1:2] - pp[:, 1:2]
    dsd_x = xp.asarray(dsd, dtype=dtype)[:, None, None]
    r2 = xp.asarray(v_mm, dtype=dtype)[:, :, None] ** 2 + xp.asarray(u_mm, dtype=dtype)[:, None, :] ** 2
    return dsd_x / xp.sqrt(dsd_x**2 + r2)
